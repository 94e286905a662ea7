"""The demo's report: what the session cost and gave (accuracy before and after, bytes per node,
transactions and gas, time per round) read from the chain and the daemons' own records, a loss-curve PNG,
and the printed summary."""

from __future__ import annotations

from pathlib import Path

from coordinator.cluster import Cluster, NodeProc


def collect(cl: Cluster, spec, sid: int, pid: int, adapter_id: int, before: dict, after: dict) -> dict:
    full_bytes = 0
    try:
        from node.train.build import build_model, count_parameters

        full_bytes = count_parameters(build_model(spec, 0, None, "cpu"))[1] * 4
    except Exception:  # noqa: BLE001 - the size is informative only
        pass
    nodes, total_tx, total_gas = [], 0, 0
    losses: dict[str, list] = {}
    round_times: list[float] = []
    for p in cl.procs:
        a = cl.sessions.assignment_of(sid, p.address)
        rounds = cl.node_rows(p, "SELECT * FROM rounds WHERE session_id=? ORDER BY round", (sid,))
        txs = cl.node_txs(p)
        gas = sum(cl.gas_of(t["hash"]) for t in txs if t["status"] == "mined")
        total_tx += len([t for t in txs if t["status"] == "mined"])
        total_gas += gas
        sent = sum(r["bytes_sent"] or 0 for r in rounds)
        recv = sum(r["bytes_recv"] or 0 for r in rounds)
        sync = sum(r["sync_sent"] or 0 for r in rounds)
        nodes.append({"node": p.index, "shard": a.shard, "replica": a.replica, "txs": len(txs), "gas": gas,
                      "bytes_sent": sent, "bytes_recv": recv, "sync_bytes_sent": sync,
                      "sync_bytes_per_round": sync // max(1, len(rounds)),
                      "adapter_bytes": _adapter_bytes(p, rounds)})
        if a.shard == 0:
            losses[f"replica {a.replica}"] = [r["loss"] for r in cl.node_rows(
                p, "SELECT loss FROM losses WHERE session_id=? ORDER BY step", (sid,))]
        if a.shard == 0 and a.replica == 0:
            round_times = [round(r["finished"] - r["started"], 1) for r in rounds if r["finished"] and r["started"]]
    owner_txs = [t for t in cl.sender.journal() if t["status"] == "mined"]
    owner_gas = sum(cl.gas_of(t["hash"]) for t in owner_txs)
    return {"proposal": pid, "session": sid, "adapter_id": adapter_id,
            "accuracy_before": before.get("accuracy"), "accuracy_after": after.get("accuracy"),
            "val_examples": after.get("examples"), "nodes": nodes, "node_txs": total_tx, "node_gas": total_gas,
            "deploy_and_propose_txs": len(owner_txs), "deploy_and_propose_gas": owner_gas,
            "round_seconds": round_times, "losses": losses, "full_model_bytes": full_bytes}


def _adapter_bytes(p: NodeProc, rounds: list[dict]) -> int:
    """Size of this node's local update (what each other replica fetches from it per round)."""
    if not rounds:
        return 0
    h = rounds[-1].get("local_hash")
    blob = p.data_dir / "blobs" / f"{(h or '').removeprefix('0x')}.bin"
    return blob.stat().st_size if blob.exists() else 0


def loss_plot(losses: dict[str, list], path: Path, sync_interval: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in losses.items():
        if ys:
            ax.plot(range(len(ys)), ys, label=name, alpha=0.8)
    if sync_interval:
        n = max((len(v) for v in losses.values()), default=0)
        for x in range(sync_interval, n, sync_interval):
            ax.axvline(x - 0.5, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("step (dotted: sync rounds)")
    ax.set_ylabel("training loss")
    ax.set_title("bsns demo: MiniLM + Houlsby adapters on SST-2 (2 shards x 2 replicas)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_summary(console, s: dict) -> None:
    from rich.table import Table

    console.print()
    console.print(f"[bold]accuracy on {s.get('val_examples')} held-back SST-2 sentences:[/] "
                  f"before {100 * (s['accuracy_before'] or 0):.1f}%  ->  after {100 * (s['accuracy_after'] or 0):.1f}%")
    t = Table(title="per node (p2p payload over the whole session, MB = 10^6 bytes)")
    for col in ("node", "shard", "replica", "sent MB", "received MB", "of which sync MB", "txs", "gas"):
        t.add_column(col, justify="right")
    for n in s["nodes"]:
        t.add_row(str(n["node"]), str(n["shard"]), str(n["replica"]), f"{n['bytes_sent'] / 1e6:.1f}",
                  f"{n['bytes_recv'] / 1e6:.1f}", f"{n['sync_bytes_sent'] / 1e6:.2f}", str(n["txs"]), f"{n['gas']:,}")
    console.print(t)
    console.print(f"transactions: {s['node_txs']} by the nodes ({s['node_gas']:,} gas), "
                  f"{s['deploy_and_propose_txs']} to deploy and propose ({s['deploy_and_propose_gas']:,} gas)")
    if s.get("full_model_bytes"):
        per_round = max(n["sync_bytes_per_round"] for n in s["nodes"])
        console.print(f"sync traffic per node per round: {per_round:,} bytes (adapter "
                      f"{max(n['adapter_bytes'] for n in s['nodes']):,} bytes) vs full-model FedAvg "
                      f"{s['full_model_bytes']:,} bytes ({100 * per_round / s['full_model_bytes']:.2f}%)")
    console.print(f"time per round (shard 0, replica 0): {s['round_seconds']} s; total {s.get('wall_seconds')} s")
    console.print(f"loss curve: {s['loss_png']}; published adapter id {s['adapter_id']}; summary {s['workdir']}/summary.json")
