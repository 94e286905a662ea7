"""Every bad input of issue 12 through the CLI entry point: one line naming the cause, exit status 1, no traceback,
nothing sent (each is refused before a chain is even contacted: the RPC given is a closed port)."""

from __future__ import annotations

import pytest

from tests.daemon.specs import LORA, sst2_spec
from tests.support.cli import bsns

NO_CHAIN = "http://127.0.0.1:9"  # the discard port: anything that tried to reach a chain would fail differently


def _spec(tmp_path, *, data=None, training=None, layers=((0, 6),), memory_mb=(512,)):
    text = sst2_spec("bad", method="lora", config=LORA, layers=[list(x) for x in layers], memory_mb=list(memory_mb),
                     data=data, training={"rounds": 1, "sync_interval": 2, "batch_size": 4, "learning_rate": 0.001,
                                          **(training or {})})
    p = tmp_path / "spec.toml"
    p.write_text(text)
    return p


def _one_line_error(code, out, *needles):
    lines = out.strip().splitlines()
    assert code == 1, out
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert "Traceback" not in out
    for n in needles:
        assert n in lines[0], out


def _propose(path):
    return bsns("propose", str(path), "--dev-account", "0", "--rpc", NO_CHAIN)


def test_spec_not_utf8(tmp_path):
    p = tmp_path / "spec.toml"
    p.write_bytes(b'name = "caf\xe9"\n')
    _one_line_error(*_propose(p), "not UTF-8")


def test_data_path_outside_the_data_folders(tmp_path):
    _one_line_error(*_propose(_spec(tmp_path, data={"path": "/etc/passwd"})), "data.path", "/etc/passwd",
                    "outside the data folders")


def test_data_path_escaping_by_dotdot(tmp_path):
    _one_line_error(*_propose(_spec(tmp_path, data={"path": "data/../pyproject.toml"})), "outside the data folders")


def test_sync_interval_over_uint32(tmp_path):
    _one_line_error(*_propose(_spec(tmp_path, training={"sync_interval": 2**32})), "sync_interval")


def test_layer_over_uint16(tmp_path):
    _one_line_error(*_propose(_spec(tmp_path, layers=((0, 70000),))), "shards.layers", "70000")


def test_memory_over_uint32(tmp_path):
    _one_line_error(*_propose(_spec(tmp_path, memory_mb=(2**32,))), "memory_mb", "uint32")


def test_dirichlet_alpha_over_what_the_chain_holds(tmp_path):
    _one_line_error(*_propose(_spec(tmp_path, data={"distribution": "dirichlet", "alpha": 5e6})), "data.alpha")


@pytest.mark.parametrize("ident", [str(2**256), "0x1" + "0" * 64, "1e3"])
def test_vote_id_out_of_range(ident):
    _one_line_error(*bsns("vote", ident, "for", "--dev-account", "1", "--rpc", NO_CHAIN), "ID")


def test_node_config_not_utf8(tmp_path):
    p = tmp_path / "node.toml"
    p.write_bytes(b'name = "n\xff"\n[identity]\ndev_account = 1\n')
    _one_line_error(*bsns("node", "run", "--config", str(p)), "not UTF-8")


@pytest.mark.parametrize("listen, why", [("/ip4/999.1.1.1/tcp/0", "not IPv4"), ("tcp://127.0.0.1:4001", "multiaddr"),
                                         ("/ip4/127.0.0.1/udp/4001", "tcp")])
def test_node_config_invalid_listen_address(tmp_path, listen, why):
    p = tmp_path / "node.toml"
    p.write_text(f'name = "n"\n[identity]\ndev_account = 1\n[p2p]\nlisten = "{listen}"\n')
    _one_line_error(*bsns("node", "run", "--config", str(p)), "p2p.listen", why)


def test_node_config_listen_port_in_use(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = tmp_path / "node.toml"
        p.write_text(f'name = "n"\n[identity]\ndev_account = 1\n[p2p]\nlisten = "/ip4/127.0.0.1/tcp/{port}"\n')
        _one_line_error(*bsns("node", "run", "--config", str(p)), "p2p.listen", f"tcp/{port}", "in use")


def test_node_config_listen_address_not_on_this_host(tmp_path):
    p = tmp_path / "node.toml"
    # TEST-NET-1 (RFC 5737): documentation only, never assigned to an interface
    p.write_text('name = "n"\n[identity]\ndev_account = 1\n[p2p]\nlisten = "/ip4/192.0.2.1/tcp/4001"\n')
    _one_line_error(*bsns("node", "run", "--config", str(p)), "p2p.listen", "192.0.2.1", "assign")
