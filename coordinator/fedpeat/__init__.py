"""FedPEAT (emulator-assisted federated tuning) at network level: real rounds for the paper's three cases and
Fed-FT (``runner``), the workload they share (``workload``), the controller's gymnasium environment with its
loss model fitted from real runs (``env``), PPO and the baselines (``controller``), and the experiments of
docs/fedpeat.md (``experiments``). Emulators themselves are ``node.emulator``.
"""
