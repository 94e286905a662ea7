"""Who takes part in a FedPEAT round, and with which emulator: the participation policies, behind one interface.

Every policy answers ``choose(obs, rng) -> [retention or None per device]`` (None: the device sits the round
out); the caller then applies the hard memory guard (``env.feasible``), so no policy can hand a device an
emulator that does not fit it. Policies register themselves by name (``register_policy``) and are built from one
``PolicySettings`` (``make_policy``), so the in-process harness, ``bsns fedpeat run`` and the controller of a
daemon-run session (``bsns fedpeat control``) all offer the same names with the same checks; the command line
chooses one with ``--strategy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from coordinator.fedpeat.env import decode_action
from coordinator.fedpeat.workload import FedPEATError


@dataclass(frozen=True)
class PolicySettings:
    """What any policy may be configured with: the devices and retention options, and each policy's own knob."""

    devices: int
    options: tuple[float, ...]
    retention: float | None = None                         # fixed: every device's retention (default: the largest)
    device_retentions: tuple[float, ...] | None = None    # list: one retention per device
    random_p: float = 0.5                                   # random: the chance a device takes part
    controller_dir: Path | None = None                      # ppo: a trained controller (bsns fedpeat train-controller)


class ParticipationPolicy:
    """A registered policy: ``from_settings`` checks its settings in one line, ``choose`` decides a round."""

    name: ClassVar[str]

    @classmethod
    def from_settings(cls, s: PolicySettings) -> "ParticipationPolicy":
        raise NotImplementedError

    def choose(self, obs, rng) -> list:
        raise NotImplementedError


_POLICIES: dict[str, type[ParticipationPolicy]] = {}


def register_policy(cls: type[ParticipationPolicy]) -> type[ParticipationPolicy]:
    """Class decorator: make a policy available under its ``name``."""
    _POLICIES[cls.name] = cls
    return cls


def policy_names() -> tuple[str, ...]:
    return tuple(_POLICIES)


def make_policy(name: str, settings: PolicySettings) -> ParticipationPolicy:
    """The policy called ``name``, configured by ``settings``; ``FedPEATError`` in one line otherwise."""
    if name not in _POLICIES:
        raise FedPEATError(f"unknown strategy {name!r} (known: {', '.join(_POLICIES)})")
    return _POLICIES[name].from_settings(settings)


@register_policy
class FixedPolicy(ParticipationPolicy):
    """Fixed retention, every device, every round (the paper's first baseline)."""

    name = "fixed"

    def __init__(self, retention: float, n: int):
        self.retention, self.n = retention, n

    @classmethod
    def from_settings(cls, s: PolicySettings) -> "FixedPolicy":
        retention = max(s.options) if s.retention is None else float(s.retention)
        if retention not in s.options:
            raise FedPEATError(f"strategy fixed: retention {retention} is not one of the options {list(s.options)}")
        return cls(retention, s.devices)

    def choose(self, obs, rng) -> list:
        return [self.retention] * self.n


@register_policy
class ListPolicy(ParticipationPolicy):
    """Each device keeps its own given retention (case 1 with per-device emulators chosen by hand)."""

    name = "list"

    def __init__(self, retentions: list[float]):
        self.retentions = list(retentions)

    @classmethod
    def from_settings(cls, s: PolicySettings) -> "ListPolicy":
        given = list(s.device_retentions or ())
        if len(given) != s.devices or any(r not in s.options for r in given):
            raise FedPEATError(f"strategy list needs one retention per device ({s.devices}) among the options "
                               f"{list(s.options)}, got {given}")
        return cls([float(r) for r in given])

    def choose(self, obs, rng) -> list:
        return list(self.retentions)


@register_policy
class RandomPolicy(ParticipationPolicy):
    """Random selection: each device takes part with probability ``p``, at a random retention."""

    name = "random"

    def __init__(self, options: list[float], n: int, p: float = 0.5):
        self.options, self.n, self.p = list(options), n, p

    @classmethod
    def from_settings(cls, s: PolicySettings) -> "RandomPolicy":
        return cls(list(s.options), s.devices, s.random_p)

    def choose(self, obs, rng) -> list:
        return [self.options[int(rng.integers(len(self.options)))] if rng.random() < self.p else None
                for _ in range(self.n)]


@register_policy
class PPOPolicy(ParticipationPolicy):
    """The trained controller, acting deterministically on the real round's observation."""

    name = "ppo"

    def __init__(self, model, options: list[float]):
        self.model, self.options = model, list(options)

    @classmethod
    def from_settings(cls, s: PolicySettings) -> "PPOPolicy":
        from coordinator.fedpeat.ppo import load_controller

        if s.controller_dir is None:
            raise FedPEATError("strategy ppo needs --controller DIR (bsns fedpeat train-controller)")
        model, profile, _, _ = load_controller(s.controller_dir)
        if len(profile.capacities) != s.devices or list(profile.options) != list(s.options):
            raise FedPEATError(f"controller was trained for {len(profile.capacities)} devices and options "
                               f"{profile.options}, not {s.devices} and {list(s.options)}")
        return cls(model, list(s.options))

    def choose(self, obs, rng) -> list:
        action, _ = self.model.predict(obs, deterministic=True)
        return decode_action(action, self.options)
