"""What a node thinks of a proposal: its spec, read from the chain and verified, and its vote by policy.

``SpecSource.spec_for(pid)`` reads the proposal's spec text from the chain (``ProposalSpec``), or from an
out-of-band copy for a governance contract that does not carry the text, and accepts it only if it hashes to
the agreed ``specHash`` and its fields are exactly the agreed params. ``VotePolicy.decide`` is the node's vote
by its ``[policy]`` config: does a shard fit my memory, do I support the method and task, is the model allowed
and are my weights the proposal's, is it within my round limit.
"""

from __future__ import annotations

import functools
from pathlib import Path

from node.errors import BsnsError


class ProposalError(BsnsError):
    """A proposal's spec cannot be trusted (text missing, or not what was agreed)."""


class SpecSource:
    """Proposal specs from the chain (verified), with the node's out-of-band folders as a fallback."""

    def __init__(self, gov, data_dir: Path) -> None:
        self.gov = gov
        from node.paths import specs_dir

        self.folders = (Path(data_dir) / "specs", specs_dir())

    def spec_for(self, pid: int):
        """The proposal's spec, verified against the agreed params; None if its text is nowhere to be found."""
        from node.job import JobSpec, SpecError

        text = self.gov.spec_text(pid)
        if text is None:
            text = self._from_folders(self.gov.get_params(pid).spec_hash)
        if text is None:
            return None
        spec = JobSpec.from_text(text, source=f"proposal {pid}")
        try:
            spec.check_against_chain(self.gov.get_params(pid).as_chain_dict())
        except SpecError as exc:
            raise ProposalError(f"proposal {pid}: the spec text does not match the agreed params: {exc}") from None
        return spec

    def _from_folders(self, spec_hash: str) -> str | None:
        """A spec text handed over out of band (``<data_dir>/specs/<hash>.toml`` or ``<home>/specs/``), accepted
        only if it hashes to the on-chain ``specHash``."""
        from node.hashing import keccak_hex

        for folder in self.folders:
            p = folder / f"{spec_hash}.toml"
            if p.exists():
                text = p.read_text()
                if keccak_hex(text.encode()) == spec_hash.lower():
                    return text
        return None


class VotePolicy:
    """The node's vote on a proposal, from its ``[policy]`` and ``[resources]`` config."""

    def __init__(self, cfg, specs: SpecSource) -> None:
        self.cfg, self.specs = cfg, specs

    def decide(self, pid: int) -> tuple[bool, str]:
        """(support, why)."""
        p = self.specs.gov.get_params(pid)
        pol = self.cfg.policy
        mem = self.cfg.resources.memory_mb
        if p.method not in pol.methods:
            return False, f"method {p.method} not supported"
        if p.task not in pol.tasks:
            return False, f"task {p.task} not supported"
        if pol.models and p.base_model not in pol.models:
            return False, f"model {p.base_model} not allowed"
        if p.rounds > pol.max_rounds:
            return False, f"{p.rounds} rounds exceed max_rounds {pol.max_rounds}"
        if not any(m <= mem for m in p.shard_memory_mb):
            return False, f"no shard fits {mem} MB (needs {min(p.shard_memory_mb)} MB)"
        if not self._fetches_emulators_for(pid):
            try:
                local = local_weights_hash(p.base_model)
            except BsnsError as exc:
                return False, f"model {p.base_model} not available here: {exc}"
            if local != p.base_model_hash:
                return False, (f"my weights of {p.base_model} hash to {local[:10]}…, not the proposal's "
                               f"{p.base_model_hash[:10]}…")
        try:
            if self.specs.spec_for(pid) is None:
                return False, "spec text not on chain"
        except BsnsError as exc:
            return False, str(exc)
        return True, "a shard fits; method, task and model supported"

    def _fetches_emulators_for(self, pid: int) -> bool:
        """A FedPEAT job on a node that fetches its emulators by on-chain hash: it never reads local weights,
        so their hash is no reason to vote against."""
        if not self.cfg.fedpeat.fetch_emulators:
            return False
        try:
            spec = self.specs.spec_for(pid)
        except BsnsError:
            return False
        return spec is not None and spec.fedpeat is not None


@functools.lru_cache(maxsize=8)
def local_weights_hash(model_id: str) -> str:
    """The weights hash of the model this node would load (cached: hashing reads every weights file)."""
    from node.model import weights_hash

    return weights_hash(model_id)
