"""One place for local state: the home (``$BSNS_HOME``, default ``./.bsns``), the RPC URL it records, and the
files shipped with the package found from any folder."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A user's folder outside the clone, with no bsns variables set."""
    for var in ("BSNS_HOME", "BSNS_RPC", "BSNS_DEPLOYMENT", "BSNS_DEPLOYMENTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_home_is_the_working_folder_unless_set(elsewhere, monkeypatch):
    from node import paths
    from node.chain.deployment import default_path

    assert paths.home() == elsewhere / ".bsns"
    assert default_path(31337) == elsewhere / ".bsns" / "deployments" / "31337.json"
    assert paths.journals_dir() == elsewhere / ".bsns" / "txs"
    monkeypatch.setenv("BSNS_HOME", str(elsewhere / "h"))
    assert paths.home() == elsewhere / "h" and paths.default_keystore() == elsewhere / "h" / "keystore.json"
    assert paths.PACKAGE_ROOT not in paths.home().parents


def test_rpc_url_flag_then_env_then_recorded_chain_then_default(elsewhere, monkeypatch):
    from node.chain.rpc import DEFAULT_RPC, record_chain, recorded_chain, rpc_url

    assert rpc_url() == DEFAULT_RPC and recorded_chain() is None
    record_chain("http://127.0.0.1:18999", 1.0)
    assert json.loads((elsewhere / ".bsns" / "chain.json").read_text()) == {"rpc": "http://127.0.0.1:18999",
                                                                           "block_time": 1.0}
    assert rpc_url() == "http://127.0.0.1:18999"
    monkeypatch.setenv("BSNS_RPC", "http://127.0.0.1:1")
    assert rpc_url() == "http://127.0.0.1:1"
    assert rpc_url("http://127.0.0.1:2") == "http://127.0.0.1:2"


def test_commands_reach_the_recorded_chain_and_say_so(elsewhere):
    from coordinator.localchain import free_port
    from node.chain.rpc import record_chain
    from tests.support.cli import bsns

    port = free_port()
    record_chain(f"http://127.0.0.1:{port}", 1.0)
    code, out = bsns("proposals")
    assert (code, out.strip()) == (1, f"error: cannot reach the chain at http://127.0.0.1:{port}: connection refused")


def test_shipped_specs_are_found_from_any_folder(elsewhere):
    from coordinator.proposals import shipped_or_local
    from node.paths import PACKAGE_ROOT

    assert shipped_or_local("specs/minilm-sst2-quick.toml") == PACKAGE_ROOT / "specs" / "minilm-sst2-quick.toml"
    (elsewhere / "specs").mkdir()
    (elsewhere / "specs" / "minilm-sst2-quick.toml").write_text("mine")
    assert shipped_or_local("specs/minilm-sst2-quick.toml").resolve() == elsewhere / "specs" / "minilm-sst2-quick.toml"


def test_nothing_in_the_code_writes_next_to_the_package():
    """Paths built from the package's own location are read-only resources; state goes through node.paths."""
    import re

    from node.paths import PACKAGE_ROOT

    allowed = {"node/paths.py", "node/chain/artifacts.py", "node/train/data.py"}  # resources: read only
    offenders = []
    for folder in ("node", "coordinator"):
        for f in (PACKAGE_ROOT / folder).rglob("*.py"):
            rel = f.relative_to(PACKAGE_ROOT).as_posix()
            if rel in allowed or rel.startswith("node/p2p/"):
                continue
            if re.search(r"__file__\)\.resolve\(\)\.parents\[|REPO_ROOT\s*=", f.read_text()):
                offenders.append(rel)
    assert offenders == []


def test_chain_up_flags_that_exclude_each_other_are_one_line(elsewhere):
    from tests.support.cli import bsns

    code, out = bsns("chain", "up", "--on-demand", "--block-time", "2")
    assert (code, out.strip()) == (1, "error: --on-demand mines only per transaction; leave out --block-time with it")
    assert not (elsewhere / ".bsns").exists()
