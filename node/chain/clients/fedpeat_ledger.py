"""The FedPeatLedger client: FedPEAT's emulators by content hash, the emulators a session uses and the
controller's per-round plans (the retentions travel in events, which this client reads back)."""

from __future__ import annotations

from dataclasses import dataclass

from node.chain.clients.base import ContractClient, b32, hash_or_none, hex32
from node.chain.errors import ChainError
from node.vocab import EmulatorRule, UnknownWord

#: Basis points of a whole, the unit of every retention: ``FedPeatLedger.BPS`` (the contract tests check
#: that the deployed ledger says the same).
BPS = 10_000


def retention_bps(retention: float | None) -> int:
    """A retention ratio in basis points as the ledger stores it; None (sits out) is 0."""
    if retention is None:
        return 0
    if not 0.0 <= float(retention) <= 1.0:
        raise ChainError(f"retention must be in [0, 1], got {retention}")
    return round(float(retention) * BPS)


@dataclass(frozen=True)
class EmulatorRecord:
    """``IFedPeatLedger.Emulator`` (``getEmulator``); ``importance_rule`` is a ``node.vocab.EmulatorRule`` code."""

    base_model_hash: str
    registrant: str = ""
    registered_block: int = 0
    retention_bps: int = 0
    kept_each_end: int = 0
    importance_rule: int = 0
    distill_steps: int = 0


@dataclass(frozen=True)
class RoundPlan:
    """A round's plan as recorded (``RoundPlanRecorded``): per device (replica), the retention in basis points."""

    round: int
    plan_hash: str
    retention_bps: tuple[int, ...]
    block_number: int


@dataclass(frozen=True)
class AttachedEmulator:
    """An emulator attached to a session (``EmulatorAttached``), in the order of attachment."""

    emulator_hash: str
    retention_bps: int
    by: str
    block_number: int


class FedPeatLedgerClient(ContractClient):
    NAME = "FedPeatLedger"

    def register_emulator(self, emulator_hash: str | bytes, base_model_hash: str | bytes, retention_bps: int,
                          kept_each_end: int, importance_rule: int | str, distill_steps: int):
        if isinstance(importance_rule, str):
            try:
                importance_rule = EmulatorRule.parse(importance_rule).code
            except UnknownWord as exc:
                raise ChainError(str(exc)) from None
        return self._send("registerEmulator", b32(emulator_hash), b32(base_model_hash), retention_bps,
                          kept_each_end, importance_rule, distill_steps)

    def set_controller(self, session_id: int, controller: str):
        return self._send("setController", session_id, controller)

    def attach_emulator(self, session_id: int, emulator_hash: str | bytes):
        return self._send("attachEmulator", session_id, b32(emulator_hash))

    def record_round_plan(self, session_id: int, round: int, plan_hash: str | bytes, retention_bps: list[int]):
        return self._send("recordRoundPlan", session_id, round, b32(plan_hash), list(retention_bps))

    # views
    def get_emulator(self, emulator_hash: str | bytes) -> EmulatorRecord | None:
        """The emulator's record, or None if that hash is not registered."""
        rec = self._read(EmulatorRecord, "getEmulator", b32(emulator_hash))
        return rec if rec.registered_block else None

    def is_attached(self, session_id: int, emulator_hash: str | bytes) -> bool:
        return self._call("isAttached", session_id, b32(emulator_hash))

    def attached_count(self, session_id: int) -> int:
        return self._call("attachedCount", session_id)

    def controller_of(self, session_id: int) -> str:
        return self._call("controllerOf", session_id)

    def plan_hash_of(self, session_id: int, round: int) -> str | None:
        return hash_or_none(self._call("planHashOf", session_id, round))

    # events: the retentions of a plan and the attached emulators live only there
    def round_plan(self, session_id: int, round: int, from_block: int = 0) -> RoundPlan | None:
        """The plan recorded for a (1-based) ledger round, or None while there is none. ``from_block``: where
        to start looking (the session's opened block keeps the log range narrow)."""
        h = self.plan_hash_of(session_id, round)
        if h is None:
            return None
        for lg in self.logs("RoundPlanRecorded", from_block, "latest", sessionId=session_id, round=round):
            a = lg["args"]
            if int(a["sessionId"]) == session_id and int(a["round"]) == round and hex32(a["planHash"]) == h:
                return RoundPlan(round, h, tuple(int(x) for x in a["retentionBps"]), int(lg["blockNumber"]))
        raise ChainError(f"FedPeatLedger has plan {h} for session {session_id} round {round} but no "
                         f"RoundPlanRecorded event after block {from_block}")

    def attached_emulators(self, session_id: int, from_block: int = 0) -> list[AttachedEmulator]:
        """The emulators attached to a session, in the order they were attached."""
        logs = self.logs("EmulatorAttached", from_block, "latest", sessionId=session_id)
        logs = sorted(logs, key=lambda lg: (lg["blockNumber"], lg["logIndex"]))
        return [AttachedEmulator(hex32(lg["args"]["emulatorHash"]), int(lg["args"]["retentionBps"]),
                                 lg["args"]["by"], int(lg["blockNumber"]))
                for lg in logs if int(lg["args"]["sessionId"]) == session_id]

    def sessions(self) -> str:
        return self._call("sessions")

    def governance(self) -> str:
        return self._call("governance")

    def bps(self) -> int:
        return self._call("BPS")

    def max_rule(self) -> int:
        return self._call("MAX_RULE")

    def max_devices(self) -> int:
        return self._call("MAX_DEVICES")
