"""The daemon's and the CLI's logging set-up: levels, library output at debug only, repeats counted, JSON kept."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings

import pytest

from node.daemon import logs

LINE = re.compile(r"^\d\d:\d\d:\d\d (debug|info|warning|error) +n0 \S")


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.lastResort)
    names = logs.LIBRARY_LOGGERS + logs.PROJECT_LOGGERS
    saved_loggers = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level,
                         logging.getLogger(n).propagate) for n in names}
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        if h not in saved[0]:
            h.close()
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    logging.lastResort = saved[2]
    logging.captureWarnings(False)
    for n, (handlers, level, propagate) in saved_loggers.items():
        lg = logging.getLogger(n)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def _daemon_logs(tmp_path, monkeypatch, level="info", verbose=False) -> io.StringIO:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(logs, "_settle_libraries", lambda: None)  # the real one imports libp2p (slow)
    logs.setup_logging(tmp_path, "n0", verbose=verbose, level=level)
    return err


def _jsonl(tmp_path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "daemon.jsonl").read_text().splitlines()]


def test_events_carry_their_level_and_the_threshold_filters(tmp_path, monkeypatch, restore_logging):
    err = _daemon_logs(tmp_path, monkeypatch, level="warning")
    logs.event("voted", proposal=1, support=True)
    logs.event("chain_unreachable", error="cannot reach the chain at http://x: connection refused")
    logs.event("error", error="something broke")
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and all(LINE.match(x) for x in lines), lines
    assert " warning n0 chain_unreachable error=\"cannot reach the chain at http://x: connection refused\"" in lines[0]
    assert " error   n0 error error=\"something broke\"" in lines[1]
    # the JSON log keeps info and above whatever the terminal shows, with the level of each record
    assert [(r["level"], r["event"]) for r in _jsonl(tmp_path)] == [
        ("info", "voted"), ("warning", "chain_unreachable"), ("error", "error")]


def test_library_output_is_debug_only_in_the_same_format(tmp_path, monkeypatch, restore_logging):
    err = _daemon_logs(tmp_path, monkeypatch, level="info")
    logging.getLogger("libp2p.transport.tcp.tcp").error("Failed to open TCP stream: %s", "refused")
    logging.getLogger("web3.providers.HTTPProvider").warning("retrying")
    logging.getLogger("node.p2p.node").warning("bootstrap peer %s unreachable", "/ip4/1.2.3.4/tcp/1")
    assert err.getvalue().splitlines() == [err.getvalue().splitlines()[0]]
    assert "bootstrap peer /ip4/1.2.3.4/tcp/1 unreachable" in err.getvalue()  # project warnings stay warnings

    err = _daemon_logs(tmp_path, monkeypatch, level="debug")
    logging.getLogger("libp2p.transport.tcp.tcp").error("Failed to open TCP stream: %s", "refused")
    (line,) = err.getvalue().splitlines()
    assert LINE.match(line) and " debug   n0 Failed to open TCP stream: refused" in line
    assert line.endswith("logger=libp2p.transport.tcp.tcp was=error")


def test_a_library_logger_cut_off_from_the_root_is_still_routed(tmp_path, monkeypatch, restore_logging):
    """libp2p sets its logger to propagate=False without a handler: Python then prints to stderr raw."""
    err = _daemon_logs(tmp_path, monkeypatch, level="debug")
    cut = logging.getLogger("libp2p")
    cut.propagate, cut.handlers[:] = False, []  # what `import libp2p` does after our set-up
    logging.getLogger("libp2p.pubsub.gossipsub").warning("Rate limit exceeded for peer %s", "Qm")
    (line,) = err.getvalue().splitlines()
    assert " debug   n0 Rate limit exceeded for peer Qm logger=libp2p.pubsub.gossipsub was=warning" in line


def test_python_warnings_and_transformers_go_to_debug(tmp_path, monkeypatch, restore_logging):
    err = _daemon_logs(tmp_path, monkeypatch, level="info")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a deprecated thing", FutureWarning)
    logging.getLogger("transformers.modeling_utils").warning("Some weights were not initialized")
    assert err.getvalue() == ""


def test_repeats_are_held_back_and_counted(tmp_path, monkeypatch, restore_logging):
    err = _daemon_logs(tmp_path, monkeypatch)
    router = next(h for h in logging.getLogger().handlers if isinstance(h, logs._Router))
    now = [1000.0]
    router.clock = lambda: now[0]
    for _ in range(12):  # twice a second for 6 s
        logs.event("chain_unreachable", error="connection refused")
        now[0] += 0.5
    logs.event("voted", proposal=1)  # another record is not a repeat
    now[0] += logs.REPEAT_WINDOW_S
    logs.event("chain_unreachable", error="connection refused")
    lines = [x for x in err.getvalue().splitlines() if "chain_unreachable" in x]
    assert len(lines) == 2
    assert "repeated" not in lines[0] and lines[1].endswith("repeated=11")
    assert [r.get("repeated") for r in _jsonl(tmp_path) if r["event"] == "chain_unreachable"] == [None, 11]


def test_step_lines_only_when_verbose(tmp_path, monkeypatch, restore_logging):
    err = _daemon_logs(tmp_path, monkeypatch)
    logging.getLogger("bsns.session").info("step", extra={"fields": {"step": 1, "loss": 0.7}})
    assert err.getvalue() == "" and _jsonl(tmp_path)[0]["event"] == "step"
    err = _daemon_logs(tmp_path, monkeypatch, verbose=True)
    logging.getLogger("bsns.session").info("step", extra={"fields": {"step": 2, "loss": 0.6}})
    assert " info    n0 step step=2 loss=0.6" in err.getvalue()


def test_cli_prints_project_warnings_as_lines_and_no_library_noise(monkeypatch, restore_logging):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.delenv("BSNS_LOG_LEVEL", raising=False)
    logs.setup_cli_logging()
    logging.getLogger("libp2p.transport.tcp.tcp").error("Failed to open TCP stream")
    logging.getLogger("bsns.chain").info("progress")
    logging.getLogger("bsns.chain").warning("a journal of another chain was set aside")
    assert err.getvalue() == "warning: a journal of another chain was set aside\n"
