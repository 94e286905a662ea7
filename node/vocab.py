"""The project's word lists, each defined once: what a job spec, the chain, the daemon and the trainer call
the same thing.

Each list is a ``StrEnum`` whose order is its on-chain code (the ``uint8`` a contract stores), so the name a
spec uses, the code the chain stores and the strategy the trainer runs are one fact. The contracts mirror
these lists as Solidity enums (``contracts/interfaces``); ``tests/test_vocab_mirror.py`` compares the two.
PEFT method names are not here: each tuner registers itself (``node.tuners.registry``) with its properties.

It also holds the session limits a job spec must respect because the contracts enforce them
(``MAX_SHARDS``, ``MAX_REPLICAS``; ``contracts/interfaces/ITrainingSessions.sol`` declares the same numbers) and
the widths of the job parameters' integers on chain (``CHAIN_UINT_MAX``) and the tighter bounds the governance
contract puts on some of them (``JOB_MAX``).

A leaf module: it imports nothing of the project but ``node.errors``.
"""

from __future__ import annotations

from enum import StrEnum

from node.errors import BsnsError


#: most shards of one session, and most replicas of one shard (SESSION_MAX_SHARDS / SESSION_MAX_REPLICAS on chain)
MAX_SHARDS = 64
MAX_REPLICAS = 1024

#: the largest values JobParams' integer fields hold on chain (IFineTuneGovernance.JobParams: uint16 layerBounds,
#: uint32 shardMemoryMB, syncInterval, rounds and distributionParam, uint64 learningRateE9 and seed). The spec
#: validator bounds each field by them, so an overflow is a spec error naming the field, not a web3 traceback;
#: tests/test_vocab_mirror.py reads the widths from the ABI.
CHAIN_UINT_MAX = {
    "layerBounds": 2**16 - 1,
    "shardMemoryMB": 2**32 - 1,
    "distributionParam": 2**32 - 1,
    "syncInterval": 2**32 - 1,
    "rounds": 2**32 - 1,
    "minReplicas": 2**16 - 1,
    "learningRateE9": 2**64 - 1,
    "seed": 2**64 - 1,
}

#: bounds on JobParams beyond their widths, keyed by the struct's field names: the contract refuses a value over
#: them with InvalidParam(field) (JOB_MAX_* in contracts/interfaces/IFineTuneGovernance.sol, compared with these by
#: tests/test_vocab_mirror.py), and the spec validator applies the same numbers, so the two never disagree.
#: Rounds and the sync interval bound how long a session lasts and what one round asks of a node.
JOB_MAX = {
    "rounds": 100_000,
    "syncInterval": 1_000_000,
    "learningRateE9": 1_000_000_000,
    "seed": 2**63 - 1,
}


class UnknownWord(BsnsError, ValueError):
    """A name or code that is not in the word list; the message lists what is."""


class Vocab(StrEnum):
    """A word list: members in on-chain code order; ``LABEL`` names the list in error messages."""

    @classmethod
    def label(cls) -> str:
        return cls.__doc__.split(":")[0].strip() if cls.__doc__ else cls.__name__

    @property
    def code(self) -> int:
        """The on-chain ``uint8`` of this word."""
        return list(type(self)).index(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)

    @classmethod
    def parse(cls, value: "int | str | Vocab"):
        """The member for a name or an on-chain code; ``UnknownWord`` otherwise."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                raise UnknownWord(f"unknown {cls.label()} {value!r}; expected one of {', '.join(cls.names())}") from None
        members = list(cls)
        if isinstance(value, int) and 0 <= value < len(members):
            return members[value]
        codes = ", ".join(f"{i} ({m.value})" for i, m in enumerate(members))
        raise UnknownWord(f"unknown {cls.label()} code {value!r}; expected one of {codes}")


class Distribution(Vocab):
    """data distribution: how a session's training set is split among the replicas of a shard."""

    IID = "iid"
    DIRICHLET = "dirichlet"
    CONTIGUOUS = "contiguous"


class Aggregation(Vocab):
    """aggregation rule: how the replicas of a shard combine their updates each round."""

    FEDAVG = "fedavg"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed-mean"
    GEOMETRIC_MEDIAN = "geometric-median"
    NORM_CLIP = "norm-clip"


class ServerUpdate(Vocab):
    """server update: how a round's aggregate becomes the round's final adapter (node.train.server)."""

    NONE = "none"
    FEDAVGM = "fedavgm"


class DeviceKind(Vocab):
    """device kind: what a node trains on, as registered in the NodeRegistry."""

    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class Task(Vocab):
    """task: what the model is trained to do (and so its head and loss)."""

    SEQUENCE_CLASSIFICATION = "sequence-classification"
    CAUSAL_LM = "causal-lm"


class EmulatorRule(Vocab):
    """emulator rule: how a FedPEAT emulator chooses which middle layers to keep."""

    UNIFORM = "uniform"
    IMPORTANCE = "importance"
