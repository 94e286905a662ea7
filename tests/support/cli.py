"""The `bsns` console entry point run in this process (faster than a subprocess where a test calls it often)."""

from __future__ import annotations

import contextlib
import io
import sys


def bsns(*args: str) -> tuple[int, str]:
    """Run `bsns ARGS...` in-process; returns (exit code, stdout + stderr)."""
    from coordinator.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["bsns", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    return code, out.getvalue() + err.getvalue()
