"""What a node thinks of a proposal: its spec, read from the chain and verified, and its vote by policy.

``SpecSource.spec_for(pid)`` reads the proposal's spec text from the chain (``ProposalSpec``), or from an
out-of-band copy for a governance contract that does not carry the text, and accepts it only if it hashes to
the agreed ``specHash`` and its fields are exactly the agreed params. ``VotePolicy.decide`` is the node's vote
by its ``[policy]`` config: does a shard fit my memory, do I support the method and task, is the model allowed
(never downloaded unless listed) and are my weights the proposal's, are rounds, sync interval, batch, sequence
length and model size within my limits, is the data set allowed and its path in the data folders.
``VotePolicy.accepts`` is the same judgement on a spec, which the daemon repeats before joining.
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
    """The node's vote on a proposal, and whether it joins a session, from its ``[policy]`` and ``[resources]``.

    ``decide`` (the vote) checks the agreed params first, then the spec text (``accepts``); the daemon calls
    ``accepts`` again before joining, so a node never joins what its policy refuses, whatever it voted. The model
    check never downloads a model unless the operator listed it in ``models`` and set ``download_models``.
    """

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
        if p.rounds > pol.max_rounds:
            return False, f"{p.rounds} rounds exceed max_rounds {pol.max_rounds}"
        if not any(m <= mem for m in p.shard_memory_mb):
            return False, f"no shard fits {mem} MB (needs {min(p.shard_memory_mb)} MB)"
        try:
            spec = self.specs.spec_for(pid)
        except BsnsError as exc:
            return False, str(exc)
        if spec is None:
            return False, "spec text not on chain"
        ok, why = self.accepts(spec)
        return (True, "a shard fits; method, task, model, data and limits within policy") if ok else (False, why)

    def accepts(self, spec) -> tuple[bool, str]:
        """(ok, why not): the spec within this node's limits, data set and model allowed, the model here (or
        allowed to be fetched) with the proposal's weights."""
        pol = self.cfg.policy
        t = spec.training
        for name, value, limit in (("rounds", t.rounds, pol.max_rounds),
                                   ("sync_interval", t.sync_interval, pol.max_sync_interval),
                                   ("batch_size", t.batch_size, pol.max_batch_size),
                                   ("max_seq_len", spec.data.max_seq_len, pol.max_seq_len),
                                   ("layers", spec.shards.layers[-1][1], pol.max_layers)):
            if value > limit:
                return False, f"{name} {value} exceeds the policy's max_{name.removeprefix('max_')} {limit}"
        if spec.method.name not in pol.methods:
            return False, f"method {spec.method.name} not supported"
        if pol.datasets and spec.data.dataset not in pol.datasets:
            return False, f"data set {spec.data.dataset} not allowed"
        from node.train.data import spec_data_path

        try:
            spec_data_path(spec.data.path)
        except BsnsError as exc:
            return False, str(exc)
        if spec.fedpeat is not None and self.cfg.fedpeat.fetch_emulators:
            return True, ""  # emulators are fetched by on-chain hash: no local weights are read
        return self._model_ok(spec.model.id, spec.model.weights_hash)

    def _model_ok(self, model: str, wanted: str | None) -> tuple[bool, str]:
        pol = self.cfg.policy
        listed = model in pol.models
        if pol.models and not listed:
            return False, f"model {model} not allowed"
        if not listed and _is_path(model):
            return False, f"model {model} is a local path not listed in the policy's models"
        if pol.model_hashes and (wanted or "").lower() not in pol.model_hashes:
            return False, f"weights {str(wanted)[:10]}… of {model} not in the policy's model_hashes"
        try:
            local = local_weights_hash(model, download=listed and pol.download_models)
        except BsnsError as exc:
            return False, f"model {model} not available here: {exc}"
        if wanted and local != wanted.lower():
            return False, f"my weights of {model} hash to {local[:10]}…, not the proposal's {wanted[:10]}…"
        return True, ""


def _is_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or model.count("/") > 1


@functools.lru_cache(maxsize=8)
def local_weights_hash(model_id: str, download: bool = False) -> str:
    """The weights hash of the model this node would load (cached: hashing reads every weights file); without
    ``download`` only what is already on this machine."""
    from node.model import weights_hash

    return weights_hash(model_id, download=download)
