"""Errors that reach the user as one line and exit code 2."""


class UserError(Exception):
    """A problem the user can fix; the CLI prints it on one line and exits with code 2."""
