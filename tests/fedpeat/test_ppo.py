"""The controller's environment, the fitted loss model, PPO, and the memory guard."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.fedpeat.env import (ChannelModel, DeviceProfile, LossModel, RewardWeights, feasible, gym_env_class,
                                     observation)
from coordinator.fedpeat.policies import PPOPolicy, RandomPolicy
from coordinator.fedpeat.ppo import evaluate_in_env, train_controller
from coordinator.fedpeat.workload import FedPEATError

OPTIONS = [0.25, 0.5, 0.75, 1.0]


def profile(capacities=(120, 140, 160, 200)):
    need = {0.25: 100, 0.5: 120, 0.75: 140, 1.0: 160}
    return DeviceProfile(capacities=list(capacities), data_weights=[1.0] * len(capacities), options=list(OPTIONS),
                         memory_need=need, emulator_bytes={0.25: 60e6, 0.5: 70e6, 0.75: 80e6, 1.0: 90e6},
                         adapter_bytes=500_000)


def curve(a, plateau, l0=0.7, n=8):
    out = [l0]
    for _ in range(n):
        out.append(out[-1] - a * (out[-1] - plateau))
    return out


def loss_model():
    return LossModel.fit({0.25: curve(0.2, 0.45), 0.5: curve(0.3, 0.40), 0.75: curve(0.35, 0.37), 1.0: curve(0.4, 0.35)})


def test_loss_model_fit_recovers_rate_and_plateau_from_curves():
    lm = loss_model()
    assert lm.rate == pytest.approx([0.2, 0.3, 0.35, 0.4], abs=1e-6)
    assert lm.plateau == pytest.approx([0.45, 0.40, 0.37, 0.35], abs=1e-6)
    a, p = lm.params(0.375)  # halfway between measured retentions: linear interpolation
    assert a == pytest.approx(0.25) and p == pytest.approx(0.425)
    # a round with every device at one retention reproduces the fitted curve
    assert lm.step(0.7, [0.5] * 4, [1.0] * 4) == pytest.approx(curve(0.3, 0.40)[1])
    assert lm.step(0.7, [None] * 4, [1.0] * 4) == 0.7  # nobody trains, nothing moves
    assert LossModel.from_dict(lm.to_dict()) == lm
    with pytest.raises(FedPEATError, match="at least 3"):
        LossModel.fit({0.5: [0.7, 0.6]})


def test_loss_model_fit_stays_admissible_on_a_curve_that_is_not_geometric():
    # slow then fast, as when a new task head warms up: no (a, L*) reproduces it, the fit must stay sane
    lm = LossModel.fit({0.5: [0.694, 0.688, 0.681, 0.681, 0.676, 0.659, 0.613]})
    assert 0.0 < lm.rate[0] <= 1.0 and 0.0 <= lm.plateau[0] <= 0.613
    assert lm.step(0.694, [0.5], [1.0]) < 0.694  # training still lowers the modelled loss


def test_guard_never_hands_out_an_emulator_that_does_not_fit():
    rng = np.random.default_rng(0)
    for _ in range(500):
        caps = rng.integers(50, 220, size=5).tolist()
        p = profile(caps)
        wanted = [None if rng.random() < 0.2 else OPTIONS[rng.integers(4)] for _ in caps]
        got = feasible(wanted, p)
        for i, (w, g) in enumerate(zip(wanted, got)):
            if g is not None:
                assert p.memory_need[g] <= caps[i] and g <= w
            elif w is not None:  # skipped only when nothing at or below the wish fits
                assert all(p.memory_need[o] > caps[i] for o in OPTIONS if o <= w)


def test_environment_follows_the_paper_reward_terms():
    from gymnasium.utils.env_checker import check_env

    Env = gym_env_class()
    env = Env(profile(), loss_model(), rounds=4)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (3 * 4 + 2,)
    # everyone skips: no progress, no transfer, no penalty
    _, r_skip, _, _, info = env.step([0, 0, 0, 0])
    assert r_skip == 0.0 and info["loss"] == pytest.approx(loss_model().initial_loss)
    # an emulator that does not fit device 0 (need 160 > 120) drops it from the round and is penalised
    env.reset(seed=1)
    _, _, _, _, info = env.step([4, 0, 0, 0])
    assert info["choices"] == [None, None, None, None]
    # exchanges beyond the allowance cost reward: alternating emulators vs keeping one, same channel draws
    w = RewardWeights(time=0.0, exchange_allowance=1)
    env = Env(profile(), loss_model(), rounds=4, weights=w)
    env.reset(seed=3)
    keep = sum(env.step([1, 1, 1, 1])[1] for _ in range(3))
    env.reset(seed=3)
    swap = sum(env.step([a, a, a, a])[1] for a in (1, 2, 1))
    assert swap < keep


@pytest.mark.slow
def test_ppo_learns_a_policy_that_beats_random_selection():
    """PPO trained in a small fitted environment earns more reward there than random selection.

    Measured on this environment (2,048 or 4,096 PPO steps, seeds 0-3, 20 evaluation episodes each): PPO's
    mean episode reward 1.67 to 4.48, random selection's -2.19, so PPO led by 3.85 to 6.66. The margin of 2.0 is
    about half the smallest lead seen: the test fails when PPO stops learning, not on an unlucky seed. (It does
    not claim PPO beats the best fixed policy: fixed 0.5 earned 3.89, inside PPO's range; issue 17 asks that.)
    The trained policy's choices also pass the memory guard unchanged or are cut down by it, never past it.
    """
    p, lm = profile(), loss_model()
    policy = PPOPolicy(train_controller(p, lm, rounds=4, timesteps=2048, seed=0), OPTIONS)
    ppo = evaluate_in_env(policy, p, lm, rounds=4, episodes=20, seed=100)["reward"]
    random = evaluate_in_env(RandomPolicy(OPTIONS, 4), p, lm, rounds=4, episodes=20, seed=100)["reward"]
    assert ppo - random >= 2.0, (ppo, random)
    rng = np.random.default_rng(0)
    for _ in range(200):
        obs = observation(p, rng.exponential(1.0, 4), rng.integers(0, 4, 4), float(rng.uniform(0.3, 0.7)), 0.7,
                          int(rng.integers(0, 4)), 4, 2)
        for i, r in enumerate(feasible(policy.choose(obs, rng), p)):
            assert r is None or p.memory_need[r] <= p.capacities[i]


def test_channel_rate_grows_with_gain_and_snr():
    ch = ChannelModel()
    assert ch.rate_bytes_per_s(0, 2.0) > ch.rate_bytes_per_s(0, 1.0)
    assert ch.rate_bytes_per_s(3, 1.0) > ch.rate_bytes_per_s(0, 1.0)
