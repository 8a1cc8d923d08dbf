"""One module per `vcam` command, each with ``SUMMARY``, ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args)``; :mod:`vcam.commands.options` holds the options
several commands share. These modules import only the standard library at the top."""

# In the order `vcam --help` lists them.
COMMANDS = ("run", "preprocess", "train", "enroll", "avatars", "eval", "compile", "call",
            "bench")
