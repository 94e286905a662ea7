"""The adaptive controller's world: a gymnasium environment of FedPEAT rounds, after Chua et al. (FedPEAT).

State (per device): memory capacity, this round's channel gain, emulator exchanges so far; plus the global
loss and the round. Action (per device): skip the round, or take part with one of the emulator retentions.
Reward, as in the paper: progress of the loss toward convergence, minus penalties for the round's
transmission time, for devices whose emulator exceeds a fraction of their memory, and for emulator
exchanges beyond a per-device allowance.

What is measured and what is assumed:
- ``LossModel`` is FITTED from real runs of this project (``coordinator.fedpeat.harness`` at a fixed retention
  with all devices): per retention r, the one-round map ``L' = L - a(r)·(L - L*(r))`` by least squares on
  consecutive (L_t, L_t+1) pairs of the real validation loss (constrained to 0 < a <= 1, 0 <= L* <= the
  lowest loss seen); between measured retentions a and L* are
  interpolated linearly. A round where devices take part with different retentions moves the loss by the
  data-weighted sum of their terms (an assumption: a partial round counts pro rata).
- memory needs and bytes per retention are the real measurements of ``Workload`` (weights, optimizer state,
  saved activations; fp32 emulator size, adapter size).
- ``ChannelModel`` is the paper's standard wireless link: Rayleigh fading around a per-device mean SNR, Shannon
  rate ``B·log2(1+SNR·g)``. Its constants are settings, not fitted (nothing in this project measures radio).

Hand-written (no library models FedPEAT); gymnasium provides the interface, stable-baselines3 the learner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from coordinator.fedpeat.workload import FedPEATError

OBS_HIGH = 20.0  # a deep-fade-free gain or a huge capacity ratio carries no more information beyond this


def _fit_curve(L: np.ndarray) -> tuple[float, float]:
    """Least-squares (a, L*) of ``L[t+1] = L[t] - a (L[t] - L*)`` with 0 < a <= 1 and 0 <= L* <= min(L).

    The unconstrained solution (a linear regression of L[t+1] on L[t]) is taken when it is admissible; a
    curve that is not geometric (e.g. slow then fast, as a new head warms up) gets the best admissible fit:
    a grid over L*, the optimal a for each in closed form, refined by alternating the two closed forms.
    """
    x, y = L[:-1], L[1:]
    drop = x - y
    A = np.stack([x, np.ones_like(x)], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(A, y, rcond=None)
    a = 1.0 - alpha
    if 0.0 < a <= 1.0:
        plateau = beta / a
        if 0.0 <= plateau <= L.min():
            return float(a), float(plateau)

    def best_a(p):
        d = x - p
        return float(np.clip((drop @ d) / max(d @ d, 1e-12), 1e-3, 1.0))

    def sse(a, p):
        return float(((drop - a * (x - p)) ** 2).sum())

    hi = float(L.min())
    cands = [(sse(best_a(p), p), best_a(p), p) for p in np.linspace(0.0, hi, 200)]
    _, a, p = min(cands)
    for _ in range(50):
        p = float(np.clip(np.mean(x - drop / a), 0.0, hi))
        a = best_a(p)
    return a, p


@dataclass
class LossModel:
    """Per-retention convergence rate ``a`` and plateau ``L*`` fitted from real loss curves."""

    retentions: list[float]
    rate: list[float]
    plateau: list[float]
    initial_loss: float
    source: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, curves: dict[float, list[float]]) -> "LossModel":
        """``curves[r]`` = validation loss before round 1, after round 1, ... of a real run at retention r."""
        if not curves:
            raise FedPEATError("no loss curves to fit the environment's loss model")
        rs, rates, plateaus = [], [], []
        for r in sorted(curves):
            L = np.asarray(curves[r], dtype=float)
            if len(L) < 3:
                raise FedPEATError(f"loss curve at retention {r} has {len(L)} points; at least 3 are needed")
            a, plateau = _fit_curve(L)
            rs.append(float(r))
            rates.append(a)
            plateaus.append(plateau)
        initial = float(np.mean([curves[r][0] for r in curves]))
        return cls(rs, rates, plateaus, initial, {str(k): list(map(float, v)) for k, v in curves.items()})

    def params(self, r: float) -> tuple[float, float]:
        return float(np.interp(r, self.retentions, self.rate)), float(np.interp(r, self.retentions, self.plateau))

    def step(self, loss: float, choices: list, weights: list[float]) -> float:
        """The loss after one round where device i took part with retention ``choices[i]`` (None = skipped)."""
        total = sum(weights)
        delta = 0.0
        for r, w in zip(choices, weights):
            if r is None:
                continue
            a, plateau = self.params(r)
            delta += (w / total) * a * (loss - plateau)
        return loss - delta

    def to_dict(self) -> dict:
        return {"retentions": self.retentions, "rate": self.rate, "plateau": self.plateau,
                "initial_loss": self.initial_loss, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "LossModel":
        try:
            return cls(list(d["retentions"]), list(d["rate"]), list(d["plateau"]), float(d["initial_loss"]), d.get("source", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise FedPEATError(f"not a fitted loss model: {exc}") from None


@dataclass
class ChannelModel:
    """Wireless uplink/downlink per device: Rayleigh fading around a mean SNR, Shannon rate."""

    bandwidth_hz: float = 10e6
    mean_snr_db: list[float] = field(default_factory=lambda: [5.0, 10.0, 15.0, 20.0])

    def mean_snr(self, i: int) -> float:
        return 10 ** (self.mean_snr_db[i % len(self.mean_snr_db)] / 10)

    def sample_gains(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.exponential(1.0, size=n)  # |h|^2 of a Rayleigh channel, mean 1

    def rate_bytes_per_s(self, i: int, gain: float) -> float:
        return self.bandwidth_hz * math.log2(1.0 + self.mean_snr(i) * max(gain, 1e-3)) / 8.0


@dataclass
class DeviceProfile:
    """What the controller knows about the devices and the emulators (all sizes in bytes, measured)."""

    capacities: list[int]
    data_weights: list[float]
    options: list[float]                 # selectable retentions, ascending
    memory_need: dict[float, int]        # training memory of the emulator at each retention
    emulator_bytes: dict[float, int]
    adapter_bytes: int

    @property
    def n(self) -> int:
        return len(self.capacities)


def feasible(choices: list, profile: DeviceProfile, options: list[float] | None = None) -> list:
    """The hard memory guard: a device never gets an emulator whose measured need exceeds its capacity.

    A choice that does not fit falls back to the largest smaller retention among ``options`` (default: the
    profile's) that does, or to skipping.
    """
    opts = profile.options if options is None else options
    out = []
    for i, r in enumerate(choices):
        if r is not None:
            fitting = [o for o in opts if o <= r and profile.memory_need[o] <= profile.capacities[i]]
            r = max(fitting) if fitting else None
        out.append(r)
    return out


def decode_action(action, options: list[float]) -> list:
    return [None if int(a) == 0 else options[int(a) - 1] for a in np.asarray(action).reshape(-1)]


def observation(profile: DeviceProfile, gains, exchanges, loss: float, loss0: float, t: int, rounds: int,
                exchange_cap: int) -> np.ndarray:
    """The controller's view: per device capacity / largest need, gain, exchanges / cap; loss / L0; round / T."""
    top = max(profile.memory_need.values())
    obs = [c / top for c in profile.capacities] + [float(g) for g in gains] + [e / max(exchange_cap, 1) for e in exchanges]
    obs += [loss / loss0, t / rounds]
    return np.clip(np.asarray(obs, dtype=np.float32), 0.0, OBS_HIGH)


@dataclass
class RewardWeights:
    progress: float = 10.0      # per unit of (L - L') / (the loss drop achievable in the job's rounds)
    time: float = 1.0           # per unit of the round's slowest transfer / a reference transfer (capped)
    time_cap: float = 5.0
    memory: float = 1.0         # per device above memory_fraction of its capacity
    exchange: float = 0.5       # per emulator exchange above the allowance
    memory_fraction: float = 1.0  # the paper's phi: penalise a device whose need exceeds phi x its capacity
    exchange_allowance: int = 2


def gym_env_class():
    import gymnasium as gym
    from gymnasium import spaces

    class FedPEATEnv(gym.Env):
        """FedPEAT rounds over a fitted loss model; one episode = one training job of ``rounds`` rounds."""

        metadata = {"render_modes": []}

        def __init__(self, profile: DeviceProfile, loss_model: LossModel, channel: ChannelModel | None = None,
                     rounds: int = 8, weights: RewardWeights | None = None):
            super().__init__()
            self.profile, self.loss_model = profile, loss_model
            self.channel = channel or ChannelModel()
            self.rounds = rounds
            self.w = weights or RewardWeights()
            n = profile.n
            self.action_space = spaces.MultiDiscrete([len(profile.options) + 1] * n)
            self.observation_space = spaces.Box(low=0.0, high=OBS_HIGH, shape=(3 * n + 2,), dtype=np.float32)
            # progress is counted against what the job can achieve in its rounds: every device at the largest
            # retention every round (otherwise a slow-converging fit makes "nobody trains" the best policy)
            top = max(profile.options)
            best = loss_model.initial_loss
            for _ in range(rounds):
                best = loss_model.step(best, [top] * n, profile.data_weights)
            self.achievable = max(loss_model.initial_loss - best, 1e-3 * loss_model.initial_loss)
            # reference transfer: the largest emulator over an average link (mean SNR of the devices, gain 1)
            mean_rate = float(np.mean([self.channel.rate_bytes_per_s(i, 1.0) for i in range(n)]))
            self.ref_time = max(profile.emulator_bytes.values()) / mean_rate

        def _obs(self):
            return observation(self.profile, self.gains, self.exchanges, self.loss, self.loss_model.initial_loss, self.t,
                               self.rounds, self.w.exchange_allowance)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            self.loss = self.loss_model.initial_loss
            self.held = [None] * self.profile.n
            self.exchanges = [0] * self.profile.n
            self.gains = self.channel.sample_gains(self.profile.n, self.np_random)
            return self._obs(), {}

        def step(self, action):
            p, w = self.profile, self.w
            wanted = decode_action(action, p.options)
            choices = []
            over_fraction = 0
            for i, r in enumerate(wanted):
                if r is not None and p.memory_need[r] > w.memory_fraction * p.capacities[i]:
                    over_fraction += 1
                # an emulator that does not fit at all cannot train: the device drops out of the round
                choices.append(r if r is None or p.memory_need[r] <= p.capacities[i] else None)
            round_time = 0.0
            extra_exchanges = 0
            for i, r in enumerate(choices):
                if r is None:
                    continue
                nbytes = 2 * p.adapter_bytes
                if self.held[i] != r:
                    nbytes += p.emulator_bytes[r]
                    self.held[i] = r
                    self.exchanges[i] += 1
                    if self.exchanges[i] > w.exchange_allowance:
                        extra_exchanges += 1
                round_time = max(round_time, nbytes / self.channel.rate_bytes_per_s(i, self.gains[i]))
            new_loss = self.loss_model.step(self.loss, choices, p.data_weights)
            reward = (w.progress * (self.loss - new_loss) / self.achievable - w.time * min(round_time / self.ref_time, w.time_cap)
                      - w.memory * over_fraction - w.exchange * extra_exchanges)
            self.loss = new_loss
            self.t += 1
            self.gains = self.channel.sample_gains(p.n, self.np_random)
            info = {"choices": choices, "round_time": round_time, "loss": new_loss}
            return self._obs(), float(reward), self.t >= self.rounds, False, info

    return FedPEATEnv
