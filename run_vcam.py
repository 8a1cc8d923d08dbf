"""`python run_vcam.py ARGS` is `vcam ARGS`; with no arguments it is `vcam run`."""

import sys

from vcam.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["run"]))
