"""The daemon's logs: one line per event, ``key=value`` on stderr and JSON lines in ``<data_dir>/daemon.jsonl``.

Modules log with ``logging.getLogger("bsns.<part>")`` and pass the event's fields as ``extra={"fields": ...}``
(``event()`` does that for the daemon's own events); ``setup_logging`` installs the two handlers once per
process.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("bsns.daemon")


class _KVFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        kv = " ".join(f"{k}={v}" for k, v in fields.items())
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{ts} {record.levelname.lower():5s} {getattr(record, 'node', '')} {record.getMessage()} {kv}".rstrip()


class _JsonHandler(logging.Handler):
    def __init__(self, path: Path, node: str) -> None:
        super().__init__()
        self.fh = open(path, "a", buffering=1, encoding="utf-8")
        self.node = node

    def emit(self, record: logging.LogRecord) -> None:
        try:
            obj = {"t": round(record.created, 3), "level": record.levelname.lower(), "node": self.node,
                   "event": record.getMessage(), **(getattr(record, "fields", None) or {})}
            self.fh.write(json.dumps(obj, default=str) + "\n")
        except Exception:  # noqa: BLE001 - logging must never kill the daemon
            pass


def setup_logging(data_dir: Path, node_name: str, verbose: bool = False) -> None:
    """Log the ``bsns`` loggers to stderr (per-step lines only when ``verbose``) and to ``daemon.jsonl``."""
    root = logging.getLogger("bsns")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(_KVFormatter())
    h.addFilter(lambda r: setattr(r, "node", node_name) or True)
    if not verbose:
        h.addFilter(lambda r: r.getMessage() != "step")  # per-step lines go to the JSON log only
    root.addHandler(h)
    root.addHandler(_JsonHandler(data_dir / "daemon.jsonl", node_name))
    root.propagate = False


def event(name: str, **fields) -> None:
    """Log one daemon event with its fields."""
    log.info(name, extra={"fields": fields})
