"""Whole-loss-curve laws: fit a law of the loss against the learning-rate schedule to the metrics.jsonl of a few
runs of one model size, and predict the final loss, with an interval, of a run under another schedule or length
(`scaling predict`). Modules: schedules (per-step lr, numpy), spec (the --schedule syntax), runs (run directories
into curves), laws (multi-power and LR-annealing laws), fitting (robust fit, bootstrap), forecast (predictions),
plots, prereg (preregistered sweep predictions and their scoring), validate (held-out runs against baselines)."""
