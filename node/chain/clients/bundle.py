"""``Clients``: the clients of one deployment, sharing one sender, and what the event watcher watches."""

from __future__ import annotations

from node.chain.clients.adapter_registry import AdapterRegistryClient
from node.chain.clients.fedpeat_ledger import FedPeatLedgerClient
from node.chain.clients.governance import GovernanceClient
from node.chain.clients.node_registry import NodeRegistryClient
from node.chain.clients.training_sessions import SessionsClient


class Clients:
    """The clients of one deployment, sharing one sender (None: read-only)."""

    def __init__(self, w3, deployment, sender=None):
        self.w3 = w3
        self.deployment = deployment
        self.sender = sender
        self.registry = NodeRegistryClient(w3, deployment.address("NodeRegistry"), sender)
        self.sessions = SessionsClient(w3, deployment.address("TrainingSessions"), sender)
        self.governance = GovernanceClient(w3, deployment.address("FineTuneGovernance"), sender)
        self.adapters = AdapterRegistryClient(w3, deployment.address("AdapterRegistry"), sender)
        # optional: deployments made before FedPeatLedger existed have none
        self.fedpeat = (FedPeatLedgerClient(w3, deployment.addresses["FedPeatLedger"], sender)
                        if "FedPeatLedger" in deployment.addresses else None)

    def watched(self) -> dict[str, tuple[str, list[dict]]]:
        """``EventWatcher``'s ``contracts`` argument for this deployment."""
        clients = (self.registry, self.sessions, self.governance, self.adapters, self.fedpeat)
        return {c.NAME: (c.address, c.abi) for c in clients if c is not None}
