"""Model loading and sharding: a contiguous range of transformer layers runs forward and backward on its own."""
