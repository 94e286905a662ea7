"""PipelineTransport (the shard trainer's Transport) over two real P2PNodes on 127.0.0.1."""

from __future__ import annotations

import threading

import pytest
import torch

from node.p2p import P2PError, P2PNode, PipelineTransport, RecvTimeout, Unauthorized, peer_id_from_private_key
from tests.p2p.peers import DEV_KEYS

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pair():
    allow = lambda addr, proto: True  # noqa: E731
    a = P2PNode(DEV_KEYS[0], allow, timeout=10).start()
    b = P2PNode(DEV_KEYS[1], allow, timeout=10).start()
    a.connect(b.peer_id, b.addrs)
    yield a, b
    a.close()
    b.close()


def test_forward_and_backward_messages_between_stages(pair):
    a, b = pair
    stage0 = PipelineTransport(a, session=3, rnd=1, stage_peers={1: b.peer_id}, stage=0)
    stage1 = PipelineTransport(b, session=3, rnd=1, stage_peers={0: a.peer_id}, stage=1)
    hidden = torch.randn(4, 16, 384)
    mask = torch.ones(4, 16, dtype=torch.int64)
    labels = torch.tensor([0, 1, 1, 0])
    assert stage0.send(1, (0, 0, "fwd"), {"hidden": hidden, "attention_mask": mask, "labels": labels})
    msg = stage1.recv(0, (0, 0, "fwd"), 10)
    assert torch.equal(msg["hidden"], hidden) and torch.equal(msg["attention_mask"], mask)
    assert torch.equal(msg["labels"], labels)
    grad = torch.randn(4, 16, 384)
    # the backward message is sent from another thread while stage 0 waits, as in the trainer
    t = threading.Thread(target=stage1.send, args=(0, (0, 0, "bwd"), {"grad": grad, "loss": torch.tensor(0.7)}))
    t.start()
    back = stage0.recv(1, (0, 0, "bwd"), 10)
    t.join()
    assert torch.equal(back["grad"], grad) and float(back["loss"]) == pytest.approx(0.7)
    assert a.bytes_moved()[0] >= hidden.numel() * 4 and b.bytes_moved()[1] >= hidden.numel() * 4
    with pytest.raises(RecvTimeout):
        stage1.recv(0, (1, 0, "fwd"), 0.2)


def test_message_from_the_wrong_peer_is_refused_at_the_header(pair):
    a, b = pair
    # b expects stage 0 to be another node (e.g. the registry assigned someone else)
    receiver = PipelineTransport(b, session=4, rnd=0, stage_peers={0: peer_id_from_private_key(DEV_KEYS[2]),
                                                                   1: b.peer_id})
    sender = PipelineTransport(a, session=4, rnd=0, stage_peers={1: b.peer_id}, stage=0)
    with pytest.raises(Unauthorized, match="not the member that sends fwd"):
        sender.send(1, (0, 0, "fwd"), {"hidden": torch.zeros(2)})
    assert b.inbox.pending() == []                       # nothing held, the tag is still free
    with pytest.raises(RecvTimeout):
        receiver.recv(0, (0, 0, "fwd"), 0.2)
    with pytest.raises(P2PError, match="no peer known for stage 5"):
        sender.send(5, (0, 0, "fwd"), {"hidden": torch.zeros(2)})
    with pytest.raises(P2PError, match="stage is not among"):
        PipelineTransport(a, session=4, rnd=0, stage_peers={1: b.peer_id})


def _until(cond, what: str, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_bulk_transfer_after_the_peer_dropped_the_kept_side_socket(pair):
    """a keeps its side socket after a transfer; b closes its end of it while idle; the next transfer finds the
    kept socket dead and goes on a fresh one (the retry path), for tensors and for blobs alike."""
    _, b = pair
    b.bulkport.listener._idle_timeout = 0.3          # b closes parked side sockets quickly
    big = torch.randn(2**19)             # 2 MB: bulk channel
    from node.p2p import Tags

    # a sender without links: each large message is one transfer on a side socket from its dial pool
    a = P2PNode(DEV_KEYS[2], lambda addr, proto: True, timeout=10, links=False).start()
    a.connect(b.peer_id, b.addrs)
    b.expect_session(9, 0, {"fwd": a.eth_address}, b.max_frame)
    target = ("127.0.0.1", b.bulkport.listener.port)
    assert a.send_tensor(b.peer_id, Tags(9, 0, 0, 0), big)
    assert torch.equal(b.recv(Tags(9, 0, 0, 0), 10), big)
    h = b.serve_blob(bytes(3 << 20))
    for again in (lambda: a.send_tensor(b.peer_id, Tags(9, 0, 1, 0), big * 2),
                  lambda: a.fetch_blob(b.peer_id, h) == bytes(3 << 20)):
        _until(lambda: a.bulkport.dialpool.idle(*target) >= 1, "a to keep its side socket")
        _until(lambda: b.bulkport.listener.parked == 0, "b to close its end of the idle socket")
        assert a.bulkport.dialpool.idle(*target) >= 1   # a still holds it: the next transfer meets a dead socket
        assert again()
    assert torch.equal(b.recv(Tags(9, 0, 1, 0), 10), big * 2)
    a.close()


def test_the_trainer_turns_transport_failures_into_pipeline_errors(pair):
    """The error contract is builtin-based (``node.p2p`` cannot import the trainer): a timeout is a
    ``TimeoutError``, a drop is ``send(...) is False``; ``ShardTrainer`` names the stage and step."""
    from torch import nn

    from node.train.pipeline import PipelineError, PipelineTimeout, ShardTrainer

    a, b = pair

    class Stage(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, input_ids=None, attention_mask=None, hidden_states=None):
            return (input_ids.float() if hidden_states is None else hidden_states) * self.w

    def trainer(stage: int, transport: PipelineTransport) -> ShardTrainer:
        s = Stage()
        return ShardTrainer(s, stage, 2, transport, torch.optim.SGD(s.parameters(), lr=0.1), timeout=0.2)

    assert issubclass(RecvTimeout, TimeoutError)
    last = trainer(1, PipelineTransport(b, session=5, rnd=0, stage_peers={0: a.peer_id}, stage=1))
    with pytest.raises(PipelineTimeout, match="stage 0 sent nothing for step 0 micro-batch 0"):
        last.step(0)
    # stage 1 already holds step 0 of this round: the trainer's own send is dropped as a duplicate
    PipelineTransport(b, session=6, rnd=0, stage_peers={0: a.peer_id}, stage=1)   # b expects a in session 6
    to_b = PipelineTransport(a, session=6, rnd=0, stage_peers={1: b.peer_id}, stage=0)
    assert to_b.send(1, (0, 0, "fwd"), {"hidden": torch.zeros(1)}) is True
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long),
             "labels": torch.zeros(2, dtype=torch.long)}
    with pytest.raises(PipelineError, match="stage 1 dropped step 0 as stale or duplicate"):
        trainer(0, to_b).step(0, batch)
    # a message from a peer that does not hold the expected stage is a PipelineError, not a timeout
    assert to_b.send(1, (1, 0, "fwd"), {"hidden": torch.zeros(1)}) is True
    wrong = trainer(1, PipelineTransport(b, session=6, rnd=0, stage_peers={0: peer_id_from_private_key(DEV_KEYS[2])},
                                         stage=1))
    with pytest.raises(PipelineError, match="not stage 0"):
        wrong.step(1)


def test_a_send_waits_for_a_receiver_that_has_not_declared_the_session_yet(pair):
    """The receiver answers "not now" until its transport declares the round; the sender asks again
    instead of failing the step, and the message lands once the receiver is ready."""
    a, b = pair
    sender = PipelineTransport(a, session=11, rnd=0, stage_peers={1: b.peer_id}, stage=0)
    msg = {"hidden": torch.ones(3)}
    t = threading.Thread(target=lambda: result.append(sender.send(1, (0, 0, "fwd"), msg)))
    result: list = []
    t.start()
    import time

    time.sleep(1.0)                                   # b is "still setting up"
    assert result == [] and b.inbox.pending() == []
    receiver = PipelineTransport(b, session=11, rnd=0, stage_peers={0: a.peer_id}, stage=1)
    t.join(20)
    assert result == [True]
    assert torch.equal(receiver.recv(0, (0, 0, "fwd"), 5)["hidden"], msg["hidden"])
