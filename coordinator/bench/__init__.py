"""Benchmarks: each prints a figure beside its baseline, measured in the same run."""
