"""`bsns bench gas`: the gas of every contract call of one job, with few and with many registered nodes
side by side, and OpenZeppelin Governor's castVote measured in the same run as the vote baseline.

Runs on a fresh in-process eth-tester chain (default) or on any dev chain with unlocked funded accounts
(`--rpc http://127.0.0.1:8545`, e.g. anvil or `npx hardhat node`). The bench nodes are throwaway keys
derived from a fixed string (bench only, never printed), funded by the chain's first unlocked account.
Each scenario deploys its own contracts, registers N nodes, proposes a one-shard two-round job, votes,
executes, settles the proposal's deposit, lets all N nodes join (N replicas), lets a quorum of them and one equivocator bind their round-0
local updates (bind), registers and attaches a FedPEAT emulator and records a
round plan for N devices (FedPeatLedger), commits until round 0 is final, lets round 1's first epoch
pass its deadline with one commit and closes it (retry), finalizes it in epoch 1, reports a replica missing from
epoch 0, proves the equivocator's signed update other than its binding (proveUnbound), releases a stake lock and publishes the adapter. Gas figures are the
receipts' gasUsed: deterministic for a given compiler output, so the table is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import typer

from node.errors import BsnsError

GOAL_VOTE = 60_000
GOAL_COMMIT = 60_000
OZ_CASTVOTE_QUOTED = 66_000  # issue 2's figure for OZ Governor castVote on these machines
MIN_STAKE = 10**18
PROPOSAL_DEPOSIT = 10**17  # coordinator.deploy's default
COMMIT_TIMEOUT = 300  # blocks: an epoch must take every commit of 128 nodes (one block each here)


class BenchError(BsnsError):
    """The gas bench could not run (no chain, no funded account, a failed transaction)."""


@dataclass
class Chain:
    """A web3 connection plus the two things the bench needs beyond it: mining and a funder."""

    w3: object
    tester: object | None  # the EthereumTester when in-process
    funder: str

    def send(self, fn, sender: str, value: int = 0, gas: int | None = None):
        params = {"from": sender, "value": value}
        if gas is not None:
            params["gas"] = gas
        try:
            r = self.w3.eth.wait_for_transaction_receipt(fn.transact(params))
        except Exception as exc:
            from node.chain.errors import translate

            err = translate(exc)
            if err is exc:
                raise
            raise BenchError(f"bench transaction failed: {err}") from None
        if r.status != 1:
            raise BenchError(f"bench transaction {r.transactionHash.hex()} reverted")
        return r

    def mine(self, n: int) -> None:
        if n <= 0:
            return
        if self.tester is not None:
            self.tester.mine_blocks(n)
            return
        for _ in range(n):
            self.w3.provider.make_request("evm_mine", [])

    @property
    def block(self) -> int:
        return self.w3.eth.block_number

    def mine_to(self, block: int) -> None:
        """Mine until a transaction sent now runs, estimate included, in a block after ``block``.

        eth-tester estimates gas against the pending block; JSON-RPC nodes (anvil, Hardhat) against the
        latest, so there the latest block must already be past ``block``.
        """
        self.mine(block + (0 if self.tester is not None else 1) - self.block)


def connect(rpc: str | None) -> Chain:
    from web3 import Web3

    if rpc is None:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider

        tester = EthereumTester(PyEVMBackend())
        w3 = Web3(EthereumTesterProvider(tester))
    else:
        tester = None
        w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 30}))
        try:
            w3.eth.chain_id
        except Exception as exc:
            from node.chain.errors import RpcUnavailable

            raise RpcUnavailable(rpc, exc) from None
    accounts = w3.eth.accounts
    if not accounts:
        raise BenchError("the chain has no unlocked account to fund the bench nodes (use a dev chain)")
    return Chain(w3, tester, accounts[0])


def bench_keys(n: int, tag: str) -> list:
    """n throwaway accounts derived from a fixed string: bench only, local chains only."""
    from eth_account import Account
    from eth_utils import keccak

    return [Account.from_key(keccak(text=f"bsns bench gas {tag} {i}")) for i in range(n)]


def _contract(chain: Chain, name: str, *args):
    from node.chain.artifacts import load_artifact

    art = load_artifact(name)
    ctor = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor(*args)
    r = chain.send(ctor, chain.funder)
    return chain.w3.eth.contract(address=r.contractAddress, abi=art["abi"]), r.gasUsed


def _fund(chain: Chain, keys: list, tag: str) -> None:
    from web3.middleware import SignAndSendRawMiddlewareBuilder

    chain.w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(keys), name=f"bench-{tag}", layer=0)
    for k in keys:
        chain.w3.eth.wait_for_transaction_receipt(
            chain.w3.eth.send_transaction({"from": chain.funder, "to": k.address, "value": 3 * MIN_STAKE}))


BENCH_SPEC = '''[job]
base_model = "bench/model"
dataset = "bench/data"
task = "sequence-classification"
method = "lora"
rounds = 2
'''


def _job(abi: list[dict], n_layers: int = 6) -> tuple:
    """propose's arguments: a one-shard, two-round job and its spec text, the struct encoded by the ABI's names (the
    field order is the contract's alone; unnamed fields are zero)."""
    from eth_utils import keccak

    from node.chain.clients.base import argument_components, to_abi

    h = lambda s: keccak(text=s)  # noqa: E731
    comps = argument_components(abi, "propose")
    named = dict(baseModel="bench/model", baseModelHash=h("model"), dataset="bench/data", datasetHash=h("data"),
                 task="sequence-classification", method="lora", methodConfigHash=h("cfg"), layerBounds=[0, n_layers],
                 shardMemoryMB=[1000], syncInterval=10, rounds=2, minReplicas=1, learningRateE9=1_000_000, seed=1,
                 specHash=h(BENCH_SPEC))
    return to_abi(comps, {**{c["name"]: 0 for c in comps}, **named}), BENCH_SPEC


@dataclass
class Scenario:
    nodes: int
    gas: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def run_scenario(chain: Chain, n: int) -> Scenario:
    """Deploy, register n nodes, and take one job through every contract call; gas per call."""
    from eth_utils import keccak
    from web3.logs import DISCARD

    from node.chain.updates import UpdateSlot, sign_digest, update_digest

    out = Scenario(n)
    g = out.gas
    tag = f"n{n}-{chain.block}"
    reg, _ = _contract(chain, "NodeRegistry", MIN_STAKE, 60)
    ses, _ = _contract(chain, "TrainingSessions", reg.address, n + 2, COMMIT_TIMEOUT, MIN_STAKE // 10)
    gov, _ = _contract(chain, "FineTuneGovernance", reg.address, ses.address, 1, 5 + math.ceil(n / 10), 1000, 5000,
                       False, PROPOSAL_DEPOSIT)
    ad, _ = _contract(chain, "AdapterRegistry", ses.address, gov.address)
    led, _ = _contract(chain, "FedPeatLedger", ses.address, gov.address)
    chain.send(ses.functions.setGovernance(gov.address), chain.funder)
    chain.send(reg.functions.setSlasher(ses.address), chain.funder)

    keys = bench_keys(n, tag)
    _fund(chain, keys, tag)
    nodes = [k.address for k in keys]
    peer = bytes.fromhex("002508021221") + b"\x02" * 33
    for i, a in enumerate(nodes):
        r = chain.send(reg.functions.register(peer, f"/ip4/10.0.0.1/tcp/{4000 + i}", 4096, 0, 100), a,
                       value=MIN_STAKE, gas=400_000)
    g["register"] = r.gasUsed
    out.notes["register"] = "a later registrant (the first also creates the node list)"

    r = chain.send(gov.functions.propose(*_job(gov.abi)), chain.funder, value=PROPOSAL_DEPOSIT)
    g["propose"] = r.gasUsed
    pid = gov.events.ProposalCreated().process_receipt(r, errors=DISCARD)[0]["args"]["proposalId"]
    created = r.blockNumber
    chain.mine_to(created + 1)
    voters = nodes[: max(1, math.ceil(n / 10))]
    for a in voters:
        r = chain.send(gov.functions.castVote(pid, True), a, gas=150_000)
    g["castVote"] = r.gasUsed
    out.notes["castVote"] = "any vote: the tally shares the proposal's non-zero slot"
    end = gov.functions.proposalInfo(pid).call()[3]
    chain.mine_to(end)
    r = chain.send(gov.functions.execute(pid), chain.funder)
    g["execute"] = r.gasUsed
    out.notes["execute"] = "opens the session"
    sid = gov.events.ProposalExecuted().process_receipt(r, errors=DISCARD)[0]["args"]["sessionId"]
    r = chain.send(gov.functions.settleDeposit(pid), chain.funder)
    g["settleDeposit"] = r.gasUsed
    out.notes["settleDeposit"] = "returns the deposit of a proposal that reached quorum"

    for a in nodes:
        r = chain.send(ses.functions.join(sid), a, gas=300_000)
    g["join"] = r.gasUsed
    out.notes["join"] = "loops over shards only"
    chain.mine_to(ses.functions.getSession(sid).call()[2])
    r = chain.send(ses.functions.start(sid), chain.funder)
    g["start"] = r.gasUsed

    # FedPEAT: the proposer registers and attaches an emulator and names a controller, which records a round
    # plan with one retention per node (the only figure here that grows with the nodes: calldata and event)
    emu = keccak(text="emulator r=0.5")
    r = chain.send(led.functions.registerEmulator(emu, keccak(text="model"), 5000, 1, 0, 0), chain.funder)
    g["registerEmulator"] = r.gasUsed
    r = chain.send(led.functions.attachEmulator(sid, emu), chain.funder)
    g["attachEmulator"] = r.gasUsed
    out.notes["attachEmulator"] = "by the proposer; checks the session's base model"
    r = chain.send(led.functions.setController(sid, nodes[0]), chain.funder)
    g["setController"] = r.gasUsed
    r = chain.send(led.functions.recordRoundPlan(sid, 1, keccak(text="plan round 1"), [5000] * n), nodes[0],
                   gas=2_000_000)
    g["recordRoundPlan"] = r.gasUsed
    out.notes["recordRoundPlan"] = f"{n} devices' retentions in calldata and the event; stores one hash"

    agg, local = keccak(text="aggregate round 0"), keccak(text="local")
    need = ses.functions.quorumOf(n).call()
    # round 0: the committing replicas and one equivocator bind their local updates before any is revealed
    slot = UpdateSlot(chain.w3.eth.chain_id, ses.address, sid, 0, 0)
    liar = keys[-2]
    for a in dict.fromkeys(nodes[:need] + [liar.address]):
        r = chain.send(ses.functions.bind(sid, 0, 0, update_digest(slot, a, keccak(text=f"update {a}"))), a,
                       gas=300_000)
    g["bind"] = r.gasUsed
    out.notes["bind"] = "a replica binds its local update before the reveal (one new slot)"
    for i in range(need):
        r = chain.send(ses.functions.commit(sid, 0, 0, agg, local), nodes[i], gas=300_000)
        if i == 0:
            g["commit (first of round)"] = r.gasUsed
        elif i < need - 1:
            g["commit (agrees, not final)"] = r.gasUsed
    g["commit (finalizes round)"] = r.gasUsed
    out.notes["commit (finalizes round)"] = f"reaches ceil(2n/3) = {need} identical of n = {n} replicas"

    # round 1: one replica commits, the rest are down; after the deadline the round is retried in epoch 1,
    # where a quorum finalizes it; the replica missing from the closed epoch 0 is reported
    agg1 = keccak(text="aggregate round 1")
    chain.send(ses.functions.commit(sid, 1, 0, agg1, local), nodes[0], gas=300_000)
    chain.mine_to(ses.functions.roundDeadline(sid, 0).call())
    r = chain.send(ses.functions.closeRound(sid, 1, 0), chain.funder)
    g["closeRound"] = r.gasUsed
    out.notes["closeRound"] = "no quorum by the deadline: the round is retried in a new epoch"
    for i in range(need):
        chain.send(ses.functions.commit(sid, 1, 0, agg1, local), nodes[i], gas=300_000)
    r = chain.send(ses.functions.reportFaulty(sid, 1, 0, 0, nodes[-1]), chain.funder)
    g["reportFaulty"] = r.gasUsed
    out.notes["reportFaulty"] = "missing from a closed epoch; slashes through the registry"
    # the equivocator showed one peer an update other than the one it bound: anyone submits the signed update
    shown = keccak(text="shown to one peer")
    sig = sign_digest(liar.key, update_digest(slot, liar.address, shown))
    r = chain.send(ses.functions.proveUnbound(sid, 0, 0, liar.address, shown, sig), chain.funder, gas=400_000)
    g["proveUnbound"] = r.gasUsed
    out.notes["proveUnbound"] = "ecrecover + slash + bar of an equivocator"
    r = chain.send(ses.functions.release(sid), nodes[0])
    g["release"] = r.gasUsed
    out.notes["release"] = "a member takes its stake lock back after the session"

    record = (keccak(text="manifest"), "bench/model", keccak(text="model"), "lora", "sequence-classification",
              [keccak(text="aggregate round 1")], sid, 0, 9000, "")
    r = chain.send(ad.functions.publish(record), nodes[0])
    g["publish"] = r.gasUsed
    out.notes["publish"] = "checked against the session's final hashes"
    return out


def run_oz_baseline(chain: Chain) -> dict[str, int]:
    """castVote of OpenZeppelin Governor (CountingSimple + Votes on an ERC20Votes token)."""
    from web3.logs import DISCARD

    token, _ = _contract(chain, "BaselineVotesToken")
    governor, _ = _contract(chain, "BaselineGovernor", token.address)
    keys = bench_keys(3, f"oz-{chain.block}")
    _fund(chain, keys, f"oz-{chain.block}")
    voters = [k.address for k in keys]
    for a in voters:
        chain.send(token.functions.mint(a, 10**18), chain.funder)
        chain.send(token.functions.delegate(a), a)
    chain.mine(1)
    calldata = token.functions.mint(chain.funder, 1)._encode_transaction_data()
    r = chain.send(governor.functions.propose([token.address], [0], [calldata], "bench"), chain.funder)
    pid = governor.events.ProposalCreated().process_receipt(r, errors=DISCARD)[0]["args"]["proposalId"]
    chain.mine(2)
    first = chain.send(governor.functions.castVote(pid, 1), voters[0]).gasUsed
    later = chain.send(governor.functions.castVote(pid, 1), voters[1]).gasUsed
    return {"first vote on a proposal": first, "a later vote": later}


def run(rpc: str | None = None, sizes: tuple[int, int] = (4, 128), baseline: bool = True):
    chain = connect(rpc)
    small, large = (run_scenario(chain, n) for n in sizes)
    oz = run_oz_baseline(chain) if baseline else None
    return chain, small, large, oz


def render(small: Scenario, large: Scenario, oz: dict[str, int] | None, where: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"bsns contract gas ({small.nodes} registered nodes, {where})")
    t.add_column("call")
    t.add_column("gas", justify="right")
    t.add_column("note")
    for name, value in small.gas.items():
        t.add_row(name, f"{value:,}", small.notes.get(name, ""))
    console.print(t)

    s = Table(title=f"gas with {small.nodes} vs {large.nodes} registered nodes (all joined as replicas)")
    s.add_column("call")
    s.add_column(f"{small.nodes} nodes", justify="right")
    s.add_column(f"{large.nodes} nodes", justify="right")
    s.add_column("ratio", justify="right")
    for name in large.gas:
        a, b = small.gas.get(name), large.gas[name]
        s.add_row(name, f"{a:,}" if a else "n/a", f"{b:,}", f"{b / a:.3f}" if a else "")
    console.print(s)

    b = Table(title="goals")
    b.add_column("figure")
    b.add_column("gas", justify="right")
    b.add_column("baseline / goal", justify="right")
    b.add_column("")
    vote = max(small.gas["castVote"], large.gas["castVote"])
    if oz:
        for label, value in oz.items():
            b.add_row(f"OpenZeppelin Governor castVote, {label}", f"{value:,}", "measured in this run", "")
        oz_ref = oz["a later vote"]
        b.add_row("FineTuneGovernance.castVote", f"{vote:,}", f"{vote / oz_ref:.2f} x OZ later vote", "")
    else:
        b.add_row("OpenZeppelin Governor castVote (quoted, not measured)", f"{OZ_CASTVOTE_QUOTED:,}", "issue 2", "")
    b.add_row("castVote < 60,000", f"{vote:,}", f"{GOAL_VOTE:,}", "met" if vote < GOAL_VOTE else "MISSED")
    commits = [v for k, v in {**small.gas, **large.gas}.items() if k in ("commit (first of round)",
                                                                           "commit (agrees, not final)")]
    worst = max(commits)
    b.add_row("commit (not finalizing) < 60,000", f"{worst:,}", f"{GOAL_COMMIT:,}",
              "met" if worst < GOAL_COMMIT else "MISSED")
    growth = large.gas["commit (first of round)"] - small.gas["commit (first of round)"]
    b.add_row(f"commit growth {small.nodes} -> {large.nodes} nodes", f"{growth:+,}", "0",
              "met" if growth <= 0 else "MISSED")
    for sc in (small, large):
        per_round = sc.gas["commit (agrees, not final)"] + sc.gas["bind"]
        b.add_row(f"per node per round, commit + bind ({sc.nodes} nodes)", f"{per_round:,}",
                  f"{sc.gas['commit (agrees, not final)']:,} commit alone", "")
    growth = large.gas["bind"] - small.gas["bind"]
    b.add_row(f"bind growth {small.nodes} -> {large.nodes} nodes", f"{growth:+,}", "0",
              "met" if growth <= 0 else "MISSED")
    console.print(b)


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("gas")
    def gas(
        rpc: str = typer.Option(None, help="JSON-RPC URL of a dev chain with unlocked accounts (default: in-process eth-tester)"),
        nodes: int = typer.Option(128, min=8, max=1000, help="registered nodes in the large scenario"),
        baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="measure OpenZeppelin Governor castVote"),
    ) -> None:
        """Gas of every contract call, with 4 and with many registered nodes, beside OZ Governor's castVote."""
        chain, small, large, oz = run(rpc, (4, nodes), baseline)
        render(small, large, oz, "eth-tester" if rpc is None else rpc)
