"""The AdapterRegistry client: publishing a finished adapter (checked on chain against its session) and
finding adapters by base model and task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.chain.clients.base import ContractClient, b32, chain_dict, contract_components


@dataclass(frozen=True)
class AdapterRecord:
    """``IAdapterRegistry.AdapterRecord``: what a publisher submits (hashes as 0x-hex)."""

    manifest_hash: str
    base_model: str = ""
    base_model_hash: str = ""
    method: str = ""
    task: str = ""
    shard_hashes: tuple = ()
    session_id: int = 0
    parent_id: int = 0
    accuracy_bps: int = 0
    metrics_uri: str = ""

    def to_chain(self) -> dict[str, Any]:
        """The record keyed by its Solidity names, hashes as bytes (what ``publish`` encodes)."""
        return chain_dict(self, contract_components("AdapterRegistry", "publish", argument=0))


@dataclass(frozen=True)
class Adapter:
    """``IAdapterRegistry.Adapter`` (``getAdapter``): the record plus who published it and when."""

    record: AdapterRecord = field(metadata={"struct": AdapterRecord})
    publisher: str
    published_block: int


class AdapterRegistryClient(ContractClient):
    NAME = "AdapterRegistry"

    def publish(self, record: AdapterRecord):
        """Publish ``record``; returns (TxResult, adapter id)."""
        result = self._send("publish", self._struct_arg("publish", record.to_chain()))
        (ev,) = self.events("AdapterPublished", result.receipt)
        return result, ev["adapterId"]

    def get_adapter(self, adapter_id: int) -> Adapter:
        return self._read(Adapter, "getAdapter", adapter_id)

    def adapters_for(self, base_model_hash: str | bytes, task: str) -> list[int]:
        return list(self._call("adaptersFor", b32(base_model_hash), task))

    def latest_for(self, base_model_hash: str | bytes, task: str) -> int:
        return self._call("latestFor", b32(base_model_hash), task)

    def unverified_for(self, base_model_hash: str | bytes, task: str) -> list[int]:
        """Adapters published without a session (not checked against any final hashes): never in latest_for."""
        return list(self._call("unverifiedFor", b32(base_model_hash), task))

    def attest(self, adapter_id: int, accuracy_bps: int, metrics_uri: str = ""):
        return self._send("attest", adapter_id, accuracy_bps, metrics_uri)

    def attestation_of(self, adapter_id: int, attester: str) -> tuple[bool, int]:
        return tuple(self._call("attestationOf", adapter_id, attester))

    def attestation_count(self, adapter_id: int) -> int:
        return self._call("attestationCount", adapter_id)

    def adapter_of_session(self, session_id: int) -> int:
        return self._call("adapterOfSession", session_id)

    def adapter_count(self) -> int:
        return self._call("adapterCount")

    def sessions(self) -> str:
        return self._call("sessions")

    def governance(self) -> str:
        return self._call("governance")

    def max_shards(self) -> int:
        return self._call("MAX_SHARDS")

    def max_string_bytes(self) -> int:
        return self._call("MAX_STRING_BYTES")

    def max_uri_bytes(self) -> int:
        return self._call("MAX_URI_BYTES")
