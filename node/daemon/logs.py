"""Logs an operator can filter: the daemon's and the CLI's logging set-up, and the daemon's events.

Project code (loggers ``bsns.*``, ``node.*``, ``coordinator.*``) logs with its own level; the daemon's events go
through ``event(name, **fields)``, whose level comes from ``EVENT_LEVELS`` (info unless listed). Everything else
is library output (libp2p, trio, web3, urllib3, transformers, multiaddr, asyncio, Python warnings...): it is
routed through the same handlers at debug level, so it shows only with ``--log-level debug``, in the same
formats, with the library's logger and original level as fields. A record identical to one logged less than
``REPEAT_WINDOW_S`` ago is held back and counted; the next one that gets through carries ``repeated=N``.

The daemon writes one ``key=value`` line per record on stderr and JSON lines in ``<data_dir>/daemon.jsonl``
(``setup_logging``); the CLI prints project warnings as ``warning: ...`` lines and nothing from libraries unless
``BSNS_LOG_LEVEL=debug`` (``setup_cli_logging``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger("bsns.daemon")

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
PROJECT_LOGGERS = ("bsns", "node", "coordinator")
# libraries that install their own handlers or stop propagation; every other library logger propagates anyway
LIBRARY_LOGGERS = ("libp2p", "trio", "web3", "urllib3", "requests", "transformers", "multiaddr", "asyncio",
                   "huggingface_hub", "filelock", "websockets", "py.warnings", "peft", "torch")
REPEAT_WINDOW_S = 10.0

# events that are not plain progress; the rest are info
EVENT_LEVELS = {
    "error": logging.ERROR,
    "session_failed": logging.ERROR,
    "session_failed_here": logging.ERROR,
    "session_error": logging.WARNING,
    "not_joining": logging.WARNING,
    "reorg": logging.WARNING,
    "restore_failed": logging.ERROR,
    "chain_unreachable": logging.WARNING,
    "session_refused": logging.WARNING,
    "join_refused": logging.WARNING,
    "evaluate_failed": logging.WARNING,
    "pipeline_broken": logging.WARNING,
    "replicas_gone": logging.WARNING,
    "update_unavailable": logging.WARNING,
    "update_refused": logging.WARNING,
    "emulator_refused": logging.WARNING,
    "plan_unusable": logging.WARNING,
}


def event_level(name: str) -> int:
    return EVENT_LEVELS.get(name, logging.INFO)


def event(name: str, **fields) -> None:
    """Log one daemon event with its fields, at the event's level."""
    log.log(event_level(name), name, extra={"fields": fields})


def is_project(logger_name: str) -> bool:
    return logger_name.split(".", 1)[0] in PROJECT_LOGGERS


class _Router(logging.Handler):
    """The one handler on the root logger: demotes library records to debug, holds back repeats, and hands
    each record to the outputs whose threshold it meets."""

    def __init__(self, outputs: list[tuple[logging.Handler, int]], window: float = REPEAT_WINDOW_S,
                 clock=time.monotonic) -> None:
        super().__init__()
        self.outputs, self.window, self.clock = outputs, window, clock
        self._seen: OrderedDict[tuple, list] = OrderedDict()  # key -> [last time let through, held back since]
        self._mutex = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = dict(getattr(record, "fields", None) or {})
            if not is_project(record.name):
                fields = {**fields, "logger": record.name, "was": record.levelname.lower()}
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            if not self._let_through(record, fields):
                return
            record.fields = fields
            for handler, threshold in self.outputs:
                if record.levelno >= threshold:
                    handler.handle(record)
        except Exception:  # noqa: BLE001 - logging must never kill the daemon
            self.handleError(record)

    def _let_through(self, record: logging.LogRecord, fields: dict) -> bool:
        key = (record.name, record.levelno, record.getMessage(), repr(sorted(fields.items())))
        now = self.clock()
        with self._mutex:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.window:
                seen[1] += 1
                return False
            held = seen[1] if seen else 0
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > 2048:
                self._seen.popitem(last=False)
        if held:
            fields["repeated"] = held
        return True

    def close(self) -> None:
        for handler, _ in self.outputs:
            handler.close()
        super().close()


def _fields(record: logging.LogRecord) -> dict:
    fields = dict(getattr(record, "fields", None) or {})
    if record.exc_info and record.exc_info[1] is not None:  # one line: the exception, not its traceback
        fields["exc"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return fields


class _KVFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        kv = " ".join(f"{k}={_kv(v)}" for k, v in _fields(record).items())
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{ts} {record.levelname.lower():7s} {self.node} {_one_line(record.getMessage())} {kv}".rstrip()


class _JsonHandler(logging.Handler):
    def __init__(self, path: Path, node: str) -> None:
        super().__init__()
        self.fh = open(path, "a", buffering=1, encoding="utf-8")
        self.node = node

    def emit(self, record: logging.LogRecord) -> None:
        try:
            obj = {"t": round(record.created, 3), "level": record.levelname.lower(), "node": self.node,
                   "event": record.getMessage(), **_fields(record)}
            self.fh.write(json.dumps(obj, default=str) + "\n")
        except Exception:  # noqa: BLE001 - logging must never kill the daemon
            pass

    def close(self) -> None:
        self.fh.close()
        super().close()


class _CliFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        kv = " ".join(f"{k}={_kv(v)}" for k, v in _fields(record).items())
        return f"{record.levelname.lower()}: {_one_line(record.getMessage())} {kv}".rstrip()


def _kv(v) -> str:
    s = _one_line(str(v))
    return f'"{s}"' if (" " in s or not s) else s


def _one_line(s: str) -> str:
    return s.split("\n", 1)[0].rstrip() if "\n" in s else s


def _install(outputs: list[tuple[logging.Handler, int]], level: int) -> _Router:
    """Put the router on the root logger and bring the library loggers back under it."""
    router = _Router(outputs)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        if isinstance(h, _Router):
            h.close()
    root.addHandler(router)
    root.setLevel(min(level, logging.INFO))
    for name in PROJECT_LOGGERS:  # earlier set-ups may have given them handlers of their own
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.NOTSET)
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        # below debug the records are dropped anyway: keep the libraries from building them
        lg.setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
    logging.captureWarnings(True)
    # a logger whose library cut it off from the root (no handler, propagate False) ends here
    logging.lastResort = router
    return router


def _settle_libraries() -> None:
    """Let the libraries that configure logging on import or first use do it now, so that ``_install`` has the
    last word (libp2p resets its logger when imported; transformers adds a stderr handler on first use)."""
    import importlib

    for module in ("libp2p", "transformers.utils.logging"):
        try:
            importlib.import_module(module)
        except ImportError:
            continue
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
    except ImportError:
        pass


def setup_logging(data_dir: Path, node_name: str, verbose: bool = False, level: str = "info") -> None:
    """The daemon's logs: stderr at ``level`` (per-step lines only when ``verbose``) and ``daemon.jsonl`` at
    ``level`` or info, whichever shows more."""
    threshold = LEVELS[level]
    _settle_libraries()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(_KVFormatter(node_name))
    if not verbose:
        stderr.addFilter(lambda r: r.getMessage() != "step")  # per-step lines go to the JSON log only
    jsonl = _JsonHandler(Path(data_dir) / "daemon.jsonl", node_name)
    _install([(stderr, threshold), (jsonl, min(threshold, logging.INFO))], threshold)


def setup_cli_logging() -> None:
    """The CLI's logs: project warnings and errors as ``warning: ...`` lines on stderr; libraries silent unless
    ``BSNS_LOG_LEVEL=debug``."""
    threshold = LEVELS.get(os.environ.get("BSNS_LOG_LEVEL", "warning").lower(), logging.WARNING)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(_CliFormatter())
    _install([(stderr, threshold)], threshold)
