"""`bsns bench session`: the 2-shard pipeline over libp2p against local training, and sync traffic
against full-model federated averaging, measured side by side in one run on this machine.

- Step time: stage 1 runs in a separate OS process, stage 0 in this one; they exchange activations
  and gradients over libp2p (``P2PNode``, TCP + Noise + yamux, bulk channel for large tensors)
  with the daemon's own pipeline code (``ShardTrainer`` + ``PipelineTransport``). The local baseline is
  ``bsns train local``'s step (``node.train.local.train_step``) on the whole model, same batches,
  interleaved step by step with the pipeline's so both see the same load on a shared machine.
  Each process gets ``--threads`` torch threads; the local baseline is measured with the same
  per-process count (and, with ``--local-threads 2``, also with the pipeline's total).
- Sync traffic: a replica fetches the other process's trained shard adapter by hash over
  ``/bsns/adapter/1`` (what one sync moves per peer), counted by the p2p layer, against the bytes of
  the full model in fp32 (what full-model FedAvg would move per peer).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import typer

BENCH_SPEC = """
name = "bench-session"
[model]
id = "minilm"
[data]
dataset = "sst2"
path = "data/sst2/train.tsv"
max_seq_len = {max_seq_len}
validation_size = 64
[task]
kind = "sequence-classification"
num_labels = 2
[method]
name = "{method}"
config = {config}
[shards]
layers = [[0, 3], [3, 6]]
memory_mb = [1024, 1024]
[training]
rounds = 1
sync_interval = {steps}
batch_size = {batch_size}
micro_batches = {micro_batches}
learning_rate = 0.001
seed = 0
"""

METHOD_CONFIGS = {"houlsby": "{ bottleneck_size = 64 }", "pfeiffer": "{ bottleneck_size = 64 }",
                  "lora": "{ r = 8 }", "ia3": "{}"}


def _spec(steps, batch_size, max_seq_len, micro_batches, method):
    from node.job import JobSpec

    return JobSpec.from_text(BENCH_SPEC.format(steps=steps, batch_size=batch_size, max_seq_len=max_seq_len,
                                               micro_batches=micro_batches, method=method,
                                               config=METHOD_CONFIGS.get(method, "{}")))


def _worker(args_json: str) -> None:
    """Stage 1 in its own process: announce identity on stdout, train, serve the adapter, wait."""
    import secrets

    import torch

    from node.p2p import P2PNode, PipelineTransport
    from node.train.build import build_model
    from node.train.step import make_optimizer
    from node.tuners import adapter_state_dict
    from node.train.adapter_state import canonical_bytes
    from node.train.pipeline import ShardTrainer

    a = json.loads(args_json)
    torch.set_num_threads(a["threads"])
    spec = _spec(a["steps"], a["batch_size"], a["max_seq_len"], a["micro_batches"], a["method"])
    shard = build_model(spec, 3, 6, "cpu")
    opt = make_optimizer(shard, spec.training.learning_rate)
    node = P2PNode(secrets.token_bytes(32), lambda addr, proto: addr.lower() == a["peer_address"].lower()).start()
    print(json.dumps({"peer_id": node.peer_id, "addr": node.addrs[0].split("/p2p/")[0],
                      "address": node.eth_address}), flush=True)
    line = sys.stdin.readline()  # the main process is connected and ready
    peer = json.loads(line)
    tr = ShardTrainer(shard, 1, 2, PipelineTransport(node, 1, 0, {0: peer["peer_id"]}, stage=1), opt,
                      micro_batches=spec.training.micro_batches, task=spec.task.kind, timeout=120)
    for i in range(a["steps"]):
        tr.step(i, None, spec.training.learning_rate)
    h = node.serve_blob(canonical_bytes(adapter_state_dict(shard)))
    print(json.dumps({"adapter_hash": h, "compute_seconds": tr.compute_seconds}), flush=True)
    sys.stdin.readline()  # wait until the main process fetched it
    node.close()


def run_bench(steps: int = 20, warmup: int = 3, batch_size: int = 32, max_seq_len: int = 64,
              micro_batches: int = 2, method: str = "houlsby", threads: int = 1, replicas: int = 2,
              local_threads: tuple[int, ...] = ()) -> dict:
    import secrets

    import torch

    from node.p2p import P2PNode, PipelineTransport
    from node.p2p.identity import eth_address_from_private_key
    from node.train import data as D
    from node.train.build import build_data, build_model, count_parameters
    from node.train.step import make_optimizer, train_step
    from node.train.pipeline import ShardTrainer

    total = warmup + steps
    spec = _spec(total, batch_size, max_seq_len, micro_batches, method)
    data = build_data(spec, train_limit=max(batch_size * total, 256))
    batches = [data.train.collate(idx) for idx in D.batch_indices(len(data.train), batch_size, 0, total)]
    key = secrets.token_bytes(32)
    my_addr = eth_address_from_private_key(key)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    args = json.dumps({"steps": total, "batch_size": batch_size, "max_seq_len": max_seq_len,
                       "micro_batches": micro_batches, "method": method, "threads": threads, "peer_address": my_addr})
    proc = subprocess.Popen([sys.executable, "-c", f"from coordinator.bench.session import _worker; _worker({args!r})"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    out: dict = {}
    node = None
    try:
        torch.set_num_threads(threads)
        shard = build_model(spec, 0, 3, "cpu")
        opt = make_optimizer(shard, spec.training.learning_rate)
        hello = json.loads(proc.stdout.readline())
        node = P2PNode(key, lambda addr, proto: addr.lower() == hello["address"].lower()).start()
        node.connect(hello["peer_id"], [hello["addr"]])
        proc.stdin.write(json.dumps({"peer_id": node.peer_id}) + "\n")
        proc.stdin.flush()
        tr = ShardTrainer(shard, 0, 2, PipelineTransport(node, 1, 0, {1: hello["peer_id"]}, stage=0), opt,
                          micro_batches=micro_batches, task=spec.task.kind, timeout=120)
        # the local baseline runs in this process, interleaved step by step with the pipeline (the
        # stage-1 process idles meanwhile), so both see the same background load on a shared machine
        model = build_model(spec, 0, None, "cpu")
        lopt = make_optimizer(model, spec.training.learning_rate)
        times, ltimes = [], []
        sent0 = node.bytes_moved()[0]
        for i, b in enumerate(batches):
            t0 = time.perf_counter()
            tr.step(i, b, spec.training.learning_rate)
            t1 = time.perf_counter()
            train_step(model, lopt, b, spec.task.kind, "cpu", spec.training.learning_rate, micro_batches)
            t2 = time.perf_counter()
            if i >= warmup:
                times.append(t1 - t0)
                ltimes.append(t2 - t1)
        out[f"local_step_s_{threads}t"] = sum(ltimes) / len(ltimes)
        act_bytes = (node.bytes_moved()[0] - sent0) / total
        done = json.loads(proc.stdout.readline())
        _, recv0 = node.bytes_moved()
        blob = node.fetch_blob(hello["peer_id"], done["adapter_hash"], timeout=60)
        sync_bytes = node.bytes_moved()[1] - recv0
        proc.stdin.write("done\n")
        proc.stdin.flush()
        proc.wait(timeout=60)
        out["pipeline_step_s"] = sum(times) / len(times)
        out["activation_bytes_per_step"] = int(act_bytes)
        out["adapter_bytes"] = len(blob)
        out["sync_bytes_per_peer"] = int(sync_bytes)
    finally:
        if node is not None:
            node.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # the local baseline with other thread counts (same batches, `bsns train local`'s step)
    trainable, params = count_parameters(model)
    for n_threads in sorted(set(local_threads) - {threads}):
        torch.set_num_threads(n_threads)
        times = []
        for i, b in enumerate(batches):
            t0 = time.perf_counter()
            train_step(model, lopt, b, spec.task.kind, "cpu", spec.training.learning_rate, micro_batches)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        out[f"local_step_s_{n_threads}t"] = sum(times) / len(times)
    torch.set_num_threads(threads)
    out.update({"full_model_bytes": params * 4, "trainable_params": trainable, "params": params,
                "threads_per_process": threads, "steps": steps, "batch_size": batch_size, "max_seq_len": max_seq_len,
                "micro_batches": micro_batches, "method": method, "replicas": replicas})
    # one sync: each node fetches the other replicas' updates and serves its own to each of them
    out["sync_bytes_per_node_per_round"] = out["sync_bytes_per_peer"] * (replicas - 1)
    out["fedavg_bytes_per_node_per_round"] = out["full_model_bytes"] * (replicas - 1)
    return out


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("session")
    def session(
        steps: int = typer.Option(20, min=1, help="timed steps (after warm-up)"),
        warmup: int = typer.Option(3, min=0, help="untimed warm-up steps"),
        batch_size: int = typer.Option(32, min=1),
        max_seq_len: int = typer.Option(64, min=8),
        micro_batches: int = typer.Option(2, min=1),
        method: str = typer.Option("houlsby", help="houlsby | pfeiffer | lora | ia3"),
        threads: int = typer.Option(1, min=1, help="torch threads per process"),
        replicas: int = typer.Option(2, min=2, help="replicas per shard (for the traffic figures)"),
        local_threads: list[int] = typer.Option([], "--local-threads",
                                                help="also time the local baseline with this many threads "
                                                     "(e.g. 2: the pipeline's total)"),
        json_out: bool = typer.Option(False, "--json", help="print the figures as JSON"),
    ) -> None:
        """Pipeline step over libp2p vs `bsns train local`, and sync bytes vs full-model FedAvg."""
        from rich.console import Console
        from rich.table import Table

        r = run_bench(steps, warmup, batch_size, max_seq_len, micro_batches, method, threads, replicas,
                      tuple(local_threads))
        if json_out:
            typer.echo(json.dumps(r, indent=2))
            return
        con = Console()
        t = Table(title=f"training step: MiniLM + {method}, batch {batch_size} x {max_seq_len} tokens, "
                        f"{micro_batches} micro-batches, {steps} timed steps")
        t.add_column("setup")
        t.add_column("s/step", justify="right")
        t.add_column("vs local", justify="right")
        base = r[f"local_step_s_{threads}t"]
        t.add_row(f"2-shard pipeline over libp2p (2 processes x {threads} thread)", f"{r['pipeline_step_s']:.3f}",
                  f"{r['pipeline_step_s'] / base:.2f}x")
        for k in sorted(k for k in r if k.startswith("local_step_s_")):
            n = k.rsplit("_", 1)[1]
            t.add_row(f"bsns train local (1 process x {n[:-1]} thread)", f"{r[k]:.3f}", f"{r[k] / base:.2f}x")
        con.print(t)
        con.print(f"activations + gradients sent by stage 0 per step: {r['activation_bytes_per_step']:,} bytes")
        t = Table(title=f"sync traffic per node per round ({replicas} replicas per shard)")
        t.add_column("what")
        t.add_column("bytes", justify="right")
        t.add_column("share of full-model FedAvg", justify="right")
        t.add_row("adapter sync (measured over /bsns/adapter/1)", f"{r['sync_bytes_per_node_per_round']:,}",
                  f"{100 * r['sync_bytes_per_node_per_round'] / r['fedavg_bytes_per_node_per_round']:.2f}%")
        t.add_row("full-model FedAvg (fp32 weights)", f"{r['fedavg_bytes_per_node_per_round']:,}", "100%")
        con.print(t)
        goal_step = r["pipeline_step_s"] / base <= 1.25
        goal_bytes = r["sync_bytes_per_node_per_round"] / r["fedavg_bytes_per_node_per_round"] < 0.02
        con.print(f"goals: pipeline within 1.25x of local: {'met' if goal_step else 'NOT met'}; "
                  f"sync traffic < 2% of FedAvg: {'met' if goal_bytes else 'NOT met'}")
