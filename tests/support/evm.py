"""The in-process EVM the unit tests share (eth-tester), the project's contracts deployed on it, and helpers to
drive them: valid job params, node registration, reverts matched by custom-error name."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"
ETHER = 10**18
MIN_STAKE = ETHER
EXIT_DELAY = 3600
VOTING_DELAY = 1
VOTING_PERIOD = 10
QUORUM_BPS = 5000
THRESHOLD_BPS = 6000
JOIN_WINDOW = 10
COMMIT_TIMEOUT = 10
SLASH = ETHER // 4
DEPOSIT = ETHER // 10  # FineTuneGovernance.proposalDeposit in the systems tests deploy
# identity multihash of a secp256k1 libp2p key: 0x00 0x25, then the protobuf-wrapped 33-byte key
PEER_ID = bytes.fromhex("002508021221") + b"\x02" * 33


def artifact(name: str) -> dict:
    return json.loads((ARTIFACTS / f"{name}.json").read_text())


def h(text: str) -> bytes:
    from eth_utils import keccak

    return keccak(text=text)


SPEC_TOML = '''[job]
base_model = "sentence-transformers/all-MiniLM-L6-v2"
dataset = "glue/sst2"
task = "sequence-classification"
'''


def job_params(**overrides) -> dict:
    """A valid JobParams (as a dict in struct order) for a 2-shard job; override any field."""
    p = dict(
        baseModel="sentence-transformers/all-MiniLM-L6-v2",
        baseModelHash=h("model weights"),
        dataset="glue/sst2",
        datasetHash=h("dataset"),
        task="sequence-classification",
        method="lora",
        methodConfigHash=h("lora r=8"),
        layerBounds=[0, 3, 6],
        shardMemoryMB=[1000, 2000],
        distribution=1,
        distributionParam=500,
        syncInterval=10,
        rounds=2,
        aggregation=0,
        serverUpdate=0,
        minReplicas=1,
        learningRateE9=1_000_000,
        seed=42,
        specHash=h(SPEC_TOML),
    )
    p.update(overrides)
    return p


def plain(value):
    """ABI results with tuples and lists alike turned into lists (for comparisons)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def as_tuple(params: dict) -> tuple:
    return tuple(params.values())


def propose_args(spec: str = SPEC_TOML, **overrides) -> tuple:
    """Arguments of FineTuneGovernance.propose: (JobParams, the TOML text whose hash is specHash)."""
    return as_tuple(job_params(**overrides)), spec


class Reverted(AssertionError):
    pass


@dataclass
class Chain:
    w3: object
    tester: object

    @property
    def accounts(self) -> list[str]:
        return self.w3.eth.accounts

    def deploy(self, name: str, *args, sender: str | None = None):
        art = artifact(name)
        c = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        r = self.tx(c.constructor(*args), sender or self.accounts[0])
        return self.w3.eth.contract(address=r.contractAddress, abi=art["abi"])

    def tx(self, fn, sender: str, value: int = 0):
        # no explicit gas: eth-tester estimates against the pending block, which is where the
        # transaction lands, so a refusal surfaces here as the contract's custom error
        h_ = fn.transact({"from": sender, "value": value})
        r = self.w3.eth.wait_for_transaction_receipt(h_)
        assert r.status == 1, f"transaction mined but failed: {r}"
        return r

    @property
    def block(self) -> int:
        return self.w3.eth.block_number

    def mine(self, n: int = 1) -> None:
        self.tester.mine_blocks(n)

    def time_travel(self, seconds: int) -> None:
        ts = self.w3.eth.get_block("latest")["timestamp"]
        self.tester.time_travel(ts + seconds)

    @contextmanager
    def reverts(self, name: str, *args):
        """Expect the block to revert with custom error ``name`` (and ``args`` when given)."""
        from node.chain.errors import as_revert

        try:
            yield
        except Exception as exc:  # web3 / eth-tester raise different types; decode both
            rev = as_revert(exc)
            if rev is None:
                raise
            assert rev.name == name, f"expected {name}, got {rev}"
            if args:
                assert tuple(rev.args) == tuple(args), f"expected {name}{args}, got {rev}"
            return
        raise Reverted(f"expected revert {name}, but the call succeeded")

    def events(self, contract, event: str, receipt) -> list[dict]:
        from web3.logs import DISCARD

        return [dict(e["args"]) for e in contract.events[event]().process_receipt(receipt, errors=DISCARD)]


@dataclass
class System:
    chain: Chain
    registry: object
    sessions: object
    governance: object
    adapters: object
    owner: str


def deploy_system(chain: Chain, weight_by_stake: bool = False, quorum_bps: int = QUORUM_BPS,
                  threshold_bps: int = THRESHOLD_BPS) -> System:
    owner = chain.accounts[0]
    reg = chain.deploy("NodeRegistry", MIN_STAKE, EXIT_DELAY)
    ses = chain.deploy("TrainingSessions", reg.address, JOIN_WINDOW, COMMIT_TIMEOUT, SLASH)
    gov = chain.deploy("FineTuneGovernance", reg.address, ses.address, VOTING_DELAY, VOTING_PERIOD,
                       quorum_bps, threshold_bps, weight_by_stake, DEPOSIT)
    ad = chain.deploy("AdapterRegistry", ses.address, gov.address)
    chain.tx(ses.functions.setGovernance(gov.address), owner)
    chain.tx(reg.functions.setSlasher(ses.address), owner)
    return System(chain, reg, ses, gov, ad, owner)


def register(system: System, node: str, memory_mb: int = 4096, stake: int = MIN_STAKE, peer_id: bytes = PEER_ID,
             addr: str = "/ip4/127.0.0.1/tcp/4001", device: int = 0, throughput: int = 100):
    return system.chain.tx(system.registry.functions.register(peer_id, addr, memory_mb, device, throughput),
                           node, value=stake)


def new_chain() -> Chain:
    """A fresh in-process EVM (eth-tester, py-evm) with its funded accounts: the one way tests build one."""
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider, Web3

    tester = EthereumTester(PyEVMBackend())
    return Chain(Web3(EthereumTesterProvider(tester)), tester)


def tester_keys(chain: Chain) -> list[bytes]:
    """Private keys of eth-tester's funded accounts (in-process test chain only)."""
    return [k.to_bytes() for k in chain.tester.backend.account_keys]


def load_probe() -> dict:
    """The Probe contract's artifact: a tiny contract with every kind of custom error and event the chain
    layer's tests need (tests/chain/fixtures/Probe.json)."""
    return json.loads((Path(__file__).resolve().parents[1] / "chain" / "fixtures" / "Probe.json").read_text())


def deploy_probe(w3, sender, artifact):
    ctor = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"]).constructor()
    result = sender.send(ctor, purpose="deploy Probe")
    return w3.eth.contract(address=result.contract_address, abi=artifact["abi"])
