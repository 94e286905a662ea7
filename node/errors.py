"""The project's base exception: anything a user can cause is a BsnsError with a one-line message.

The CLI prints ``error: <message>`` for these and exits non-zero; anything else is a bug and
keeps its traceback.
"""


class BsnsError(Exception):
    """A failure the user can act on; ``str(err)`` is the one-line cause."""
