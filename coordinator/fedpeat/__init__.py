"""FedPEAT (emulator-assisted federated tuning) at network level.

- ``harness``: real rounds for the paper's three cases and Fed-FT, in one process;
- ``workload``: the model, data, adapters and memory measurement they share;
- ``env``: the controller's gymnasium environment, its loss model fitted from real runs;
- ``policies``: who takes part in a round and with which emulator (fixed, list, random, PPO), one interface;
- ``ppo``: training, evaluating, saving and loading the PPO controller;
- ``control``: the controller of a daemon-run FedPEAT session (``bsns fedpeat control``);
- ``onchain``: a run's emulators and round plans in FedPeatLedger;
- ``experiments``: the experiments of docs/fedpeat.md.

Emulators themselves are ``node.emulator``; the daemon's side of a FedPEAT session is ``node.daemon.fedpeat``.
"""
