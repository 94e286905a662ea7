"""Where bsns keeps things: the user's state home and the package's read-only resources.

The home (``$BSNS_HOME``, default ``./.bsns`` in the folder the command runs in) holds everything a user's
commands write: the local chain's pid file, state and log, the recorded RPC URL (``chain.json``), deployments,
the CLI's transaction journals, saved specs, keystores and, unless a node config names another folder, the
daemons' data folders. Nothing is ever written next to the installed package: its folder only provides
resources that are read (``specs/``, ``data/``, the compiled contracts, ``node_modules`` with anvil).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "BSNS_HOME"

# the source tree the package runs from (an editable install of the clone): read-only resources only
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def home() -> Path:
    """The state home: ``$BSNS_HOME``, else ``.bsns`` in the current folder (absolute)."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser().resolve() if env else Path.cwd() / ".bsns"


DATA_DIRS_ENV = "BSNS_DATA_DIRS"


def data_dirs() -> list[Path]:
    """The folders a job spec's ``data.path`` may point into: the package's ``data/``, ``<home>/data`` and those
    the operator lists in ``$BSNS_DATA_DIRS`` (separated by ``os.pathsep``). A spec is a stranger's input: a
    path anywhere else (``/etc/passwd``) is refused before it is read, hashed or proposed."""
    extra = [Path(p).expanduser().resolve() for p in os.environ.get(DATA_DIRS_ENV, "").split(os.pathsep) if p]
    return [(PACKAGE_ROOT / "data").resolve(), home() / "data", *extra]


def deployments_dir() -> Path:
    return home() / "deployments"


def journals_dir() -> Path:
    """The CLI's transaction journals, one per chain id and account (a daemon keeps its own in its data folder)."""
    return home() / "txs"


def specs_dir() -> Path:
    return home() / "specs"


def nodes_dir() -> Path:
    """Default parent of the daemons' data folders (``<home>/nodes/<node name>``)."""
    return home() / "nodes"


def default_keystore() -> Path:
    return home() / "keystore.json"


def chain_record() -> Path:
    """``bsns chain up`` writes the chain's RPC URL and block time here; later commands read it."""
    return home() / "chain.json"


def resource(relative: str | Path) -> Path | None:
    """A file shipped with the package (``specs/...``, ``data/...``), or None when there is none."""
    p = PACKAGE_ROOT / relative
    return p if p.exists() else None


def shown(path: Path) -> str:
    """A path as a user reads it: relative to the current folder when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
