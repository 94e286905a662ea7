"""FedPeatLedger on eth-tester: emulator registration, the session's proposer and controller, attaching
emulators of the session's base model, one round plan per round by the controller, and every refusal;
plus the typed client (node.chain.clients.FedPeatLedgerClient) against the ABI."""

from __future__ import annotations

import pytest

from tests.support.evm import h, job_params, register
from .test_sessions import open_session, start

FAILED = 4
BASE = job_params()["baseModelHash"]
EMU = h("emulator r=0.5")


@pytest.fixture(scope="module")
def nodes(chain, system):
    accts = chain.accounts[1:5]
    for a in accts:
        register(system, a)
    return accts


@pytest.fixture(scope="module")
def ledger(chain, system):
    return chain.deploy("FedPeatLedger", system.sessions.address, system.governance.address)


@pytest.fixture
def session(system, nodes, ledger, snap):
    """An open session (proposed by accounts[0], 2 rounds) and a registered emulator of its base model."""
    sid = open_session(system, nodes)
    snap.tx(ledger.functions.registerEmulator(EMU, BASE, 5000, 1, 0, 0), snap.accounts[7])
    return sid


def test_constructor_refuses_zero_and_mismatched_contracts(chain, system, snap):
    zero = "0x" + "00" * 20
    with chain.reverts("ZeroAddress"):
        chain.deploy("FedPeatLedger", zero, system.governance.address)
    other = chain.deploy("TrainingSessions", system.registry.address, 5, 5, 1)
    with chain.reverts("GovernanceMismatch", system.sessions.address, other.address):
        chain.deploy("FedPeatLedger", other.address, system.governance.address)


def test_register_emulator_once_with_its_record_and_event(chain, ledger, snap):
    r = chain.tx(ledger.functions.registerEmulator(EMU, BASE, 2500, 2, 1, 150), chain.accounts[3])
    (ev,) = chain.events(ledger, "EmulatorRegistered", r)
    assert (ev["emulatorHash"], ev["baseModelHash"], ev["retentionBps"], ev["keptEachEnd"], ev["importanceRule"],
            ev["distillSteps"], ev["registrant"]) == (EMU, BASE, 2500, 2, 1, 150, chain.accounts[3])
    assert list(ledger.functions.getEmulator(EMU).call()) == [BASE, chain.accounts[3], r.blockNumber, 2500, 2, 1, 150]
    with chain.reverts("EmulatorAlreadyRegistered", EMU):
        chain.tx(ledger.functions.registerEmulator(EMU, BASE, 5000, 1, 0, 0), chain.accounts[4])
    assert ledger.functions.getEmulator(h("never")).call()[2] == 0


@pytest.mark.parametrize("args, error", [
    ((b"\0" * 32, BASE, 5000, 1, 0, 0), ("InvalidHash",)),
    ((EMU, b"\0" * 32, 5000, 1, 0, 0), ("InvalidEmulator", "baseModelHash")),
    ((EMU, BASE, 10_001, 1, 0, 0), ("InvalidEmulator", "retentionBps")),
    ((EMU, BASE, 5000, 0, 0, 0), ("InvalidEmulator", "keptEachEnd")),
    ((EMU, BASE, 5000, 1, 2, 0), ("InvalidEmulator", "importanceRule")),
])
def test_register_refuses_bad_fields_by_name(chain, ledger, snap, args, error):
    with chain.reverts(*error):
        chain.tx(ledger.functions.registerEmulator(*args), chain.accounts[0])
    assert ledger.functions.getEmulator(args[0]).call()[2] == 0


def test_controller_defaults_to_the_proposer_and_only_the_proposer_sets_it(chain, ledger, session):
    proposer, ctl, stranger = chain.accounts[0], chain.accounts[6], chain.accounts[8]
    assert ledger.functions.controllerOf(session).call() == proposer
    with chain.reverts("NotProposer", stranger, proposer):
        chain.tx(ledger.functions.setController(session, ctl), stranger)
    with chain.reverts("ZeroAddress"):
        chain.tx(ledger.functions.setController(session, "0x" + "00" * 20), proposer)
    r = chain.tx(ledger.functions.setController(session, ctl), proposer)
    assert chain.events(ledger, "ControllerSet", r) == [{"sessionId": session, "controller": ctl, "setBy": proposer}]
    assert ledger.functions.controllerOf(session).call() == ctl
    with chain.reverts("NotProposer", ctl, proposer):  # the controller cannot hand itself on
        chain.tx(ledger.functions.setController(session, stranger), ctl)
    with chain.reverts("UnknownSession", 99):
        ledger.functions.controllerOf(99).call()


def test_attach_by_proposer_or_controller_once_and_of_the_sessions_base_model(chain, ledger, session):
    proposer, ctl, stranger = chain.accounts[0], chain.accounts[6], chain.accounts[8]
    other = h("emulator r=0.25")
    chain.tx(ledger.functions.registerEmulator(other, BASE, 2500, 1, 0, 0), stranger)
    with chain.reverts("NotProposerOrController", stranger, session):
        chain.tx(ledger.functions.attachEmulator(session, EMU), stranger)
    r = chain.tx(ledger.functions.attachEmulator(session, EMU), proposer)
    assert chain.events(ledger, "EmulatorAttached", r) == [
        {"sessionId": session, "emulatorHash": EMU, "retentionBps": 5000, "by": proposer}]
    with chain.reverts("EmulatorAlreadyAttached", session, EMU):
        chain.tx(ledger.functions.attachEmulator(session, EMU), proposer)
    chain.tx(ledger.functions.setController(session, ctl), proposer)
    chain.tx(ledger.functions.attachEmulator(session, other), ctl)  # case 1: several emulators per session
    assert ledger.functions.attachedCount(session).call() == 2
    assert ledger.functions.isAttached(session, other).call() and not ledger.functions.isAttached(1, h("x")).call()

    with chain.reverts("UnknownEmulator", h("unregistered")):
        chain.tx(ledger.functions.attachEmulator(session, h("unregistered")), proposer)
    foreign = h("emulator of another model")
    chain.tx(ledger.functions.registerEmulator(foreign, h("another model"), 5000, 1, 0, 0), stranger)
    with chain.reverts("BaseModelMismatch", h("another model"), BASE):
        chain.tx(ledger.functions.attachEmulator(session, foreign), proposer)
    with chain.reverts("UnknownSession", 99):
        chain.tx(ledger.functions.attachEmulator(99, EMU), proposer)
    assert ledger.functions.attachedCount(session).call() == 2


def test_round_plan_once_per_round_by_the_controller_with_retentions_in_the_event(chain, ledger, session):
    proposer, ctl = chain.accounts[0], chain.accounts[6]
    plan1, plan2 = h("plan round 1"), h("plan round 2")
    r = chain.tx(ledger.functions.recordRoundPlan(session, 1, plan1, [5000, 0, 10000, 2500]), proposer)
    assert chain.events(ledger, "RoundPlanRecorded", r) == [
        {"sessionId": session, "round": 1, "planHash": plan1, "retentionBps": [5000, 0, 10000, 2500]}]
    assert ledger.functions.planHashOf(session, 1).call() == plan1
    with chain.reverts("PlanAlreadyRecorded", session, 1):
        chain.tx(ledger.functions.recordRoundPlan(session, 1, plan2, [5000]), proposer)
    chain.tx(ledger.functions.setController(session, ctl), proposer)
    with chain.reverts("NotController", proposer, ctl):  # once a controller is set, it alone records
        chain.tx(ledger.functions.recordRoundPlan(session, 2, plan2, [5000]), proposer)
    chain.tx(ledger.functions.recordRoundPlan(session, 2, plan2, []), ctl)
    assert ledger.functions.planHashOf(session, 2).call() == plan2
    assert ledger.functions.planHashOf(session, 1).call() == plan1  # untouched by the later round


@pytest.mark.parametrize("rnd, plan, retentions, error", [
    (0, h("p"), [5000], ("InvalidRound", 0, 2)),
    (3, h("p"), [5000], ("InvalidRound", 3, 2)),
    (1, b"\0" * 32, [5000], ("InvalidHash",)),
    (1, h("p"), [5000, 10_001], ("InvalidRetention", 1, 10_001)),
    (1, h("p"), [0] * 1025, ("TooManyDevices", 1025, 1024)),
])
def test_round_plan_refusals_store_nothing(chain, ledger, session, rnd, plan, retentions, error):
    with chain.reverts(*error):
        chain.tx(ledger.functions.recordRoundPlan(session, rnd, plan, retentions), chain.accounts[0])
    assert ledger.functions.planHashOf(session, 1).call() == b"\0" * 32


def test_stranger_and_unknown_and_failed_sessions_are_refused(chain, system, nodes, ledger, session):
    with chain.reverts("NotController", chain.accounts[8], chain.accounts[0]):
        chain.tx(ledger.functions.recordRoundPlan(session, 1, h("p"), [1]), chain.accounts[8])
    with chain.reverts("UnknownSession", 99):
        chain.tx(ledger.functions.recordRoundPlan(99, 1, h("p"), [1]), chain.accounts[0])
    failed = open_session(system, nodes, minReplicas=3)  # nobody joins: start() fails it
    start(system, failed)
    assert system.sessions.functions.getSession(failed).call()[-1] == FAILED
    for fn in (ledger.functions.recordRoundPlan(failed, 1, h("p"), [1]), ledger.functions.attachEmulator(failed, EMU),
               ledger.functions.setController(failed, chain.accounts[6])):
        with chain.reverts("SessionClosed", failed, FAILED):
            chain.tx(fn, chain.accounts[0])


def test_client_covers_the_abi_and_reads_what_was_written(chain, system, ledger, session):
    from dataclasses import fields

    from node.chain import clients as C
    from node.chain.artifacts import load_abi
    from node.chain.errors import ContractRevert, translate
    from node.vocab import EmulatorRule

    abi = load_abi("FedPeatLedger")
    names = [e["name"] for e in abi if e["type"] == "function"]
    assert [n for n in names if not callable(getattr(C.FedPeatLedgerClient, C.snake(n), None))] == []
    (entry,) = [e for e in abi if e.get("name") == "getEmulator"]
    assert [f.name for f in fields(C.EmulatorRecord)] == [C.snake(c["name"]) for c in entry["outputs"][0]["components"]]

    class Sender:  # the project's TxSender needs keys; eth-tester's unlocked accounts transact directly
        def send(self, fn, value=0, purpose=None, contract=None, wait=True):
            try:
                return chain.tx(fn, chain.accounts[0])
            except Exception as exc:  # what TxSender does with a revert: name the custom error
                raise translate(exc, contract) from None

    client = C.FedPeatLedgerClient(chain.w3, ledger.address, Sender())
    rec = client.get_emulator(EMU)
    assert (rec.base_model_hash, rec.retention_bps, rec.kept_each_end) == ("0x" + BASE.hex(), 5000, 1)
    assert client.get_emulator(h("nothing")) is None
    assert client.plan_hash_of(session, 1) is None
    client.record_round_plan(session, 1, "0x" + h("p").hex(), [C.retention_bps(0.75), C.retention_bps(None)])
    assert client.plan_hash_of(session, 1) == "0x" + h("p").hex()
    with pytest.raises(ContractRevert, match="PlanAlreadyRecorded"):
        client.record_round_plan(session, 1, "0x" + h("q").hex(), [])
    assert client.controller_of(session) == chain.accounts[0]
    # the Python side's copies: the basis-point unit and the emulator rules (node.vocab)
    assert (client.bps(), client.max_rule(), client.max_devices()) == (C.BPS, len(EmulatorRule) - 1, 1024)
    assert client.sessions() == system.sessions.address
