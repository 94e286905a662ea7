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
