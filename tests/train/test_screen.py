"""Screening attacks one by one: each poisoned update is refused with its reason; honest ones are kept."""

import math

import pytest
import torch

from node.train.screen import screen


def _ref():
    return {"a.w": torch.zeros(4, 3), "b": torch.zeros(2)}


def _honest(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"a.w": 0.1 + 0.02 * torch.randn(4, 3, generator=g), "b": 0.1 + 0.02 * torch.randn(2, generator=g)}
            for _ in range(n)]


def test_honest_updates_all_kept():
    res = screen(_honest(4), _ref(), [0, 1, 2, 3])
    assert res.kept == [0, 1, 2, 3] and res.refused == {}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_refused(value):
    s = _honest(4)
    s[2]["b"][1] = value
    res = screen(s, _ref())
    assert res.kept == [0, 1, 3]
    assert res.refused[2].startswith("non-finite") and "'b'" in res.refused[2]


def test_wrong_shape_and_names_refused():
    s = _honest(4)
    s[0] = {"a.w": torch.zeros(3, 4), "b": torch.zeros(2)}
    s[1] = {"a.w": torch.zeros(4, 3)}
    res = screen(s, _ref(), [10, 11, 12, 13])
    assert res.kept == [12, 13]
    assert "shape" in res.refused[10] and "(3, 4)" in res.refused[10]
    assert "names" in res.refused[11]


def test_sign_flipped_and_scaled_update_refused_by_norm():
    s = _honest(4)
    s[3] = {k: -10 * v for k, v in s[3].items()}
    res = screen(s, _ref())
    assert res.kept == [0, 1, 2] and res.refused[3].startswith("norm")


def test_norm_test_needs_three_updates():
    s = _honest(2)
    s[1] = {k: -10 * v for k, v in s[1].items()}
    assert screen(s, _ref()).kept == [0, 1]


def test_copies_count_once():
    s = _honest(4)
    s[3] = {k: v.clone() for k, v in s[1].items()}
    s[0] = {k: v.clone() for k, v in s[1].items()}
    res = screen(s, _ref())
    assert res.kept == [0, 2]       # the group {0, 1, 3} of identical updates counts once, as the lowest replica's
    assert res.refused == {1: "copied: identical to replica 0's update (counted once, as 0's)",
                           3: "copied: identical to replica 0's update (counted once, as 0's)"}


def test_unchanged_update_refused():
    s = _honest(4)
    s[0] = _ref()
    res = screen(s, _ref())
    assert res.kept == [1, 2, 3] and res.refused[0].startswith("unchanged")


def test_same_result_whatever_the_order_of_evaluation():
    """The outcome depends on the set, not on which update came first: labels are kept in the caller's order."""
    s = _honest(5, seed=3)
    s[4] = {k: 20 * v for k, v in s[4].items()}
    a = screen(s, _ref(), [0, 1, 2, 3, 4])
    b = screen(list(reversed(s)), _ref(), [4, 3, 2, 1, 0])
    assert sorted(a.kept) == sorted(b.kept) == [0, 1, 2, 3] and a.refused.keys() == b.refused.keys()


def test_sign_flipped_update_of_honest_size_refused_by_direction():
    """Reversed but not scaled: its distance from the start is honest, so only the direction test sees it."""
    s = _honest(4)
    s[2] = {k: -v for k, v in s[2].items()}  # the start is zero: this reverses the change
    res = screen(s, _ref())
    assert res.kept == [0, 1, 3] and res.refused[2].startswith("direction")
