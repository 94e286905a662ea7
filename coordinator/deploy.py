"""Deploying the five contracts, wired together, and recording them in ``<home>/deployments/<chainId>.json``.

Order: NodeRegistry → TrainingSessions → FineTuneGovernance → AdapterRegistry → FedPeatLedger, then the one-time
wiring calls (the registry's slasher is the sessions contract; the sessions contract's governance is
the governance contract). Every step goes through ``TxSender``, so a revert names its custom error.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from node.chain.deployment import Deployment
from node.errors import BsnsError, validation_message


class DeployError(BsnsError):
    """Deployment parameters are invalid or a deployment step failed."""


_UNITS = {"wei": 0, "gwei": 9, "ether": 18, "eth": 18}


def parse_amount(text: str | int) -> int:
    """Wei from ``"1000"``, ``"1 ether"``, ``"0.5eth"`` or ``"20 gwei"``."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS | {"": 0}:
        raise DeployError(f"not an amount: {text!r} (use wei, or a number with gwei/ether)")
    try:
        wei = Decimal(m.group(1)) * (Decimal(10) ** _UNITS.get(m.group(2).lower(), 0))
    except InvalidOperation:
        raise DeployError(f"not an amount: {text!r}") from None
    if wei != wei.to_integral_value():
        raise DeployError(f"{text!r} is not a whole number of wei")
    return int(wei)


DEV_CHAIN_ID = 31337  # NodeRegistry.DEV_CHAIN_ID and FineTuneGovernance.DEV_CHAIN_ID: anvil and Hardhat


class DeployParams(BaseModel):
    """Contract parameters; validated here so that a bad value fails before any transaction."""

    model_config = ConfigDict(extra="forbid")

    min_stake: int = Field(default=10**18, ge=0, description="NodeRegistry: minimum stake (wei)")
    exit_delay_seconds: int = Field(default=3600, ge=0, le=365 * 86400,
                                    description="NodeRegistry: requestExit → withdraw (at most a year)")
    voting_delay_blocks: int = Field(default=1, ge=0, le=1_000_000)
    voting_period_blocks: int = Field(default=20, ge=1, le=10_000_000)
    quorum_bps: int = Field(default=5000, ge=0, le=10_000)
    threshold_bps: int = Field(default=5000, ge=1, le=10_000)
    weight_by_stake: bool = False
    proposal_deposit: int = Field(default=10**17, ge=0, description="FineTuneGovernance: wei each proposal pays, "
                                                                    "returned if it reaches quorum")
    join_window_blocks: int = Field(default=20, ge=1, le=10_000_000)
    commit_timeout_blocks: int = Field(default=50, ge=1, le=10_000_000)
    slash_amount: int | None = Field(default=None, ge=0, description="wei taken per faulty commit (None: min_stake / 10)")

    @classmethod
    def make(cls, **kw) -> "DeployParams":
        try:
            return cls(**kw)
        except ValidationError as exc:
            raise DeployError(validation_message(exc)) from None


def deploy(w3, sender, params: DeployParams | None = None) -> Deployment:
    """Deploy and wire the five contracts from ``sender``'s account; returns the record (not yet saved)."""
    from node.chain.artifacts import load_artifact

    params = params or DeployParams()
    if params.min_stake == 0 and sender.chain_id != DEV_CHAIN_ID:
        # the registry refuses it too (InvalidParameter("minStake")); saying so here costs no transaction
        raise DeployError(f"min_stake: 0 is allowed only on the dev chain (chain id {DEV_CHAIN_ID}), "
                          f"not on chain {sender.chain_id}: free identities let anyone fill a shard")
    if params.proposal_deposit == 0 and sender.chain_id != DEV_CHAIN_ID:
        # FineTuneGovernance refuses it too (InvalidConfig("proposalDeposit"))
        raise DeployError(f"proposal_deposit: 0 is allowed only on the dev chain (chain id {DEV_CHAIN_ID}), "
                          f"not on chain {sender.chain_id}: free proposals let anyone flood the voters")
    slash = params.slash_amount if params.slash_amount is not None else params.min_stake // 10
    addresses: dict[str, str] = {}
    txs: dict[str, str] = {}

    def create(name: str, *args) -> str:
        art = load_artifact(name)
        ctor = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor(*args)
        result = sender.send(ctor, purpose=f"deploy {name}", contract=name)
        addresses[name], txs[name] = result.contract_address, result.hash
        return result

    first = create("NodeRegistry", params.min_stake, params.exit_delay_seconds)
    create("TrainingSessions", addresses["NodeRegistry"], params.join_window_blocks, params.commit_timeout_blocks, slash)
    create("FineTuneGovernance", addresses["NodeRegistry"], addresses["TrainingSessions"], params.voting_delay_blocks,
           params.voting_period_blocks, params.quorum_bps, params.threshold_bps, params.weight_by_stake,
           params.proposal_deposit)
    create("AdapterRegistry", addresses["TrainingSessions"], addresses["FineTuneGovernance"])
    create("FedPeatLedger", addresses["TrainingSessions"], addresses["FineTuneGovernance"])

    def wire(name: str, fn: str, arg: str) -> None:
        c = w3.eth.contract(address=addresses[name], abi=load_artifact(name)["abi"])
        result = sender.send(c.functions[fn](arg), purpose=f"{name}.{fn}", contract=name)
        txs[f"{name}.{fn}"] = result.hash

    wire("NodeRegistry", "setSlasher", addresses["TrainingSessions"])
    wire("TrainingSessions", "setGovernance", addresses["FineTuneGovernance"])
    recorded = params.model_dump() | {"slash_amount": slash}
    return Deployment(chain_id=sender.chain_id, addresses=addresses, deploy_block=first.block_number,
                      deployer=sender.address, parameters=recorded, tx_hashes=txs,
                      block_hash="0x" + bytes(first.receipt["blockHash"]).hex())
