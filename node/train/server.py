"""Server updates: how a round's aggregate of the replicas' adapters becomes the round's final adapter.

The aggregation rule (``node.train.aggregate``) combines the replicas' updates into one mean; a server update then
treats ``mean - previous final`` as a pseudo-gradient (Reddi et al., "Adaptive Federated Optimization", 2021).
``none`` takes the mean as it is (plain FedAvg); ``fedavgm`` adds server momentum (Hsu, Qi and Brown, "Measuring
the Effects of Non-Identical Data Distribution for Federated Visual Classification", 2019):
``v_t = beta * v_{t-1} + (mean_t - w_{t-1})``, ``w_t = w_{t-1} + v_t``.

There is no coordinator to hold the server's state: every replica computes the final itself, and must compute the
same bytes, also after a restart. With server learning rate 1 the momentum needs no state of its own: ``v_{t-1}``
is exactly ``w_{t-1} - w_{t-2}``, the difference of the two previous finals, which every node holds (their hashes
are on chain, their bytes in its checkpoints or fetched by hash). So a server update is a pure function of the
round's mean and the finals so far. Arithmetic is element-wise in float64 on CPU, cast to float32 once, as in
``node.train.aggregate``: the same bits on every node.

Server updates register themselves under their ``node.vocab.ServerUpdate`` name, as aggregation rules do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from node.errors import BsnsError
from node.vocab import ServerUpdate, UnknownWord


class ServerUpdateError(BsnsError):
    """A server update that cannot be named or computed."""


class ServerUpdateRule:
    """``apply(mean, finals)``: the round's final adapter bytes from the aggregate ``mean`` (canonical bytes) and
    ``finals``, the final adapters so far in round order (``finals[0]`` the seeded initial adapter)."""

    name: ClassVar[ServerUpdate]

    def apply(self, mean: bytes, finals: Sequence[bytes]) -> bytes:
        raise NotImplementedError


_UPDATES: dict[ServerUpdate, type[ServerUpdateRule]] = {}


def register_server_update(cls: type[ServerUpdateRule]) -> type[ServerUpdateRule]:
    """Class decorator: make a server update available under its ``name``."""
    _UPDATES[cls.name] = cls
    return cls


@register_server_update
class NoServerUpdate(ServerUpdateRule):
    """The aggregate is the final (plain FedAvg)."""

    name = ServerUpdate.NONE

    def apply(self, mean, finals):
        return mean


@register_server_update
class FedAvgM(ServerUpdateRule):
    """Server momentum ``beta`` with server learning rate 1 (its state is the last two finals)."""

    name = ServerUpdate.FEDAVGM
    #: Hsu et al. (2019) report beta 0.9 as the best with server learning rate 1 under label skew
    BETA = 0.9

    def apply(self, mean, finals):
        import torch

        from node.train.adapter_state import canonical_bytes, state_from_bytes

        if not finals:
            raise ServerUpdateError("fedavgm needs the previous final adapter")
        m, prev = state_from_bytes(mean), state_from_bytes(finals[-1])
        older = state_from_bytes(finals[-2]) if len(finals) > 1 else prev
        out = {}
        for k in sorted(m):
            p = prev[k].to(torch.float64)
            v = (older[k].to(torch.float64) - p) * -self.BETA + (m[k].to(torch.float64) - p)
            out[k] = (p + v).to(torch.float32).contiguous()
        return canonical_bytes(out)


def server_update_for(name: ServerUpdate | int | str) -> ServerUpdateRule:
    """The registered server update for a name or an on-chain code."""
    try:
        return _UPDATES[ServerUpdate.parse(name)]()
    except UnknownWord as exc:
        raise ServerUpdateError(str(exc)) from None
