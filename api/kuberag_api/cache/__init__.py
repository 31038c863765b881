"""The answer caches: L1 in-process, L2 the Redis sidecar, L3 semantic; keys and the tiering."""
