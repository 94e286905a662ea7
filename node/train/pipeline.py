"""The shard trainer: one replica's pipeline training step, one node per shard (stage).

Owns the schedule of a step across the stages of a replica: the first stage embeds the batch, the
activations go forward stage to stage, the last stage computes the loss, the gradients go back, and
every stage steps the optimizer of its own adapters only. The batch is cut into micro-batches
(GPipe-style: all forwards, then all backwards in the same order) so that stage k works on
micro-batch i+1 while stage k+1 works on micro-batch i.

Exactness: the cut between two stages is a detach on the sender and ``requires_grad_`` on the
receiver, so autograd computes the same gradients as one process holding the whole model. Each
micro-batch's loss is the local trainer's ``loss_fn`` divided by the number of micro-batches, exactly
as ``node.train.step.train_step`` does (the same ``begin_step``/``finish_step``), and the learning rate of step i is the caller's
(``lr_at``), so the accumulated gradient and the AdamW step are the local trainer's. The micro-batches
are cut from the batch padded once as a whole, so padding is identical too.

It talks to its neighbours only through a ``Transport`` (``send``/``recv`` of dicts of tensors keyed
by (step, micro-batch, direction)), so it is unit-tested in-process with ``QueueTransport`` and runs
over libp2p in the daemon. Hand-written because no library schedules a pipeline across processes
that each own a different shard (torch.distributed.pipelining needs a process group, which libp2p
peers do not form).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from node.errors import BsnsError
from node.train.device import autocast
from node.train.step import begin_step, finish_step, loss_fn

FWD = "fwd"
BWD = "bwd"


class PipelineError(BsnsError):
    """A pipeline step could not complete (a neighbour timed out, or a message was malformed)."""


class PipelineTimeout(PipelineError):
    """A neighbour stage did not answer in time (it may be down)."""


class Transport(Protocol):
    """Moves dicts of tensors between the stages of one replica.

    ``key`` is ``(step, micro_batch, direction)``; implementations add the session, round and
    replica so that a late or duplicated message from another step is never taken for this one.
    Errors are builtin-based so a transport need not import this module: ``send`` returns False when
    the peer dropped the message (stale or duplicate); a ``TimeoutError`` is a silent neighbour; any
    other ``BsnsError`` or ``OSError`` is a broken pipeline. ``ShardTrainer`` maps them to its errors.
    """

    def send(self, to_stage: int, key: tuple[int, int, str], tensors: Mapping[str, Any]) -> bool | None: ...

    def recv(self, from_stage: int, key: tuple[int, int, str], timeout: float) -> dict[str, Any]: ...


class QueueTransport:
    """In-process transport for tests and single-machine runs: one mailbox per (stage, key)."""

    class Hub:
        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._boxes: dict[tuple, queue.Queue] = {}
            self.bytes_sent: dict[int, int] = {}

        def box(self, key: tuple) -> queue.Queue:
            with self._lock:
                return self._boxes.setdefault(key, queue.Queue())

    def __init__(self, hub: "QueueTransport.Hub", stage: int) -> None:
        self.hub, self.stage = hub, stage

    def send(self, to_stage, key, tensors):
        # copies, as a real wire would: the receiver must not share storage with the sender's graph
        msg = {k: (v.detach().clone() if hasattr(v, "detach") else v) for k, v in tensors.items()}
        self.hub.bytes_sent[self.stage] = self.hub.bytes_sent.get(self.stage, 0) + sum(
            v.numel() * v.element_size() for v in msg.values() if hasattr(v, "numel"))
        self.hub.box((self.stage, to_stage) + tuple(key)).put(msg)

    def recv(self, from_stage, key, timeout):
        try:
            return self.hub.box((from_stage, self.stage) + tuple(key)).get(timeout=timeout)
        except queue.Empty:
            raise PipelineTimeout(f"stage {from_stage} sent nothing for step {key[0]} micro-batch {key[1]} "
                                  f"({key[2]}) within {timeout:g} s") from None


class ShardTrainer:
    """Runs the pipeline step for one stage (this node's shard) of a replica.

    ``optimizer`` must hold only this shard's adapter parameters. ``step(i, batch)`` takes the
    collated batch on the first stage (``None`` elsewhere) and returns the batch's mean loss on every
    stage (the last stage sends it back upstream with the gradients).
    """

    def __init__(self, shard, stage: int, num_stages: int, transport: Transport, optimizer,
                 *, micro_batches: int = 1, task: str = "sequence-classification", timeout: float = 120.0,
                 device: str = "cpu", send_dtype=None, clip_grad_norm: float | None = None,
                 on_micro: Callable[[], None] | None = None) -> None:
        if not 0 <= stage < num_stages:
            raise PipelineError(f"stage {stage} outside 0..{num_stages - 1}")
        self.shard, self.stage, self.num_stages = shard, stage, num_stages
        self.transport, self.optimizer = transport, optimizer
        self.micro_batches, self.task, self.timeout = micro_batches, task, timeout
        self.device, self.send_dtype = device, send_dtype
        self.clip_grad_norm = clip_grad_norm
        self.on_micro = on_micro
        self.compute_seconds = 0.0  # time spent in forward/backward on this stage (for the bench)

    def _send(self, to_stage: int, key: tuple[int, int, str], tensors: Mapping[str, Any]) -> None:
        try:
            ok = self.transport.send(to_stage, key, tensors)
        except PipelineError:
            raise
        except TimeoutError as exc:
            raise PipelineTimeout(f"send to stage {to_stage} timed out: {exc}") from None
        except (BsnsError, OSError) as exc:
            raise PipelineError(f"send to stage {to_stage} failed: {exc}") from None
        if ok is False:
            raise PipelineError(f"stage {to_stage} dropped step {key[0]} as stale or duplicate (it is elsewhere)")

    def _recv(self, from_stage: int, key: tuple[int, int, str]) -> dict[str, Any]:
        try:
            return self.transport.recv(from_stage, key, self.timeout)
        except PipelineError:
            raise
        except TimeoutError:
            raise PipelineTimeout(f"stage {from_stage} sent nothing for step {key[0]} micro-batch {key[1]} "
                                  f"({key[2]}) within {self.timeout:g} s") from None
        except (BsnsError, OSError) as exc:
            raise PipelineError(str(exc)) from None

    @property
    def first(self) -> bool:
        return self.stage == 0

    @property
    def last(self) -> bool:
        return self.stage == self.num_stages - 1

    def _wire(self, t):
        t = t.detach()
        if self.send_dtype is not None and t.is_floating_point():
            t = t.to(self.send_dtype)
        return t.cpu() if t.device.type != "cpu" else t

    def _dev(self, t, grad: bool = False):
        import torch

        t = t.to(self.device)
        if grad and t.is_floating_point() and t.dtype != torch.float32:
            t = t.float()
        return t

    def step(self, step: int, batch: Mapping[str, Any] | None = None, lr: float | None = None) -> float:
        import torch

        mbs: list[dict] = []
        if self.first:
            if batch is None:
                raise PipelineError("the first stage needs a batch")
            n = batch["input_ids"].shape[0]
            if n % self.micro_batches:
                raise PipelineError(f"batch of {n} does not split into {self.micro_batches} micro-batches")
            ids = batch["input_ids"].chunk(self.micro_batches)
            masks = batch["attention_mask"].chunk(self.micro_batches)
            labels = batch["labels"].chunk(self.micro_batches)
            mbs = [{"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in zip(ids, masks, labels)]

        begin_step(self.optimizer, lr)
        saved = []  # per micro-batch: (input activation or None, output) for the backward pass
        total_loss = torch.zeros((), dtype=torch.float64)

        # forward pass of every micro-batch (the last stage also runs its backward right away)
        for m in range(self.micro_batches):
            if self.first:
                msg = mbs[m]
                t0 = time.perf_counter()
                with autocast(self.device):
                    out = self.shard(input_ids=self._dev(msg["input_ids"]),
                                     attention_mask=self._dev(msg["attention_mask"]))
                h_in = None
                # a soft prompt (prompt tuning) lengthens the sequence: later stages get the longer mask
                ext = getattr(self.shard, "extend_attention_mask", None)
                msg = dict(msg, attention_mask=ext(msg["attention_mask"]) if ext else msg["attention_mask"])
            else:
                msg = self._recv(self.stage - 1, (step, m, FWD))
                t0 = time.perf_counter()
                h_in = self._dev(msg["hidden"], grad=True).requires_grad_()
                with autocast(self.device):
                    out = self.shard(hidden_states=h_in, attention_mask=self._dev(msg["attention_mask"]))
            if self.last:
                loss = loss_fn(out, {"labels": self._dev(msg["labels"])}, self.task) / self.micro_batches
                loss.backward()
                total_loss += loss.detach().double().cpu()
                self.compute_seconds += time.perf_counter() - t0
                if h_in is not None:
                    self._send(self.stage - 1, (step, m, BWD),
                               {"grad": self._wire(h_in.grad), "loss": total_loss.clone()})
                    del h_in
            else:
                self.compute_seconds += time.perf_counter() - t0
                self._send(self.stage + 1, (step, m, FWD),
                           {"hidden": self._wire(out), "attention_mask": msg["attention_mask"],
                            "labels": msg["labels"]})
                saved.append((h_in, out))
            if self.on_micro:
                self.on_micro()

        # backward pass of every micro-batch, in the same order
        if not self.last:
            for m in range(self.micro_batches):
                msg = self._recv(self.stage + 1, (step, m, BWD))
                t0 = time.perf_counter()
                h_in, out = saved[m]
                out.backward(self._dev(msg["grad"]).to(out.dtype))
                self.compute_seconds += time.perf_counter() - t0
                total_loss = msg["loss"].double()  # cumulative over micro-batches, from the last stage
                if h_in is not None:
                    self._send(self.stage - 1, (step, m, BWD),
                               {"grad": self._wire(h_in.grad), "loss": total_loss.clone()})
                saved[m] = None

        t0 = time.perf_counter()
        # per-shard clipping: a global norm would need one more round trip per step
        finish_step(self.optimizer, self.clip_grad_norm)
        self.compute_seconds += time.perf_counter() - t0
        return float(total_loss)


def run_stages_in_threads(trainers: list[ShardTrainer], batches: list[Mapping[str, Any]],
                          start_step: int = 0, lrs: list[float] | None = None) -> list[float]:
    """Run a replica whose stages all live in this process (tests, benches): one thread per stage.

    Returns the loss of each step as seen by the first stage; an exception in any stage is re-raised.
    """
    losses: list[float] = []
    errors: list[BaseException] = []

    def run(tr: ShardTrainer) -> None:
        try:
            for i, b in enumerate(batches):
                loss = tr.step(start_step + i, b if tr.first else None, None if lrs is None else lrs[i])
                if tr.first:
                    losses.append(loss)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in trainers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return losses
