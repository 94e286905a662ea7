"""The project's base exception: anything a user can cause is a BsnsError with a one-line message.

The CLI prints ``error: <message>`` for these and exits non-zero; anything else is a bug and
keeps its traceback.
"""


class BsnsError(Exception):
    """A failure the user can act on; ``str(err)`` is the one-line cause."""


def validation_message(exc) -> str:
    """One line for a pydantic ``ValidationError``: the first field at fault and its message."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{field}: {first['msg']}{more}"
