"""scaling: LM scaling experiments in JAX/Flax NNX."""

from scaling.hostmem import tune_malloc as _tune_malloc

_tune_malloc()   # before JAX's CPU backend starts its threads: see scaling/hostmem.py
