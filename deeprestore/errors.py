"""User-facing errors.

A `DeepRestoreError` is a mistake the user can fix: a missing file, an unknown layer, weights of the
wrong shape. The CLI prints its message on one line and exits with a non-zero code, no traceback.
Programming errors stay ordinary exceptions.
"""


class DeepRestoreError(Exception):
    """An error whose message tells the user what was received and what was expected."""
