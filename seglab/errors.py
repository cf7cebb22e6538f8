"""The one exception type for bad input: the CLI prints its message and exits 2, no traceback."""


class UserError(Exception):
    """Input seglab refuses; the message names the file, key or value and the fix."""
