"""The error type the CLI turns into a one-line message and exit code 2."""


class CLIError(Exception):
    """A problem with the user's input: reported in one line, exit code 2, nothing half-written."""


def integer_arg(value: str, flag: str, lo: int) -> int:
    """The command-line value of ``flag`` as an integer >= ``lo`` (CLIError naming the flag otherwise)."""
    try:
        number = int(value)
    except ValueError:
        raise CLIError(f"{flag} must be an integer >= {lo}, got {value!r}") from None
    if number < lo:
        raise CLIError(f"{flag} must be >= {lo}, got {number}")
    return number
