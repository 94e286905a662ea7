"""The contracts' enums and the Python lists of the same codes are one list: same words, same order.

A uint8 on chain means a word in Python: ``node.vocab``'s lists (data distribution, aggregation rule, device
kind, emulator rule) and the clients' IntEnums (node status, session state, fault, proposal state) must name
the codes as the Solidity enums in ``contracts/interfaces`` do. The ABI carries only ``uint8``, so the
Solidity side is parsed from the sources; the parser is tried on snippets too, a wrong one included, so the
comparison is known to fail when the two drift.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

import pytest

from node import vocab
from node.chain.clients import Fault, NodeStatus, ProposalState, SessionState

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"

# Python list -> "<file stem>.<enum>" declaring the same codes
MIRRORS: list[tuple[type[Enum], str]] = [
    (vocab.Distribution, "IFineTuneGovernance.Distribution"),
    (vocab.Aggregation, "IFineTuneGovernance.Aggregation"),
    (vocab.ServerUpdate, "IFineTuneGovernance.ServerUpdate"),
    (vocab.DeviceKind, "INodeRegistry.DeviceKind"),
    (vocab.EmulatorRule, "IFedPeatLedger.EmulatorRule"),
    (NodeStatus, "INodeRegistry.Status"),
    (SessionState, "ITrainingSessions.State"),
    (Fault, "ITrainingSessions.Fault"),
    (ProposalState, "IFineTuneGovernance.ProposalState"),
]
# node.vocab lists that have no on-chain code, and why
NOT_ON_CHAIN = {vocab.Task: "JobParams.task is a string"}

_ENUM = re.compile(r"\benum\s+(\w+)\s*\{([^}]*)\}")
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def solidity_enums(source: str) -> dict[str, list[str]]:
    """``{enum name: members in declaration order}`` of one Solidity source."""
    body = _COMMENT.sub(" ", source)
    return {m.group(1): [w.strip() for w in m.group(2).split(",") if w.strip()] for m in _ENUM.finditer(body)}


def declared_enums() -> dict[str, list[str]]:
    """Every enum of the project's contracts, as ``"<file stem>.<enum>"``."""
    out = {}
    for path in sorted(CONTRACTS.rglob("*.sol")):
        for name, members in solidity_enums(path.read_text(encoding="utf-8")).items():
            out[f"{path.stem}.{name}"] = members
    return out


def _norm(word: str) -> str:
    return re.sub(r"[^a-z0-9]", "", word.lower())


def python_words(cls: type[Enum]) -> list[str]:
    """The words of a Python list in code order: a Vocab's values (``trimmed-mean``), an IntEnum's names."""
    members = sorted(cls, key=lambda m: m.value) if issubclass(cls, int) else list(cls)
    return [m.value if isinstance(m, vocab.Vocab) else m.name for m in members]


def mismatch(python: list[str], solidity: list[str]) -> str | None:
    """None when both name the same codes (``TrimmedMean`` is ``trimmed-mean``); else the difference."""
    if [_norm(w) for w in python] == [_norm(w) for w in solidity]:
        return None
    rows = [f"{code}: {p!r} vs {s!r}" for code, (p, s) in
            enumerate(zip(python + [None] * len(solidity), solidity + [None] * len(python)))
            if (p is None or s is None or _norm(p) != _norm(s)) and (p, s) != (None, None)]
    return "; ".join(rows)


@pytest.mark.parametrize("cls, where", MIRRORS, ids=[w for _, w in MIRRORS])
def test_python_list_and_solidity_enum_name_the_same_codes(cls, where):
    enums = declared_enums()
    assert where in enums, f"{where} is not declared in contracts/"
    assert mismatch(python_words(cls), enums[where]) is None, f"{cls.__name__} vs {where}"


def test_every_list_has_a_mirror_or_a_reason():
    lists = {c for c in vars(vocab).values()
             if isinstance(c, type) and issubclass(c, vocab.Vocab) and c is not vocab.Vocab}
    mirrored = {c for c, _ in MIRRORS}
    assert lists - mirrored == set(NOT_ON_CHAIN)
    assert set(declared_enums()) == {w for _, w in MIRRORS}, "a contract enum without its Python list"


def test_the_registry_leaves_room_for_every_known_device_kind():
    """NodeRegistry accepts codes up to MAX_DEVICE_KIND (kinds newer than the contract), so every kind
    node.vocab knows must be below it."""
    src = (CONTRACTS / "NodeRegistry.sol").read_text(encoding="utf-8")
    (bound,) = re.findall(r"MAX_DEVICE_KIND\s*=\s*(\d+)\s*;", src)
    assert len(vocab.DeviceKind) - 1 <= int(bound)


# -- the parser and the comparison, on snippets ------------------------------------------------------

def test_parser_reads_members_in_order_past_comments():
    src = """
    interface I {
        /// @notice not { an enum }
        enum Aggregation {
            FedAvg, // the mean
            Median /* robust */,
            TrimmedMean,
            GeometricMedian,
            NormClip
        }
        enum Empty {}
    }
    """
    assert solidity_enums(src) == {"Aggregation": ["FedAvg", "Median", "TrimmedMean", "GeometricMedian", "NormClip"],
                                   "Empty": []}
    assert mismatch(python_words(vocab.Aggregation), solidity_enums(src)["Aggregation"]) is None


@pytest.mark.parametrize("snippet, expected", [
    ("enum Aggregation { Median, FedAvg, TrimmedMean, GeometricMedian }", "0: 'fedavg' vs 'Median'"),  # reordered
    ("enum Aggregation { FedAvg, Median, GeometricMedian }", "2: 'trimmed-mean' vs 'GeometricMedian'"),  # missing
    ("enum Aggregation { FedAvg, Median, TrimmedMean, GeometricMedian, NormClip, Krum }", "5: None vs 'Krum'"),
    ("enum Aggregation { FedAvg, Median, Trimmed, GeometricMedian }", "2: 'trimmed-mean' vs 'Trimmed'"),  # renamed
])
def test_a_drifted_enum_is_caught(snippet, expected):
    (members,) = solidity_enums(snippet).values()
    diff = mismatch(python_words(vocab.Aggregation), members)
    assert diff is not None and expected in diff


def test_intenum_words_are_their_names_in_code_order():
    assert python_words(Fault) == ["NONE", "WRONG_HASH", "MISSING"]
    assert mismatch(python_words(Fault), ["None", "WrongHash", "Missing"]) is None
    assert mismatch(python_words(Fault), ["None", "Missing", "WrongHash"]) is not None


@pytest.mark.parametrize("name,value", [("SESSION_MAX_SHARDS", vocab.MAX_SHARDS),
                                        ("SESSION_MAX_REPLICAS", vocab.MAX_REPLICAS)])
def test_session_limits_are_the_contracts(name, value):
    """The job spec's bounds on shards and replicas are the numbers TrainingSessions enforces."""
    source = (CONTRACTS / "interfaces" / "ITrainingSessions.sol").read_text(encoding="utf-8")
    m = re.search(rf"\bconstant\s+{name}\s*=\s*([0-9_]+)\s*;", _COMMENT.sub(" ", source))
    assert m is not None, f"{name} is not declared in ITrainingSessions.sol"
    assert int(m.group(1).replace("_", "")) == value


def test_chain_uint_bounds_are_the_abi_widths():
    """CHAIN_UINT_MAX names every wide integer of JobParams with the largest value its ABI type holds."""
    from node.chain.artifacts import load_abi

    propose = next(f for f in load_abi("FineTuneGovernance") if f.get("name") == "propose")
    (params,) = [i for i in propose["inputs"] if i["type"] == "tuple"]
    widths = {}
    for c in params["components"]:
        m = re.fullmatch(r"uint(\d+)(\[\])?", c["type"])
        if m and int(m.group(1)) > 8:  # uint8 fields are enum codes, bounded by their word lists
            widths[c["name"]] = 2 ** int(m.group(1)) - 1
    assert widths == vocab.CHAIN_UINT_MAX


def test_job_bounds_are_the_contracts():
    """node.vocab.JOB_MAX (what the spec validator applies) names the JOB_MAX_* constants of the governance
    interface (what propose enforces) with the same numbers, and no constant is left without its entry."""
    source = _COMMENT.sub(" ", (CONTRACTS / "interfaces" / "IFineTuneGovernance.sol").read_text(encoding="utf-8"))
    declared = {m.group(1): int(m.group(2).replace("_", ""))
                for m in re.finditer(r"\bconstant\s+JOB_MAX_(\w+)\s*=\s*([0-9_]+)\s*;", source)}
    ours = {re.sub(r"(?<!^)(?=[A-Z])", "_", field).upper(): value for field, value in vocab.JOB_MAX.items()}
    assert declared == ours


def test_the_spec_validator_applies_the_job_bounds():
    """Each JOB_MAX bound is where the validator stops: at the bound a spec passes, one over it names the field."""
    from node.job import JobSpec, SpecError
    from tests.test_job import GOOD

    cases = {"rounds": ("rounds = 3", "rounds = {}", 1),
             "syncInterval": ("sync_interval = 10", "sync_interval = {}", 1),
             "seed": ("seed = 7", "seed = {}", 1),
             "learningRateE9": ("learning_rate = 1e-3", "learning_rate = {}", 1e-9)}
    assert set(cases) == set(vocab.JOB_MAX)
    for field, (old, new, step) in cases.items():
        top = vocab.JOB_MAX[field] * (1e-9 if field == "learningRateE9" else 1)
        at = JobSpec.from_text(GOOD.replace(old, new.format(top)))
        assert at.to_chain_params()[field] == vocab.JOB_MAX[field]
        with pytest.raises(SpecError):
            JobSpec.from_text(GOOD.replace(old, new.format(top + step)))
