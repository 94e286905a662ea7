"""The node daemon: reacts to chain events, drives p2p and the shard trainer, keeps durable state."""
