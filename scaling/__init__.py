"""scaling: LM scaling experiments in JAX/Flax NNX."""
