"""Publishing a finished session's adapter: the manifest every member serves, and the record on chain.

After the last round every member rebuilds the manifest from the chain's final hashes and serves it; the node at
(shard 0, replica 0) evaluates the whole adapter on the held-back split (every shard's final update, fetched by
hash) and publishes the record to the AdapterRegistry, other shard-0 replicas after a grace period each (in case
it is down). The manifest is canonical JSON; its keccak-256 is the record's ``manifestHash``.
"""

from __future__ import annotations

import json
import time

from node.daemon.logs import event
from node.errors import BsnsError

PUBLISH_GRACE_S = 20.0  # per replica index: how long a shard-0 replica waits for the ones before it


class Publisher:
    """Serves and publishes the adapters of the sessions this node finished."""

    def __init__(self, sessions, adapters, chain, net, store, stop, device: str) -> None:
        self.sessions, self.adapters, self.chain, self.net, self.store = sessions, adapters, chain, net, store
        self.stop, self.device = stop, device

    def publish(self, sid: int, spec, shard: int, replica: int, runner) -> None:
        """Serve the manifest (every node can rebuild it from the chain) and publish it once every shard
        finished: the node at (shard 0, replica 0) first, other shard-0 replicas after a grace period
        each (in case it is down)."""
        from node.chain.clients import AdapterRecord, SessionState

        while not self.stop.is_set():
            if self.sessions.get_session(sid).state == SessionState.COMPLETED:
                break
            self.stop.wait(1.0)
        else:
            return
        last = spec.training.rounds - 1
        hashes = [self.chain.final_hash(sid, last, s) for s in range(spec.num_shards)]
        manifest = manifest_bytes(spec, sid, hashes)
        mh = self.net.pin(manifest)
        self.store.put_blob(manifest)
        self._pin_adapter(hashes[shard])
        if shard != 0:
            return
        grace = time.monotonic() + PUBLISH_GRACE_S * replica
        while time.monotonic() < grace and not self.stop.is_set():
            if self.adapters.adapter_of_session(sid):
                return
            self.stop.wait(1.0)
        if self.stop.is_set() or self.adapters.adapter_of_session(sid):
            return
        losses = [r["loss"] for r in self.store.rounds(sid) if r["loss"] is not None]
        metrics = {"final_train_loss": round(losses[-1], 5) if losses else None, **self._evaluate(sid, spec, hashes, runner)}
        accuracy_bps = round(10_000 * metrics["accuracy"]) if "accuracy" in metrics else 0
        rec = AdapterRecord(manifest_hash=mh, base_model=spec.model.id, base_model_hash=spec.model.weights_hash,
                            method=spec.method.name, task=spec.task.kind, shard_hashes=tuple(hashes), session_id=sid,
                            parent_id=0, accuracy_bps=accuracy_bps,
                            metrics_uri="data:application/json," + json.dumps(metrics, separators=(",", ":")))
        try:
            res, adapter_id = self.adapters.publish(rec)
            self.chain._count(res)
            self.store.upsert_session(sid, published_id=adapter_id)
            event("published", session=sid, adapter=adapter_id, manifest=mh)
        except BsnsError as exc:  # AlreadyPublished: another replica was first
            event("publish_skipped", session=sid, reason=str(exc))

    def _pin_adapter(self, h: str) -> None:
        """Serve this node's shard of the published adapter from memory for as long as it runs: readers fetch
        it by the hash on chain, and an unpinned blob is evicted past the store's memory bound (then read back
        from disk on every request)."""
        data = self.store.get_blob(h)
        if data is not None:
            self.net.pin(data)

    def _evaluate(self, sid: int, spec, hashes: list[str], runner) -> dict:
        """The final adapter's validation metrics on the whole model (every shard's final update, fetched by
        hash where another node holds it): what the published record's accuracy says, and anyone can check
        with `bsns adapter eval`. A failure leaves the record without them rather than unpublished."""
        from node.train.adapter_state import merged_state, state_from_bytes
        from node.train.evaluate import evaluate_adapter

        try:
            members = self.chain.members(sid)
            states = [state_from_bytes(runner.fetch_blob(h, [m.peer_id for m in members if m.shard == shard]))
                      for shard, h in enumerate(hashes)]
            m = evaluate_adapter(spec, merged_state(states), self.device)
        except Exception as exc:  # noqa: BLE001 - evaluation is informative; publication must not depend on it
            event("evaluate_failed", session=sid, error=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            return {}
        m = {k: round(v, 5) if isinstance(v, float) else v for k, v in m.items()}
        event("evaluated", session=sid, **m)
        return m


def manifest_bytes(spec, session_id: int, shard_hashes: list[str]) -> bytes:
    """The adapter manifest: which shard hash covers which layers; canonical JSON (its hash goes on chain)."""
    doc = {
        "format": "bsns-adapter-manifest/1",
        "session": session_id,
        "base_model": spec.model.id,
        "base_model_hash": spec.model.weights_hash,
        "method": spec.method.name,
        "method_config": spec.method.config,
        "task": spec.task.kind,
        "num_labels": spec.task.num_labels,
        "spec_hash": spec.spec_hash(),
        "shards": [{"layers": list(spec.shards.layers[i]), "hash": h} for i, h in enumerate(shard_hashes)],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
