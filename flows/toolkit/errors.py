"""The one exception type for mistakes a user can fix, and how an error becomes a line."""


class UserError(Exception):
    """A mistake the user can fix; the command line prints it as one line, exit 2."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (its type's name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__
