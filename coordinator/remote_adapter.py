"""A published adapter, from the network: fetch it from the peers that serve it, verify it, evaluate it.

``fetch_adapter`` reads the AdapterRegistry record (manifest hash and per-shard hashes), finds the
session's members in TrainingSessions and their peer ids and addresses in the NodeRegistry, and fetches
every shard's adapter and the manifest over ``/bsns/adapter/1`` with a throwaway libp2p identity
(daemons serve adapter blobs to anyone: they are content-addressed and published). Every blob is
checked against the hash the chain holds (the p2p layer verifies keccak-256 before returning a
byte) and the manifest must list exactly the chain's shard hashes. The result is written as one
canonical file per shard plus an export (PEFT format where PEFT has the method, else the documented
bsns format, via ``node.train.export``).
"""

from __future__ import annotations

import json
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
    (``bsns propose`` keeps one in .bsns/specs/) whose keccak-256 equals the on-chain spec hash."""
    from node.hashing import keccak_hex

    text = gov.spec_text(proposal_id)
    if text is not None:
        return text
    h = gov.get_params(proposal_id).spec_hash
    for folder in (*spec_dirs, Path(".bsns") / "specs"):
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
            members.setdefault(shard, []).append((node.peer_id, node.announce_addr))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p2p = PeerFetcher()
    try:
        def get(h: str, candidates: list) -> bytes:
            errors = []
            for peer_id, addr in candidates:
                try:
                    return p2p.fetch(peer_id, addr, h, timeout)
                except Exception as exc:  # noqa: BLE001 - try the next peer that serves it
                    errors.append(f"{peer_id[:12]}: {str(exc).splitlines()[0][:120]}")
            raise FetchError(f"no peer served {h}: {'; '.join(errors) or 'no peers'}")

        shard_files, states = [], []
        for shard, h in enumerate(rec.shard_hashes):
            data = get(h, members.get(shard, []))
            path = out / f"shard{shard}.safetensors"
            if save_adapter(state_from_bytes(data), path) != h:
                raise FetchError(f"shard {shard}: written file does not hash to {h}")
            shard_files.append(str(path))
            states.append(state_from_bytes(data))
        everyone = [m for ms in members.values() for m in ms]
        manifest = json.loads(get(rec.manifest_hash, everyone))
        if [s["hash"] for s in manifest.get("shards", [])] != list(rec.shard_hashes):
            raise FetchError("the manifest's shard hashes differ from the chain's record")
    finally:
        p2p.close()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    (out / "spec.toml").write_text(spec.toml_text)
    state = merged_state(states)
    fmt = _export(spec, state, out / "export")
    return {"record": rec, "spec": spec, "state": state, "shards": shard_files, "manifest": manifest, "format": fmt}


def _export(spec, state, out: Path) -> str:
    from node.train import export as E
    from node.tuners import get_method

    if get_method(spec.method.name).exports_to_peft:
        E.export_peft(spec, state, out)
        return "peft"
    E.export_bsns(spec, state, out)
    return "bsns"
