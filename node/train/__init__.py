"""Training: data, partitions, adapter state and hashing, aggregation, the local and shard trainers."""
