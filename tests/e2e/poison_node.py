"""A hostile daemon for tests/e2e/test_poison_e2e.py: the real `bsns node run`, except that every local update it
hands to the round sync is poisoned (even rounds: a NaN; odd rounds: its change sign-flipped and scaled x10) and
announced with 10^15 samples. Run as ``python tests/e2e/poison_node.py node run --config node.toml``."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.daemon import session as S  # noqa: E402

_honest_work_round = S.SessionRunner._work_round


def _poisoned(self, rnd):
    work = _honest_work_round(self, rnd)
    if work is None or work.local is None:
        return work
    from node.train.adapter_state import canonical_bytes, state_from_bytes

    mine, start = state_from_bytes(work.local), state_from_bytes(self._global_before(rnd))
    if rnd % 2 == 0:
        bad = {k: v.clone() for k, v in mine.items()}
        next(iter(bad.values())).view(-1)[0] = float("nan")
    else:
        bad = {k: start[k] - 10.0 * (mine[k] - start[k]) for k in mine}
    return replace(work, local=canonical_bytes(bad), samples=10**15)


S.SessionRunner._work_round = _poisoned

if __name__ == "__main__":
    from coordinator.cli import main

    main()
