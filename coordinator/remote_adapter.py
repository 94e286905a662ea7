"""A published adapter, from the network: fetch it from the peers that serve it, verify it, evaluate it.

``fetch_adapter`` reads the AdapterRegistry record (manifest hash and per-shard hashes), finds the
session's members in TrainingSessions and their peer ids and addresses in the NodeRegistry, and fetches
every shard's adapter and the manifest over ``/bsns/adapter/1`` with a throwaway libp2p identity
(daemons serve adapter blobs to anyone: they are content-addressed and published). Every blob is
checked against the hash the chain holds (the p2p layer verifies keccak-256 before returning a
byte) and the manifest must list exactly the chain's shard hashes. The result is written as one
canonical file per shard plus an export (PEFT format where PEFT has the method, else the documented
bsns format, via ``node.train.export``).

Everything is fetched and checked before anything is written, and the files are written into a temporary
folder that then takes the output's place, so a failure leaves nothing half-written. When no peer serves a
blob, the one-line error names every peer tried and why it failed; an address where nothing listens is told
apart with a plain TCP probe before libp2p dials it (the library's own error says nothing then).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from node.errors import BsnsError


class FetchError(BsnsError):
    """The adapter is unknown, or no peer served a blob whose hash matches the chain."""


def _clients(w3, deployment):
    from node.chain.clients import AdapterRegistryClient, GovernanceClient, NodeRegistryClient, SessionsClient

    d = deployment
    return (AdapterRegistryClient(w3, d.address("AdapterRegistry")), SessionsClient(w3, d.address("TrainingSessions")),
            NodeRegistryClient(w3, d.address("NodeRegistry")), GovernanceClient(w3, d.address("FineTuneGovernance")))


def spec_text_of(gov, proposal_id: int, spec_dirs=()) -> str:
    """The proposal's spec text: from the chain's ``ProposalSpec`` event, else from a local copy
    (``bsns propose`` keeps one in ``<home>/specs/``) whose keccak-256 equals the on-chain spec hash."""
    from node.hashing import keccak_hex
    from node.paths import specs_dir

    text = gov.spec_text(proposal_id)
    if text is not None:
        return text
    h = gov.get_params(proposal_id).spec_hash
    for folder in (*spec_dirs, specs_dir()):
        p = Path(folder) / f"{h}.toml"
        if p.exists() and keccak_hex(p.read_bytes()) == h.lower():
            return p.read_text()
    raise FetchError(f"the spec of proposal {proposal_id} is not on chain and no local copy hashes to {h}")


class PeerFetcher:
    """Fetches content-addressed blobs from daemons over ``/bsns/adapter/1`` with a throwaway identity: fetching
    needs no registration (daemons serve adapter blobs to anyone), and it accepts no inbound streams. The p2p
    layer checks every blob against the hash asked for; started on first use."""

    def __init__(self) -> None:
        self.node = None

    def fetch(self, peer_id: str, addr: str, h: str, timeout: float) -> bytes:
        import secrets

        from node.p2p import P2PNode

        if self.node is None:
            self.node = P2PNode(secrets.token_bytes(32), lambda address, protocol: False).start()
        self.node.connect(peer_id, [addr])
        return self.node.fetch_blob(peer_id, h, timeout=timeout)

    def close(self) -> None:
        if self.node is not None:
            self.node.close()
            self.node = None


def fetch_adapter(w3, deployment, adapter_id: int, out: Path, timeout: float = 60.0, spec_dirs=()) -> dict:
    """Download adapter ``adapter_id``; returns {"record", "spec", "state", "shards", "manifest", "format"}."""
    from node.chain.errors import ContractRevert
    from node.job import JobSpec
    from node.train.adapter_state import merged_state, save_adapter, state_from_bytes

    ad_client, sessions, registry, gov = _clients(w3, deployment)
    try:
        ad = ad_client.get_adapter(adapter_id)
    except ContractRevert as exc:
        raise FetchError(f"adapter {adapter_id} is not in the AdapterRegistry ({exc.name})") from None
    rec = ad.record
    if not rec.session_id:
        raise FetchError(f"adapter {adapter_id} names no session: no peers to fetch it from")
    info = sessions.get_session(rec.session_id)
    spec_text = spec_text_of(gov, info.proposal_id, spec_dirs)
    spec = JobSpec.from_text(spec_text, source=f"proposal {info.proposal_id}")
    members: dict[int, list] = {}
    for shard in range(info.num_shards):
        for rep in range(sessions.get_shard(rec.session_id, shard).joined):
            addr = sessions.member_at(rec.session_id, shard, rep)
            node = registry.get_node(addr)
            members.setdefault(shard, []).append((addr, node.peer_id, node.announce_addr))
    p2p = PeerFetcher()
    try:
        def get(what: str, h: str, candidates: list) -> bytes:
            errors = []
            for who, peer_id, addr in candidates:
                why = tcp_refusal(addr)
                if why is None:
                    try:
                        return p2p.fetch(peer_id, addr, h, timeout)
                    except Exception as exc:  # noqa: BLE001 - try the next peer that serves it
                        why = p2p_reason(exc)
                errors.append(f"{_short(who)} at {addr} ({why})")
            tried = "; ".join(errors) if errors else "the session has no members"
            raise FetchError(f"no peer served {what} of adapter {adapter_id} ({h[:12]}…): tried {tried}. The "
                             f"session's nodes serve it while their daemons run; keep a copy with "
                             f"`bsns adapter fetch {adapter_id} --out DIR`")

        blobs = [get(f"shard {shard}", h, members.get(shard, [])) for shard, h in enumerate(rec.shard_hashes)]
        everyone = [m for ms in members.values() for m in ms]
        manifest = json.loads(get("the manifest", rec.manifest_hash, everyone))
        if [s["hash"] for s in manifest.get("shards", [])] != list(rec.shard_hashes):
            raise FetchError("the manifest's shard hashes differ from the chain's record")
    finally:
        p2p.close()
    states = [state_from_bytes(b) for b in blobs]
    state = merged_state(states)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for shard, (h, st) in enumerate(zip(rec.shard_hashes, states)):
            if save_adapter(st, tmp / f"shard{shard}.safetensors") != h:
                raise FetchError(f"shard {shard}: written file does not hash to {h}")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        (tmp / "spec.toml").write_text(spec.toml_text)
        fmt = _export(spec, state, tmp / "export")
        _take_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shard_files = [str(out / f"shard{shard}.safetensors") for shard in range(len(rec.shard_hashes))]
    return {"record": rec, "spec": spec, "state": state, "shards": shard_files, "manifest": manifest, "format": fmt}


def _take_place(tmp: Path, out: Path) -> None:
    """Move the finished files into ``out`` (created if needed), replacing same-named ones."""
    out.mkdir(parents=True, exist_ok=True)
    for p in tmp.iterdir():
        dest = out / p.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(p, dest)


def tcp_refusal(multiaddr: str, timeout: float = 3.0) -> str | None:
    """Why nothing answers at a multiaddr's TCP address (``connection refused``...), or None if something does
    (or the address is not plain TCP: then libp2p finds out)."""
    parts = multiaddr.strip("/").split("/")
    if len(parts) < 4 or parts[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") or parts[2] != "tcp":
        return None
    try:
        with socket.create_connection((parts[1], int(parts[3])), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "connection refused: no daemon listening"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def p2p_reason(exc: BaseException) -> str:
    """The useful part of a p2p failure: its first line without the peer id the caller already names."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if text.startswith("cannot reach peer "):
        text = text.split(": ", 1)[1] if ": " in text else ""
    text = text.strip(" ;:")
    return text[:160] if text else type(exc).__name__


def _short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}" if address.startswith("0x") and len(address) > 12 else address


def _export(spec, state, out: Path) -> str:
    from node.train import export as E
    from node.tuners import get_method

    if get_method(spec.method.name).exports_to_peft:
        E.export_peft(spec, state, out)
        return "peft"
    E.export_bsns(spec, state, out)
    return "bsns"
