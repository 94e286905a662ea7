"""A FedPEAT run on chain: its emulators registered in FedPeatLedger and attached to the session, and each
round's plan (per-device retention, 0 = sits out) recorded with the plan hash the runner keeps locally.

Owns the mapping from the runner's records (coordinator.fedpeat.harness) to FedPeatLedger calls
(node.chain.clients.FedPeatLedgerClient). Everything that can be refused is checked before training starts
(`check`): the deployment has a ledger, the session is open and ours to record (this account is its
controller), it has enough rounds and none of them has a plan yet, and the run's model is the session's base
model (same weights hash). Plans are recorded at the end of each round, before the next one starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from node.errors import BsnsError


class FedPeatChainError(BsnsError):
    """The FedPEAT run cannot be recorded in the given session."""


def emulator_retentions(cfg) -> list[float]:
    """The retentions whose emulators a run may use: every option in case 1 (the memory guard may fall back
    to any smaller option), the shared one in case 2, none in case 3 and Fed-FT (the full model)."""
    if cfg.strategy == "fedft" or cfg.case == 3:
        return []
    if cfg.case == 2:
        return [cfg.shared_retention]
    return list(cfg.options)


def plan_retentions(record: dict) -> list[int]:
    """The round's per-device retentions in basis points (0 = sits out), devices in order; the server's own
    training (``device: "server"``) is part of the plan hash, not of this list."""
    from node.chain.clients import retention_bps

    return [retention_bps(c["retention"]) for c in record["choices"] if c["device"] != "server"]


@dataclass
class ChainRecorder:
    """Records one run's emulators and round plans in ``session_id`` through ``ledger`` (a client with a sender)."""

    ledger: object  # node.chain.clients.FedPeatLedgerClient
    sessions: object  # node.chain.clients.SessionsClient
    governance: object  # node.chain.clients.GovernanceClient
    session_id: int
    log: object = None
    emulators: dict = field(default_factory=dict)  # emulator hash -> retention
    plans: dict = field(default_factory=dict)  # round -> (plan hash, tx hash)
    base_model_hash: str | None = None  # set by check()

    @classmethod
    def from_clients(cls, clients, session_id: int, log=None) -> "ChainRecorder":
        if clients.fedpeat is None:
            raise FedPeatChainError(f"deployment on chain {clients.deployment.chain_id} has no FedPeatLedger: "
                                    f"deploy again (`bsns deploy`) to record FedPEAT runs")
        return cls(clients.fedpeat, clients.sessions, clients.governance, session_id, log)

    def _log(self, msg: str) -> None:
        if self.log:
            self.log(msg)

    def check(self, cfg, model_id: str) -> str:
        """Refuse before any training: the session must be open, ours to record, long enough and of this
        model. Returns the base model's weights hash."""
        from node.model import weights_hash
        from node.chain.clients import SessionState

        info = self.sessions.get_session(self.session_id)
        if info.state == SessionState.NONE:
            raise FedPeatChainError(f"session {self.session_id} does not exist")
        if info.state not in (SessionState.JOINING, SessionState.TRAINING):
            raise FedPeatChainError(f"session {self.session_id} is {info.state.name.lower()}: plans can no longer "
                                    f"be recorded")
        if cfg.rounds > info.rounds:
            raise FedPeatChainError(f"the run has {cfg.rounds} rounds but session {self.session_id} only {info.rounds}")
        recorded = [t for t in range(1, cfg.rounds + 1) if self.ledger.plan_hash_of(self.session_id, t)]
        if recorded:  # once per round on chain: a rerun would train and then be refused
            raise FedPeatChainError(f"session {self.session_id} already has plans for rounds {recorded}")
        me = self.ledger.sender.address
        controller = self.ledger.controller_of(self.session_id)
        if controller != me:
            raise FedPeatChainError(f"account {me} is not the controller of session {self.session_id} "
                                    f"({controller}): use the proposer's account or have it set this one")
        session_base = self.governance.get_params(info.proposal_id).base_model_hash
        base = weights_hash(model_id)
        if base != session_base:
            raise FedPeatChainError(f"model {model_id!r} (weights {base}) is not session {self.session_id}'s base "
                                    f"model ({session_base})")
        self.base_model_hash = base
        return base

    def attach_emulators(self, work, cfg) -> None:
        """Register (if new) and attach (if not yet) every emulator the run may use; after ``check``."""
        self.attach_built([(r, work.emulator(r)) for r in emulator_retentions(cfg)], work.cfg.k)

    def attach_built(self, emulators: list, k: int) -> None:
        """Register (if new) and attach (if not yet) built emulators, given as (retention, Emulator) pairs
        (a Workload's, or ``emulator_for_spec``'s for a daemon-run session); after ``check``."""
        from node.chain.clients import retention_bps

        base = self.base_model_hash
        for r, emu in emulators:
            h, m = emu.hash(), emu.manifest
            rec = self.ledger.get_emulator(h)
            if rec is None:
                res = self.ledger.register_emulator(h, base, retention_bps(m.retention), k, m.rule, m.distill_steps)
                self._log(f"emulator {h[:18]}… (retention {r}) registered in block {res.block_number}")
            elif rec.base_model_hash != base:  # a hash collision in practice cannot happen; a wrong base can
                raise FedPeatChainError(f"emulator {h} is registered for base model {rec.base_model_hash}")
            if not self.ledger.is_attached(self.session_id, h):
                res = self.ledger.attach_emulator(self.session_id, h)
                self._log(f"emulator {h[:18]}… attached to session {self.session_id} in block {res.block_number}")
            self.emulators[h] = r

    def record(self, record: dict) -> None:
        """``run_fedpeat``'s ``on_round``: put the round's plan hash and retentions on chain."""
        for c in record["choices"]:
            tag = c.get("emulator")
            if c["retention"] is not None and tag not in (None, "full") and tag not in self.emulators:
                raise FedPeatChainError(f"round {record['round']}: device {c['device']} used emulator {tag}, "
                                        f"which is not attached to session {self.session_id}")
        res = self.ledger.record_round_plan(self.session_id, record["round"], record["plan_hash"],
                                            plan_retentions(record))
        self.plans[record["round"]] = (record["plan_hash"], res.hash)
        self._log(f"round {record['round']}: plan {record['plan_hash'][:18]}… recorded in session "
                  f"{self.session_id}, block {res.block_number}")


def verify_plans(ledger, session_id: int, records: list[dict]) -> list[str]:
    """Differences between local round records and the plan hashes on chain (empty: they agree)."""
    problems = []
    for rec in records:
        on_chain = ledger.plan_hash_of(session_id, rec["round"])
        if on_chain != rec["plan_hash"]:
            problems.append(f"round {rec['round']}: local plan {rec['plan_hash']}, on chain {on_chain}")
    return problems


def load_records(path) -> list[dict]:
    """The JSON-lines round records a run wrote (``--record``); one-line error if unreadable."""
    from pathlib import Path

    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise FedPeatChainError(f"cannot read the round records {path}: {exc.strerror or exc}") from None
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            int(rec["round"]), str(rec["plan_hash"])
        except (ValueError, KeyError, TypeError):
            raise FedPeatChainError(f"{path}:{i}: not a FedPEAT round record (round, plan_hash)") from None
        records.append(rec)
    if not records:
        raise FedPeatChainError(f"{path} holds no round records")
    return records
