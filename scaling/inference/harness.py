"""lm-evaluation-harness in-process: a workdir's model scored on lm-eval tasks without a Hugging Face export.

    scaling eval --workdir DIR --tasks hellaswag,arc_easy          # lm-eval's registered tasks
    scaling eval --workdir DIR --tasks path/to/task.yaml --limit 100 # or task YAML files (globs, a folder)

`ScalingLM` is an `lm_eval.api.model.TemplateLM` over our Transformer and tokenizer: lm-eval builds the
requests (prompts, few-shot examples, answer choices) and computes the metrics; the adapter answers

  loglikelihood(context, continuation) -> (sum of log p(continuation tokens), whether all are greedy)
      the context/continuation split is TemplateLM's (trailing spaces move to the continuation; the
      pair is encoded whole and split at the context's length, as lm-eval's `hf` model does); an
      empty context is conditioned on EOS, the token every training document ends with (our streams
      have no BOS);
  loglikelihood_rolling(text) -> log p(text), over lm-eval's disjoint rolling windows of seq_len;
  generate_until(context, gen_kwargs) -> text, decoded with the KV cache (scaling/inference/generate.py) and cut
      at the first stop sequence; greedy unless do_sample with temperature > 0.

Batched and jitted. Scoring requests are sorted by length, packed into batches of `batch_size`
rows right-padded to a multiple of BUCKET tokens (at most seq_len), and scored by one jitted forward
per (rows, width) shape: a task compiles a handful of shapes, not one per request. The last batch is
padded with dummy rows to the full batch size for the same reason. Sequences longer than seq_len
keep their last seq_len tokens (the `hf` model's left truncation); generation keeps the last
seq_len - max_gen_toks prompt tokens.

Results go to `DIR/lm_eval/results_step<N>.json` (lm-eval's results dict: per-task metrics, the task
configs, versions, n-samples) and are printed as lm-eval's own table. lm-eval is optional:
`pip install -e '.[eval]'`; without it `--tasks` fails with that line.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.base.files import atomic_write_json

BUCKET = 32
INSTALL_HINT = "lm-evaluation-harness is not installed: `pip install -e '.[eval]'` (lm_eval>=0.4.13)"


class HarnessError(RuntimeError):
  pass


def import_lm_eval():
  """The lm_eval module, or HarnessError naming the extra to install."""
  try:
    import lm_eval  # noqa: F401
    from lm_eval.api.model import TemplateLM  # noqa: F401
  except ImportError as e:
    raise HarnessError(f'{INSTALL_HINT} ({e})') from None
  return lm_eval


@functools.partial(jax.jit, static_argnames=('graphdef',))
def _score(graphdef, state, inputs_BT, targets_BT, mask_BT):
  """Per row: the sum of log p(target) over masked positions and whether every one is the argmax."""
  model = nnx.merge(graphdef, state)
  logits_BTV = model(inputs_BT).astype(jnp.float32)
  logp_BTV = jax.nn.log_softmax(logits_BTV, axis=-1)
  tok_BT = jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
  greedy_BT = jnp.argmax(logits_BTV, axis=-1) == targets_BT
  return (tok_BT * mask_BT).sum(-1), jnp.all(greedy_BT | (mask_BT == 0), axis=-1)


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


class _ScalingLMMethods:
  """ScalingLM's methods; `_lm_class` puts them before lm_eval's TemplateLM (imported only there)."""

  def __init__(self, model, tokenizer, *, batch_size: int = 16, max_gen_toks: int = 256):
    super().__init__()
    if tokenizer is None:
      raise HarnessError('the workdir has no tokenizer (an imported checkpoint without one): lm-eval tasks are '
                         'text, so a tokenizer is needed')
    if tokenizer.eos_id is None:
      raise HarnessError(f'tokenizer {tokenizer.name!r} has no EOS id: nothing to condition an empty context on')
    self.model, self.tokenizer_ = model, tokenizer
    self.graphdef, self.state = nnx.split(model)
    self._batch_size, self._max_gen_toks = int(batch_size), int(max_gen_toks)
    self.shapes: set = set()   # (rows, width) of every scoring call: what was compiled

  # ---- tokens
  @property
  def eot_token_id(self) -> int:
    return int(self.tokenizer_.eos_id)

  @property
  def max_length(self) -> int:
    return int(self.model.dims.seq_len)

  def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
    del add_special_tokens, kwargs   # nothing is added: our documents carry no BOS
    return list(self.tokenizer_.encode(string))

  def tok_decode(self, ids) -> str:
    return self.tokenizer_.decode(list(ids))

  # ---- scoring
  def score_tokens(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """(log p(cont | ctx), greedy) per (ctx tokens, cont tokens), batched by length."""
    T, B = self.max_length, self._batch_size
    rows = []
    for ctx, cont in pairs:
      full = (list(ctx) + list(cont))[-(T + 1):]
      n_cont = min(len(cont), len(full) - 1)
      rows.append((full[:-1], full[1:], n_cont))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    out: list = [None] * len(rows)
    for start in range(0, len(order), B):
      idx = order[start:start + B]
      width = min(_round_up(max(len(rows[i][0]) for i in idx), BUCKET), T)
      inputs = np.zeros((B, width), np.int32)
      targets = np.zeros((B, width), np.int32)
      mask = np.zeros((B, width), np.float32)
      for r, i in enumerate(idx):
        inp, tgt, n = rows[i]
        inputs[r, :len(inp)], targets[r, :len(tgt)] = inp, tgt
        mask[r, len(tgt) - n:len(tgt)] = 1.0
      self.shapes.add((B, width))
      lp, greedy = _score(self.graphdef, self.state, jnp.asarray(inputs), jnp.asarray(targets), jnp.asarray(mask))
      lp, greedy = np.asarray(lp, np.float64), np.asarray(greedy)
      for r, i in enumerate(idx):
        out[i] = (float(lp[r]), bool(greedy[r]))
    return out

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
    results = self.score_tokens([(ctx, cont) for _, ctx, cont in requests])
    for (key, _, _), r in zip(requests, results):
      self.cache_hook.add_partial('loglikelihood', key, r)
    return results

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    from lm_eval import utils
    windows, owner = [], []
    for i, req in enumerate(requests):
      (string,) = req.args
      for w in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
          token_list=self.tok_encode(string), prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
          context_len=1)):
        windows.append(w)
        owner.append(i)
    scores = self.score_tokens(windows)
    totals = [0.0] * len(requests)
    for i, (lp, _) in zip(owner, scores):
      totals[i] += lp
    for req, total in zip(requests, totals):
      self.cache_hook.add_partial('loglikelihood_rolling', req.args, total)
    return totals

  # ---- generation
  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    groups: dict = {}
    for i, req in enumerate(requests):
      context, kw = req.args
      groups.setdefault(json.dumps(kw, sort_keys=True, default=str), []).append((i, context, dict(kw)))
    out: list = [None] * len(requests)
    for items in groups.values():
      for start in range(0, len(items), self._batch_size):
        chunk = items[start:start + self._batch_size]
        for (i, context, kw), text in zip(chunk, self._generate(chunk)):
          out[i] = text
          self.cache_hook.add_partial('generate_until', (context, kw), text)
    return out

  def _generate(self, chunk) -> list[str]:
    from scaling.inference.generate import generate_tokens
    kw = chunk[0][2]
    until = kw.get('until') or []
    until = [until] if isinstance(until, str) else list(until)
    max_new = int(kw.get('max_gen_toks', self._max_gen_toks))
    max_new = max(1, min(max_new, self.max_length - 1))
    temperature = float(kw.get('temperature', 0.0)) if kw.get('do_sample', False) else 0.0
    keep = self.max_length - max_new
    prompts = [(self.tok_encode(c) or [self.eot_token_id])[-keep:] for _, c, _ in chunk]
    B = self._batch_size
    prompts += [prompts[-1]] * (B - len(prompts))   # a full batch: one compiled shape
    width = max(len(p) for p in prompts)
    prompt_BT = np.zeros((B, width), np.int32)
    for b, p in enumerate(prompts):
      prompt_BT[b, :len(p)] = p
    tokens, lengths = generate_tokens(
        self.model, prompt_BT, np.array([len(p) for p in prompts], np.int32), max_new_tokens=max_new,
        temperature=temperature, top_p=float(kw.get('top_p', 1.0)) if temperature else 1.0,
        rng=jax.random.key(int(kw.get('seed', 0))), eos_id=self.eot_token_id,
        vocab_limit=min(int(self.tokenizer_.vocab_size), self.model.dims.vocab_size))
    texts = []
    for b in range(len(chunk)):
      text = self.tok_decode(tokens[b, :lengths[b]].tolist())
      for stop in until:
        if stop and stop in text:
          text = text[:text.index(stop)]
      texts.append(text)
    return texts


def _lm_class():
  """ScalingLM: _ScalingLMMethods on lm_eval's TemplateLM, imported here (lm-eval is optional)."""
  from lm_eval.api.model import TemplateLM

  class ScalingLM(_ScalingLMMethods, TemplateLM):
    """lm-eval's LM interface over a scaling Transformer and tokenizer (module docstring)."""

  return ScalingLM


def make_lm(model, tokenizer, **kwargs):
  """A ScalingLM (an lm_eval LM) over `model` and `tokenizer`."""
  import_lm_eval()
  return _lm_class()(model, tokenizer, **kwargs)


# ----------------------------------------------------------------------------- tasks
def resolve_tasks(spec: str):
  """(task list for simple_evaluate, TaskManager): names, task YAML files or globs, or a folder of YAMLs,
  the forms lm-eval's own `--tasks` accepts. Unknown names fail here, naming them."""
  import glob

  from lm_eval.tasks import TaskManager
  from lm_eval.tasks._yaml_loader import load_yaml
  items = [t.strip() for t in str(spec).split(',') if t.strip()]
  if not items:
    raise HarnessError('--tasks is empty: give task names (e.g. hellaswag,arc_easy) or task YAML files')
  # lm-eval's index of its own tasks takes ~8 s to build: only when a name, or a group (whose members may be
  # registered names), needs it; plain task YAMLs run without
  by_name = any(not (os.path.isdir(i) or i.endswith(('.yaml', '.yml'))) for i in items)
  manager = TaskManager() if by_name else None
  tasks, missing = [], []
  for item in items:
    if os.path.isdir(item):
      files = sorted(glob.glob(os.path.join(item, '*.yaml')))
    elif item.endswith(('.yaml', '.yml')):
      files = sorted(glob.glob(os.path.abspath(os.path.expanduser(item))))
    else:
      found = manager.match_tasks([item])
      tasks.extend(t for t in found if t not in tasks)
      missing += [] if found else [item]
      continue
    if not files:
      missing.append(item)
    tasks.extend(load_yaml(f, resolve_func=True) for f in files)
  if manager is None:
    groups = any(isinstance(t, dict) and ('group' in t or isinstance(t.get('task'), list)) for t in tasks)
    manager = TaskManager(include_defaults=groups)
  if missing:
    raise HarnessError(f'lm-eval tasks not found: {", ".join(missing)} (a registered name, `lm-eval ls tasks` lists '
                       f'them, or a task YAML file / folder)')
  return tasks, manager


def run_tasks(workdir, tasks: str, *, step=None, limit=None, num_fewshot=None, batch_size: int = 16,
              seed: int = 0, out=None) -> dict:
  """Evaluates the workdir's checkpoint on lm-eval `tasks`; writes and prints the results; returns them."""
  out = out or sys.stdout
  lm_eval = import_lm_eval()
  from lm_eval.utils import make_table

  from scaling.inference.run import load_for_inference
  from scaling.train import checkpoint
  task_list, manager = resolve_tasks(tasks)
  model, _, tokenizer = load_for_inference(workdir, step=step)
  step = step if step is not None else checkpoint.latest_step(workdir)
  lm = make_lm(model, tokenizer, batch_size=batch_size)
  t0 = time.time()
  results = lm_eval.simple_evaluate(model=lm, tasks=task_list, task_manager=manager, limit=limit,
                                    num_fewshot=num_fewshot, log_samples=False, bootstrap_iters=0,
                                    random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                    fewshot_random_seed=seed)
  results['scaling'] = dict(workdir=str(pathlib.Path(workdir).absolute()), step=step, tasks=tasks, limit=limit,
                            seconds=round(time.time() - t0, 1), compiled_shapes=sorted(lm.shapes))
  path = pathlib.Path(workdir) / 'lm_eval' / f'results_step{step if step is not None else 0}.json'
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_write_json(path, results, indent=1, default=str)
  print(f'{workdir} (checkpoint step {step}), lm-eval {getattr(lm_eval, "__version__", "")}:', file=out)
  print(make_table(results), file=out)
  print(f'results: {path}', file=out)
  return results
