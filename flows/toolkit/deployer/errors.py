"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A mistake the user can fix; the command line prints it as one line, exit 2."""
