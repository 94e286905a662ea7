"""Chain layer: contract clients, transaction sending, event watching, keys."""
