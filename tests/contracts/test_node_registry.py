"""NodeRegistry: register/update/exit/withdraw, start-of-block totals, slashing only by the slasher."""

from __future__ import annotations

from tests.support.evm import EXIT_DELAY, MIN_STAKE, PEER_ID, SLASH, register

ACTIVE, EXITING, WITHDRAWN = 1, 2, 3


def test_register_stores_node_and_counts_it(system, snap):
    c, reg = snap, system.registry
    a = c.accounts[1]
    r = register(system, a, memory_mb=8192, stake=2 * MIN_STAKE, device=1, throughput=250)
    info = reg.functions.getNode(a).call()
    assert tuple(info) == (PEER_ID, "/ip4/127.0.0.1/tcp/4001", 8192, 1, 250, 2 * MIN_STAKE, r.blockNumber, 0, ACTIVE)
    assert list(reg.functions.eligibility(a).call()) == [2 * MIN_STAKE, r.blockNumber, ACTIVE, 8192]
    assert reg.functions.isActive(a).call()
    assert reg.functions.registeredAtBlock(a).call() == r.blockNumber
    assert reg.functions.activeCount().call() == 1
    assert reg.functions.totalActiveStake().call() == 2 * MIN_STAKE
    assert reg.functions.nodeCount().call() == 1 and reg.functions.nodeAt(0).call() == a
    (ev,) = c.events(reg, "NodeRegistered", r)
    assert ev["node"] == a and ev["stake"] == 2 * MIN_STAKE and ev["memoryMB"] == 8192
    assert c.w3.eth.get_balance(reg.address) == 2 * MIN_STAKE


def test_register_refusals(system, snap):
    c, reg = snap, system.registry
    a = c.accounts[1]
    with c.reverts("StakeTooLow", MIN_STAKE - 1, MIN_STAKE):
        register(system, a, stake=MIN_STAKE - 1)
    with c.reverts("InvalidNodeInfo", "peerId"):
        register(system, a, peer_id=b"")
    with c.reverts("InvalidNodeInfo", "peerId"):
        register(system, a, peer_id=b"\x01" * 129)
    with c.reverts("InvalidNodeInfo", "announceAddr"):
        register(system, a, addr="")
    with c.reverts("InvalidNodeInfo", "memoryMB"):
        register(system, a, memory_mb=0)
    with c.reverts("InvalidNodeInfo", "deviceKind"):
        register(system, a, device=16)
    assert reg.functions.nodeCount().call() == 0 and c.w3.eth.get_balance(reg.address) == 0
    register(system, a)
    with c.reverts("AlreadyRegistered", a):
        register(system, a)
    assert reg.functions.activeCount().call() == 1


def test_update_changes_profile_not_stake(system, snap):
    c, reg = snap, system.registry
    a = c.accounts[1]
    r0 = register(system, a)
    r = c.tx(reg.functions.update(b"\x09" * 10, "/ip4/10.0.0.1/tcp/9", 16000, 1, 999), a)
    info = reg.functions.getNode(a).call()
    assert info[0] == b"\x09" * 10 and info[1] == "/ip4/10.0.0.1/tcp/9" and list(info[2:5]) == [16000, 1, 999]
    assert info[5] == MIN_STAKE and info[6] == r0.blockNumber
    assert c.events(reg, "NodeUpdated", r)[0]["memoryMB"] == 16000
    with c.reverts("InvalidNodeInfo", "memoryMB"):
        c.tx(reg.functions.update(b"\x09", "/x", 0, 1, 1), a)
    with c.reverts("NotActive", c.accounts[2]):
        c.tx(reg.functions.update(b"\x09", "/x", 1, 1, 1), c.accounts[2])


def test_exit_then_withdraw_after_delay(system, snap):
    c, reg = snap, system.registry
    a, b = c.accounts[1], c.accounts[2]
    register(system, a, stake=3 * MIN_STAKE)
    register(system, b)
    with c.reverts("NotExiting", a):
        c.tx(reg.functions.withdraw(), a)
    r = c.tx(reg.functions.requestExit(), a)
    available = c.events(reg, "ExitRequested", r)[0]["availableAt"]
    assert available == c.w3.eth.get_block(r.blockNumber)["timestamp"] + EXIT_DELAY
    assert not reg.functions.isActive(a).call()
    assert reg.functions.activeCount().call() == 1 and reg.functions.totalActiveStake().call() == MIN_STAKE
    with c.reverts("NotActive", a):
        c.tx(reg.functions.requestExit(), a)
    with c.reverts("AlreadyRegistered", a):
        register(system, a)
    with c.reverts("ExitDelayNotPassed"):
        c.tx(reg.functions.withdraw(), a)
    c.time_travel(EXIT_DELAY + 1)
    before = c.w3.eth.get_balance(a)
    r = c.tx(reg.functions.withdraw(), a)
    fee = r.gasUsed * r.effectiveGasPrice
    assert c.w3.eth.get_balance(a) == before + 3 * MIN_STAKE - fee
    assert c.events(reg, "Withdrawn", r)[0]["amount"] == 3 * MIN_STAKE
    assert list(reg.functions.eligibility(a).call())[0:3:2] == [0, WITHDRAWN]
    with c.reverts("NotExiting", a):
        c.tx(reg.functions.withdraw(), a)
    # a withdrawn node may come back; it is listed once
    r2 = register(system, a)
    assert reg.functions.registeredAtBlock(a).call() == r2.blockNumber
    assert reg.functions.nodeCount().call() == 2


def test_slasher_set_once_by_owner(system, chain):
    # module system is already wired: a second set fails, as does anyone but the owner
    c, reg = chain, system.registry
    with c.reverts("OwnableUnauthorizedAccount", c.accounts[1]):
        c.tx(reg.functions.setSlasher(c.accounts[1]), c.accounts[1])
    with c.reverts("SlasherAlreadySet", system.sessions.address):
        c.tx(reg.functions.setSlasher(c.accounts[1]), system.owner)
    assert reg.functions.slasher().call() == system.sessions.address


def test_slash_only_by_slasher_and_deactivates_below_min_stake(chain):
    from tests.support.evm import deploy_system

    c = chain
    sid = c.tester.take_snapshot()
    try:
        s = deploy_system(c)
        reg = c.deploy("NodeRegistry", MIN_STAKE, EXIT_DELAY)
        slasher, node, other = c.accounts[5], c.accounts[1], c.accounts[2]
        with c.reverts("ZeroAddress"):
            c.tx(reg.functions.setSlasher("0x" + "00" * 20), c.accounts[0])
        c.tx(reg.functions.setSlasher(slasher), c.accounts[0])
        register(s, node)  # the system's registry is not this one: register here directly
        c.tx(reg.functions.register(PEER_ID, "/a", 100, 0, 0), node, value=MIN_STAKE + SLASH)
        c.tx(reg.functions.register(PEER_ID, "/a", 100, 0, 0), other, value=MIN_STAKE)
        with c.reverts("NotSlasher", node):
            c.tx(reg.functions.slash(other, SLASH), node)
        with c.reverts("NothingToSlash", c.accounts[7]):
            c.tx(reg.functions.slash(c.accounts[7], SLASH), slasher)
        # first slash leaves exactly the minimum: still active
        r = c.tx(reg.functions.slash(node, SLASH), slasher)
        ev = c.events(reg, "Slashed", r)[0]
        assert (ev["amount"], ev["remainingStake"], ev["deactivated"]) == (SLASH, MIN_STAKE, False)
        assert reg.functions.isActive(node).call() and reg.functions.totalActiveStake().call() == 2 * MIN_STAKE
        # second slash drops it below: it stops being active, the rest is withdrawable later
        r = c.tx(reg.functions.slash(node, SLASH), slasher)
        assert c.events(reg, "Slashed", r)[0]["deactivated"] is True
        assert not reg.functions.isActive(node).call()
        assert reg.functions.activeCount().call() == 1 and reg.functions.totalActiveStake().call() == MIN_STAKE
        # a slash larger than the stake takes what is left
        r = c.tx(reg.functions.slash(node, 10 * MIN_STAKE), slasher)
        assert c.events(reg, "Slashed", r)[0]["amount"] == MIN_STAKE - SLASH
        assert reg.functions.slashedBalance().call() == MIN_STAKE + SLASH
        with c.reverts("NothingToSlash", node):
            c.tx(reg.functions.slash(node, 1), slasher)
        # the owner sweeps the slashed wei
        with c.reverts("OwnableUnauthorizedAccount", node):
            c.tx(reg.functions.sweepSlashed(node), node)
        to = c.accounts[8]
        before = c.w3.eth.get_balance(to)
        c.tx(reg.functions.sweepSlashed(to), c.accounts[0])
        assert c.w3.eth.get_balance(to) == before + MIN_STAKE + SLASH
        with c.reverts("NothingToSweep"):
            c.tx(reg.functions.sweepSlashed(to), c.accounts[0])
        with c.reverts("IndexOutOfRange", 5, 2):
            reg.functions.nodeAt(5).call()
    finally:
        c.tester.revert_to_snapshot(sid)


def test_deploy_bounds_and_stake_locks(system, snap):
    """A zero minimum stake only on the dev chain (31337; eth-tester is not it), an exit delay that cannot wrap
    the uint40 unlock time, and stake locks that only the slasher (TrainingSessions) moves."""
    c, reg = snap, system.registry
    assert c.w3.eth.chain_id != 31337
    with c.reverts("InvalidParameter", "minStake"):
        c.deploy("NodeRegistry", 0, EXIT_DELAY)
    # 2**40 seconds used to wrap in the uint40 cast and allow an immediate withdrawal
    with c.reverts("InvalidParameter", "exitDelaySeconds"):
        c.deploy("NodeRegistry", MIN_STAKE, 2**40)
    assert reg.functions.MAX_EXIT_DELAY_SECONDS().call() == 365 * 86400
    a = c.accounts[1]
    register(system, a)
    with c.reverts("NotSlasher", a):
        c.tx(reg.functions.lockStake(a), a)
    with c.reverts("NotSlasher", a):
        c.tx(reg.functions.unlockStake(a), a)
    assert reg.functions.locksOf(a).call() == 0
