"""Turning a spec file into what is proposed: validated, with the weights and data hashes filled in from the
files, before anything is sent to the chain (``bsns propose``, the demo and the cluster harness use it).

Relative paths that do not exist where the command runs (the spec itself, its ``data.path``) are looked up
among the files shipped with the package (``specs/``, ``data/``), so the README's commands work from any folder.
"""

from __future__ import annotations

from pathlib import Path

from node.errors import BsnsError


def shipped_or_local(path: str | Path) -> Path:
    """``path`` if it exists here, else the package's file of that relative name, else ``path`` unchanged."""
    from node.paths import resource

    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    return resource(p) or p


def _resolve_file(path: str) -> Path:
    from node.train.data import spec_data_path

    p = shipped_or_local(path)
    if not p.is_file():
        raise BsnsError(f"data.path: file not found: {path}")
    return spec_data_path(p)  # confined to the data folders: a spec never makes a node read /etc/passwd


def prepare_spec(path: Path):
    """Load and validate the spec, filling in missing file hashes; raises ``SpecError`` naming the field."""
    from node.hashing import file_keccak
    from node.job import JobSpec
    from node.model import weights_hash

    spec = JobSpec.from_toml(shipped_or_local(path))
    data_hash = None if spec.data.hash else file_keccak(_resolve_file(spec.data.path))
    w_hash = None if spec.model.weights_hash else weights_hash(spec.model.id)
    if data_hash or w_hash:
        spec = spec.with_hashes(weights_hash=w_hash, data_hash=data_hash)
    spec.to_chain_params()  # the on-chain form must build too
    return spec
