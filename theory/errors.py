"""The one exception type for bad user input, shared by every layer.

Raise ``InputError`` for a malformed instance, checkpoint, dataset row or setting. The ``coupling``
command prints its message on one line and exits with code 2; nothing else is caught, so a bug
still shows its traceback.
"""


class InputError(ValueError):
    """Bad input from the user (file, row, tensor or setting); the message names what and where."""
