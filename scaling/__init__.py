"""scaling: LM scaling experiments in JAX/Flax NNX.

Sub-packages in layers, imports only downward (README "Architecture", tests/test_layers.py):
base < data < config < model < train < inference, launch < analysis < cli.
"""
