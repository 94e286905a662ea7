"""Keystores: encrypted at rest, unlocked only with the password, dev keys only on the local chain."""

from __future__ import annotations

import json
import stat

import pytest

from node.chain.keys import KeystoreError, create_keystore, dev_key, load_keystore


def test_keystore_round_trip_is_encrypted(tmp_path, monkeypatch):
    monkeypatch.delenv("BSNS_KEYSTORE_PASSWORD", raising=False)
    path = tmp_path / "k.json"
    key = create_keystore(path, password="pw-1")
    text = path.read_text()
    assert key.private_key.hex() not in text  # only ciphertext on disk
    assert json.loads(text)["address"].lower() == key.address[2:].lower()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keystore(path, password="pw-1") == key
    assert key.private_key.hex() not in repr(key)


def test_keystore_password_from_env_and_wrong_password(tmp_path, monkeypatch):
    path = tmp_path / "k.json"
    monkeypatch.setenv("BSNS_KEYSTORE_PASSWORD", "from-env")
    key = create_keystore(path)
    assert load_keystore(path).address == key.address
    monkeypatch.setenv("BSNS_KEYSTORE_PASSWORD", "wrong")
    with pytest.raises(KeystoreError, match="wrong password"):
        load_keystore(path)


def test_keystore_refuses_overwrite_and_reports_missing(tmp_path):
    path = tmp_path / "k.json"
    create_keystore(path, password="x")
    with pytest.raises(KeystoreError, match="already exists"):
        create_keystore(path, password="x")
    with pytest.raises(KeystoreError, match="not found"):
        load_keystore(tmp_path / "missing.json", password="x")


def test_dev_keys_only_on_local_chain():
    k0 = dev_key(0, 31337)
    assert k0.address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil's published account 0
    assert dev_key(1, 31337).address != k0.address
    with pytest.raises(KeystoreError, match="only allowed on the local chain"):
        dev_key(0, 1)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8545", "https://rpc.example.com", "http://localhost.evil.com:8545"])
def test_dev_keys_refused_off_a_loopback_rpc(url):
    """Anyone can serve chain id 31337: a dev key (its private key is public) is used only with a local RPC."""
    with pytest.raises(KeystoreError, match="local RPC"):
        dev_key(0, 31337, rpc_url=url)
    for ok in ("http://127.0.0.1:8545", "http://localhost:8545", "http://[::1]:8545", "/tmp/anvil.ipc"):
        assert dev_key(0, 31337, rpc_url=ok).address == dev_key(0, 31337).address


def test_cli_refuses_a_dev_key_on_a_remote_chain_claiming_31337():
    """A JSON-RPC server on this machine's non-loopback address answers chain id 31337: the CLI refuses the dev
    account in one line, before signing anything."""
    import json
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from tests.support.cli import bsns

    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outward interface's address
        host = s.getsockname()[0]
        s.close()
    except OSError:
        pytest.skip("no non-loopback interface")
    if host.startswith("127."):
        pytest.skip("no non-loopback interface")
    seen = []

    class Rpc(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(req["method"])
            body = json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": "0x7a69"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = HTTPServer((host, 0), Rpc)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        code, out = bsns("vote", "1", "for", "--dev-account", "1", "--rpc", f"http://{host}:{srv.server_port}")
    finally:
        srv.shutdown()
    assert code == 1 and out.strip().splitlines() == [out.strip()] and "local RPC" in out, out
    assert "eth_sendRawTransaction" not in seen
