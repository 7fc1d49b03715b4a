"""The predicted final loss of a run in progress (`train.predict_every`): a periodic action of the training loop
that fits the multi-power law to the run's own train-loss curve so far and writes the predicted final loss, with
its 5-95% prediction interval, to metrics.jsonl (`predict/final_loss`, `predict/final_loss_lo`,
`predict/final_loss_hi`, `predict/at_step`: the step whose curve the fit saw) and to the progress line.

The fit runs in a background thread, so the loop does not wait for it: a fit started at step s is reported at the
first action after it finishes (`predict/at_step` = s), and no new fit starts while one runs. Until the curve holds
enough points (and, for the annealing term, until the lr has started to fall) the line says why there is no number.
The loss history comes from the rows the run logged before this segment (metrics.jsonl, read once) plus the loss at
every log step of this segment. Only the main process fits; the others do nothing.

How far to trust it: on a synthetic multi-power curve (0.3% noise) a cosine run of 600 steps, fitted at step 400,
predicts its final loss within 0.6% and inside the interval; a WSD run fitted 100 steps into a 300-step decay
predicted 6.5% low with the truth outside its 90% interval (tests/test_live_prediction.py; the laws need a good
part of the decay to pin the annealing term). The fit's own cost is `predict/fit_s` (seconds of the thread):
measured 10.0 CPU-s for a fit with 40 bootstrap draws on 37 logged points (5.6 at 20 draws), which a CPU-only run
pays out of its training cores and an accelerator host pays out of idle host CPU; hence off by default.

The trainer (scaling/train/loop.py) knows nothing of this module: `scaling train` hands the action in
(scaling/cli/train.py), because analysis sits below the training layer.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from scaling.train.metrics import read_metrics
from scaling.train.runtime import Hook

KEYS = ('predict/final_loss', 'predict/final_loss_lo', 'predict/final_loss_hi', 'predict/at_step', 'predict/fit_s')


class LivePrediction:
  """The action: collects (step, train loss) at every call, starts a fit every `every` steps, reports finished fits."""

  def __init__(self, every: int, *, law: str = 'multipower', draws: int = 40, seed: int = 0, background: bool = True):
    if every <= 0:
      raise ValueError(f'train.predict_every must be > 0 to predict, got {every}')
    self.every, self.law, self.draws, self.seed = int(every), law, int(draws), int(seed)
    self.background = background   # False: the fit runs in the loop (tests: deterministic timing)
    self.steps: list[int] = []
    self.losses: list[float] = []
    self._read_past = False
    self._thread: threading.Thread | None = None
    self._result: dict | None = None
    self.reported: list[dict] = []   # every result reported, in order (for tests and the end of the run)

  def _past(self, run) -> None:
    """The rows logged before this segment began (a resumed run's curve so far), read once."""
    self._read_past = True
    for row in read_metrics(run.workdir):
      if 'train/loss' in row and row['step'] < run.start_step + 1 and math.isfinite(row['train/loss']):
        self.steps.append(int(row['step']))
        self.losses.append(float(row['train/loss']))

  def __call__(self, run) -> dict:
    if not run.is_main:
      return {}
    if not self._read_past:
      self._past(run)
    loss = float(run.loss)
    if math.isfinite(loss) and (not self.steps or run.step > self.steps[-1]):
      self.steps.append(int(run.step))
      self.losses.append(loss)
    row = self._report(run)
    total = run.setup.total_steps
    if run.step % self.every == 0 and run.step < total and self._thread is None:
      self._start(run.setup.schedule, total, run.step)
    return row

  def _start(self, schedule, total: int, at_step: int) -> None:
    steps, losses = list(self.steps), list(self.losses)
    # the lr per update, computed here (the optax schedule runs jax ops: not from the fit's thread)
    eta = np.asarray(schedule(np.arange(int(total))), dtype=np.float64).reshape(-1)

    def work():
      from scaling.analysis.curves.fitting import one_blas_thread
      from scaling.analysis.curves.forecast import predict_during_training
      t0 = time.perf_counter()
      try:
        with one_blas_thread():
          out = predict_during_training(steps, losses, lambda c: eta[np.asarray(c, dtype=np.int64)], total,
                                        law=self.law, draws=self.draws, seed=self.seed)
      except Exception as e:   # noqa: BLE001  (a failed fit must never stop training: say why instead)
        out = {'state': 'cannot predict', 'reason': f'the fit failed: {type(e).__name__}: {e}'}
      out['at_step'], out['fit_s'] = at_step, time.perf_counter() - t0
      self._result = out

    self._thread = threading.Thread(target=work, name='predict-final-loss', daemon=True)
    self._thread.start()
    if not self.background:
      self._thread.join()

  def _report(self, run) -> dict:
    """The row of a fit that has finished since the last call ({} if none), and its progress line."""
    if self._thread is None or self._thread.is_alive():
      return {}
    self._thread, out, self._result = None, self._result, None
    if out is None:
      return {}
    self.reported.append(out)
    at = out['at_step']
    if out.get('state') != 'predicted':
      run.progress.write(f'step {run.step}: predicted final train loss: none yet from the curve to step {at} '
                         f'({out.get("reason", "")})')
      return {}
    lo, hi = out['pi']
    run.progress.write(f'step {run.step}: predicted final train loss {out["point"]:.4f} (90%: {lo:.4f}-{hi:.4f}) '
                       f'from the curve to step {at} ({out["law"]} law, fit {out["fit_s"]:.1f}s)')
    return dict(zip(KEYS, (out['point'], lo, hi, at, out['fit_s'])))

  def wait(self, timeout: float | None = None) -> None:
    """Waits for a fit in progress (tests; the loop never waits)."""
    if self._thread is not None:
      self._thread.join(timeout)


class _PredictHook(Hook):
  """Due at every log step (the curve) and at every predict_every-th step (a fit), never after the last step."""

  def due(self, step: int, last: int) -> bool:
    return step < last and (step % self.every == 0 or step % self.fn.every == 0)


def hook(cfg) -> Hook | None:
  """The loop action for `train.predict_every` (None when it is 0)."""
  every = int(cfg.train.get('predict_every', 0) or 0)
  if every <= 0:
    return None
  return _PredictHook('predict', LivePrediction(every, seed=int(cfg.train.seed)), every=int(cfg.train.log_every),
                      at_last=False, reads_state=True)
