"""Compile the Solidity contracts offline and reproducibly into the committed artifacts.

Owns ``contracts/artifacts/``. Run ``python -m coordinator.compile`` (writes) or
``python -m coordinator.compile --check`` (exit 1 if the committed artifacts differ from the sources).

The compiler is the pinned npm ``solc`` (WASM soljson) reached through py-solc-x's standard-JSON path:
``scripts/solc_shim.js`` makes it look like a native solc binary (py-solc-x cannot download solc offline,
and ``solcjs --standard-json`` prints a banner before the JSON). OpenZeppelin imports resolve from
``node_modules`` inside the shim.

Artifact format, one file per deployable contract, ``contracts/artifacts/<Name>.json`` (JSON with sorted
keys, two-space indent, trailing newline, byte-identical across runs)::

    {
      "abi": [...],                     # the contract ABI (functions, events, custom errors)
      "bytecode": "0x...",              # creation code (constructor arguments are appended at deploy)
      "compiler": "0.8.28+commit...",   # solc long version
      "contractName": "NodeRegistry",
      "deployedBytecode": "0x...",      # runtime code
      "evmVersion": "cancun",
      "source": "contracts/NodeRegistry.sol",
      "sourceHash": "0x..."             # keccak-256 of the standard-JSON input (project sources +
    }                                   #   settings; OpenZeppelin comes through the import callback)

Abstract contracts, interfaces and libraries without code get no artifact; sources under
``node_modules`` (OpenZeppelin) are compiled but produce no artifact either.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from node.errors import BsnsError

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = ROOT / "contracts"
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"
SHIM = ROOT / "scripts" / "solc_shim.js"

EVM_VERSION = "cancun"  # supported by anvil, Hardhat 2's node and eth-tester 0.14 (py-evm Prague)
OPTIMIZER_RUNS = 200
# via-IR: the IR optimizer packs struct reads/writes and keeps castVote and commit under 60,000 gas
# (the legacy pipeline costs ~1,700 gas more per commit); compiling takes ~20 s of CPU instead of ~6 s.
VIA_IR = True


class CompileError(BsnsError):
    """The Solidity sources do not compile (or the compiler could not be run)."""


def source_files() -> list[Path]:
    """The project's Solidity sources, in a stable order (artifacts/ excluded)."""
    return sorted(p for p in CONTRACTS_DIR.rglob("*.sol") if ARTIFACTS_DIR not in p.parents)


def standard_input() -> dict:
    """The standard-JSON compiler input: every project source by content, pinned settings."""
    sources = {
        p.relative_to(ROOT).as_posix(): {"content": p.read_text(encoding="utf-8")} for p in source_files()
    }
    return {
        "language": "Solidity",
        "sources": sources,
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "viaIR": VIA_IR,
            "evmVersion": EVM_VERSION,
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }


def source_hash(std_in: dict | None = None) -> str:
    """keccak-256 of the canonical standard-JSON input: changes whenever a source or a setting does."""
    std_in = standard_input() if std_in is None else std_in
    from node.hashing import keccak_hex

    return keccak_hex(json.dumps(std_in, sort_keys=True, separators=(",", ":")).encode())


def compile_contracts() -> dict[str, str]:
    """Compile all sources; return {file name: artifact text} without writing anything."""
    import solcx
    from solcx.exceptions import SolcError

    if not SHIM.exists():
        raise CompileError(f"compiler shim missing: {SHIM}")
    std_in = standard_input()
    try:
        version = str(solcx.wrapper.get_version_str_from_solc_binary(SHIM))
        out = solcx.compile_standard(std_in, solc_binary=SHIM)
    except SolcError as exc:
        # keep it one line: the message and the "--> file:line:col" that follows it
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        where = next((ln[4:] for ln in lines if ln.startswith("--> ")), "")
        first = lines[0] if lines else "compiler failed"
        raise CompileError(f"solidity compilation failed: {first}" + (f" at {where}" if where else "")) from exc
    except (FileNotFoundError, PermissionError) as exc:
        raise CompileError(f"cannot run the compiler shim {SHIM} (is node on PATH?): {exc}") from exc

    input_hash = source_hash(std_in)
    artifacts: dict[str, str] = {}
    for source, contracts in sorted(out.get("contracts", {}).items()):
        if not source.startswith("contracts/"):
            continue
        for name, c in sorted(contracts.items()):
            bytecode = c["evm"]["bytecode"]["object"]
            if not bytecode:
                continue  # interface or abstract contract
            if f"{name}.json" in artifacts:
                raise CompileError(f"two contracts named {name}: artifact names must be unique")
            artifact = {
                "contractName": name,
                "abi": c["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + c["evm"]["deployedBytecode"]["object"],
                "compiler": version,
                "evmVersion": EVM_VERSION,
                "source": source,
                "sourceHash": input_hash,
            }
            artifacts[f"{name}.json"] = json.dumps(artifact, sort_keys=True, indent=2) + "\n"
    if not artifacts:
        raise CompileError("no deployable contracts found under contracts/")
    return artifacts


def stale_artifacts(artifacts: dict[str, str]) -> list[str]:
    """Names of artifact files that are missing, different or no longer produced by the sources."""
    existing = {p.name for p in ARTIFACTS_DIR.glob("*.json")} if ARTIFACTS_DIR.exists() else set()
    stale = [n for n in sorted(artifacts) if n not in existing
             or (ARTIFACTS_DIR / n).read_text(encoding="utf-8") != artifacts[n]]
    stale += sorted(existing - set(artifacts))
    return stale


def write_artifacts(artifacts: dict[str, str]) -> list[str]:
    """Write the artifacts (and remove those no source produces any more); return changed names."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    changed = stale_artifacts(artifacts)
    for name in changed:
        path = ARTIFACTS_DIR / name
        if name in artifacts:
            path.write_text(artifacts[name], encoding="utf-8")
        else:
            path.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        artifacts = compile_contracts()
        if "--check" in args:
            stale = stale_artifacts(artifacts)
            if stale:
                print(f"error: artifacts out of date: {', '.join(stale)} (run python -m coordinator.compile)",
                      file=sys.stderr)
                return 1
            print(f"artifacts up to date ({len(artifacts)} contracts)")
            return 0
        changed = write_artifacts(artifacts)
    except BsnsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"compiled {len(artifacts)} contracts into {ARTIFACTS_DIR.relative_to(ROOT)}; "
          f"changed: {', '.join(changed) if changed else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
