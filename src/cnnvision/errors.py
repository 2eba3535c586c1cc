"""The one error type for user mistakes: bad paths, malformed files, wrong checkpoints.

The CLI prints it as a single line and exits non-zero; anything else is a bug and keeps
its traceback.
"""


class InputError(Exception):
    """A problem with something the user gave us (a file, a row, a name)."""
