"""The error type the CLI turns into a one-line message and exit code 2."""


class CLIError(Exception):
    """A problem with the user's input: reported in one line, exit code 2, nothing half-written."""
