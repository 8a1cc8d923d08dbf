"""`python run_vcam.py ARGS` is `vcam ARGS`; with no command (no arguments, or options only)
it is `vcam run`."""

import sys

from vcam.cli import main, with_default_command

if __name__ == "__main__":
    sys.exit(main(with_default_command(sys.argv[1:])))
