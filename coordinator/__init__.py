"""bsns coordinator: network-level work built on ``node`` (deploy, proposals, planning,
adaptive control, benchmarks, the demo and the CLI). Depends on ``node``; never the reverse."""
