"""The PPO controller: trained in the fitted environment, evaluated there, saved and loaded.

The controller is stable-baselines3's PPO on ``env.gym_env_class()``; it is saved as the SB3 zip plus a JSON of
the device profile and the fitted loss model it was trained for. As a participation policy it is
``policies.PPOPolicy``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from coordinator.fedpeat.env import ChannelModel, DeviceProfile, LossModel, RewardWeights, gym_env_class
from coordinator.fedpeat.workload import FedPEATError


def train_controller(profile: DeviceProfile, loss_model: LossModel, *, rounds: int, timesteps: int, seed: int = 0,
                     channel: ChannelModel | None = None, weights: RewardWeights | None = None):
    """Train PPO in the fitted environment; returns the SB3 model."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = gym_env_class()(profile, loss_model, channel, rounds=rounds, weights=weights)
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, learning_rate=3e-4, gamma=0.95,
                ent_coef=0.01, seed=seed, verbose=0, device="cpu")
    model.learn(total_timesteps=timesteps)
    return model


def evaluate_in_env(policy, profile: DeviceProfile, loss_model: LossModel, *, rounds: int, episodes: int = 20,
                    seed: int = 0, channel: ChannelModel | None = None, weights: RewardWeights | None = None) -> dict:
    """Mean episode reward and final modelled loss of a participation policy in the environment (guard applied)."""
    from coordinator.fedpeat.env import feasible

    env = gym_env_class()(profile, loss_model, channel, rounds=rounds, weights=weights)
    rng = np.random.default_rng(seed)
    rewards, losses = [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            choices = feasible(policy.choose(obs, rng), profile)
            action = [0 if r is None else profile.options.index(r) + 1 for r in choices]
            obs, rew, done, _, info = env.step(action)
            total += rew
        rewards.append(total)
        losses.append(info["loss"])
    return {"reward": float(np.mean(rewards)), "final_loss": float(np.mean(losses))}


def save_controller(model, profile: DeviceProfile, loss_model: LossModel, rounds: int, path: str | Path) -> None:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    model.save(str(p / "ppo.zip"))
    meta = {"profile": {**asdict(profile), "memory_need": {str(k): v for k, v in profile.memory_need.items()},
                        "emulator_bytes": {str(k): v for k, v in profile.emulator_bytes.items()}},
            "loss_model": loss_model.to_dict(), "rounds": rounds}
    (p / "controller.json").write_text(json.dumps(meta, indent=1, sort_keys=True))


def load_controller(path: str | Path):
    """(PPO model, device profile, loss model, rounds) saved by ``save_controller``."""
    from stable_baselines3 import PPO

    p = Path(path)
    try:
        meta = json.loads((p / "controller.json").read_text())
        model = PPO.load(str(p / "ppo.zip"), device="cpu")
    except (OSError, ValueError, KeyError) as exc:
        raise FedPEATError(f"cannot load a controller from {p}: {exc}") from None
    pr = meta["profile"]
    profile = DeviceProfile(capacities=pr["capacities"], data_weights=pr["data_weights"], options=pr["options"],
                            memory_need={float(k): v for k, v in pr["memory_need"].items()},
                            emulator_bytes={float(k): v for k, v in pr["emulator_bytes"].items()},
                            adapter_bytes=pr["adapter_bytes"])
    return model, profile, LossModel.from_dict(meta["loss_model"]), meta["rounds"]
