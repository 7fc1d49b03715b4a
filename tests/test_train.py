"""The training step and loop: sharding, accumulation, resume, schedules, bad input, divergence.

Every test runs on the 8 fake CPU devices of conftest.py with a tiny model
(2 layers, d_model 32, seq 32, byte tokenizer: vocab 259) on a synthetic text
corpus written into a temporary directory. References are independent of the
code under test: the single-device step for the sharded one, one big batch for
gradient accumulation, an uninterrupted run for a stopped-and-resumed one (in
process, and `python -m scaling train` in a subprocess killed with SIGTERM),
closed-form schedules, and the unigram entropy of the corpus for "it learns".

Compiles dominate the run time (seconds of CPU each on 2 cores), so the module
turns on JAX's persistent compilation cache in a per-session temporary
directory, and every test uses the same training settings (STEPS steps of a
cosine schedule, seed 0): identical programs compile once. One 100-step run
(`ref_run`) serves as the uninterrupted reference, the "it learns" run and the
populated workdir that bad input must leave untouched.
"""

import hashlib
import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import xla_flags
from flax import nnx

from scaling.cli import main as cli
from scaling.config import load as config_lib
from scaling.model import transformer as model_lib
from scaling.train import checkpoint, optim, sharding
from scaling.train import loop as train_lib
from scaling.train.metrics import read_metrics

REPO = pathlib.Path(__file__).resolve().parent.parent
VOCAB = 259   # the byte tokenizer: 256 bytes + eos, bos, pad
SEQ = 32
STEPS = 100   # the reference run's length (steps take milliseconds; compiles take seconds)
# long words: the letters inside a word are predictable from the ones before, so a model that
# uses context beats the unigram entropy by far within 100 steps, whichever document is held out
WORDS = ('remember tomorrow thunder lightning kingdom shakespeare everything understand together '
         'beautiful').split()


# ----------------------------------------------------------------------------- helpers
def write_corpus(root: pathlib.Path, num_docs: int = 8, sentences: int = 120) -> str:
  """Deterministic documents of sentences drawn from WORDS, one file each."""
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(1234)
  for i in range(num_docs):
    lines = []
    for _ in range(sentences):
      n = int(rng.integers(4, 12))
      words = [WORDS[j] for j in rng.integers(0, len(WORDS), n)]
      lines.append(' '.join(words).capitalize() + '.')
    (root / f'doc{i:02d}.txt').write_text('\n'.join(lines) + '\n')
  return str(root / '*.txt')


def overrides(data: dict, **kw) -> dict:
  """Config overrides: a tiny model on the synthetic corpus; `kw` keys use '__' for '.'."""
  base = {
      'model.vocab_size': VOCAB, 'model.seq_len': SEQ, 'model.num_layers': 2, 'model.d_model': 32,
      'model.num_heads': 4, 'model.num_kv_heads': 2, 'model.d_ff': 64,
      'data.corpus': data['corpus'], 'data.tokenizer': 'byte', 'data.data_dir': data['data_dir'],
      'train.batch_size': 8, 'train.steps': STEPS, 'train.lr': 1e-2, 'train.warmup_steps': 5,
      'train.log_every': 1, 'train.eval_every': 1000, 'train.eval_batches': 1, 'train.ckpt_every': 1000,
      'train.peak_flops': 1e12,   # skip the matmul measurement
  }
  base.update({k.replace('__', '.'): v for k, v in kw.items()})
  return base


def make_cfg(data: dict, **kw):
  return config_lib.load_config('default.py', overrides(data, **kw))


def np_tree(tree):
  return jax.tree.map(np.asarray, tree)


def max_abs_diff(a, b) -> float:
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
  return max(jax.tree.leaves(diffs))


def restore_final(workdir, setup):
  """(step, params, opt_state) of the latest checkpoint, as numpy, restored onto `setup`'s mesh."""
  step = checkpoint.latest_step(workdir)
  target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        abstract_state(setup), setup.state_sharding)
  mgr = checkpoint.manager(workdir, async_save=False)
  out = checkpoint.restore(mgr, step, params_target=target['params'], opt_target=target['opt_state'])
  mgr.close()
  return step, np_tree(out['params']), np_tree(out['opt_state'])


def abstract_state(setup):
  """Shapes and dtypes of the training state {params, opt_state, step} (nothing computed)."""
  def init():
    model = model_lib.Transformer(setup.dims, rngs=nnx.Rngs(params=0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return dict(params=params, opt_state=setup.tx.init(params), step=jnp.zeros((), jnp.int32))
  return jax.eval_shape(init)


def snapshot(workdir: pathlib.Path) -> dict:
  """Every file under workdir -> (mtime_ns, sha256 of contents): to prove nothing was touched."""
  out = {}
  for p in sorted(workdir.rglob('*')):
    if p.is_file():
      out[str(p.relative_to(workdir))] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
  return out


def losses(workdir) -> dict[int, float]:
  return {r['step']: r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """The synthetic corpus, prepared once (byte tokenizer) into a temp data dir."""
  from scaling.data.prepare import prepare
  root = tmp_path_factory.mktemp('train_data')
  d = dict(corpus=write_corpus(root / 'corpus'), data_dir=str(root / 'prepared'))
  prepare(make_cfg(d).data, verbose=False)
  return d


@pytest.fixture(scope='module')
def ref_run(data, tmp_path_factory):
  """An uninterrupted run (checkpoints at STEPS/2 and STEPS): the reference for resume, the
  learning test, and a populated workdir that bad-input tests must leave untouched."""
  workdir = tmp_path_factory.mktemp('ref_run')
  over = overrides(data, train__ckpt_every=STEPS // 2)
  cfg = config_lib.load_config('default.py', over)
  result = train_lib.train(cfg, workdir, quiet=True)
  assert result['state'] == 'done' and result['step'] == STEPS
  return dict(cfg=cfg, overrides=over, workdir=workdir, result=result)


@pytest.fixture(scope='module')
def init_params(data, ref_run):
  """The initial state of the tiny model (seed 0) as numpy, initialised on the default (8, 1, 1)
  mesh (after ref_run, which compiled that same init)."""
  del ref_run
  return np_tree(train_lib.init_state(train_lib.build_setup(make_cfg(data)), seed=0))


def single_mesh():
  return sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])


def random_batches(n: int, batch: int, seed: int = 0) -> list[dict]:
  tok = np.random.default_rng(seed).integers(0, VOCAB, (n, batch, SEQ + 1)).astype(np.int32)
  return [{'inputs': t[:, :-1], 'targets': t[:, 1:]} for t in tok]


def run_steps(setup, state_np, batches):
  """Runs the jitted step of `setup` from a copy of `state_np`; returns (metrics list, final state,
  the step's compiled executable)."""
  state = jax.device_put(state_np, setup.state_sharding)
  step = train_lib.jit_train_step(setup, tuple(sorted(batches[0])))
  compiled = step.lower(state, sharding.global_batch(batches[0], setup.mesh)).compile()
  metrics = []
  for b in batches:
    state, m = compiled(state, sharding.global_batch(b, setup.mesh))
    metrics.append({k: float(v) for k, v in m.items()})
  return metrics, state, compiled


# ----------------------------------------------------------------------------- the step
def test_sharded_step_matches_single_device(data, init_params):
  """(2, 2, 2) mesh over (data, fsdp, tensor) == one device: loss, grad norm, params after 2 steps."""
  cfg = make_cfg(data, mesh__data=2, mesh__fsdp=2, mesh__tensor=2)
  s8 = train_lib.build_setup(cfg)
  s1 = train_lib.build_setup(cfg, mesh=single_mesh())
  assert dict(s8.mesh.shape) == {'data': 2, 'fsdp': 2, 'tensor': 2}
  batches = random_batches(2, 8)
  m1, st1, _ = run_steps(s1, init_params, batches)
  m8, st8, _ = run_steps(s8, init_params, batches)
  for a, b in zip(m1, m8):
    assert a['loss'] == pytest.approx(b['loss'], abs=1e-5)
    assert a['grad_norm'] == pytest.approx(b['grad_norm'], abs=1e-5)
  assert m1[1]['loss'] != m1[0]['loss']   # the params did change between the steps
  assert max_abs_diff(st1['params'], st8['params']) < 1e-5
  assert max_abs_diff(st1['opt_state'], st8['opt_state']) < 1e-5
  assert int(st8['step']) == 2
  # the outputs keep the requested shardings: e.g. the q projection [L, D, H, K] over (fsdp, tensor)
  wq = st8['params']['blocks']['wq_DHK']
  assert wq.sharding.spec == jax.sharding.PartitionSpec(None, 'fsdp', 'tensor', None)
  assert len(wq.addressable_shards) == 8 and wq.addressable_shards[0].data.shape == (2, 16, 2, 8)


def test_fused_chunked_loss_step_matches_materialized_logits(data, init_params):
  """train.loss_chunk > 0 (the fused head+loss) == loss_chunk 0 (all logits, textbook cross-entropy) on a
  (2, 2, 2) mesh, and the fused step never holds a [B, T, V] logits buffer."""
  batches = random_batches(2, 8, seed=2)
  m0, st0, c0 = run_steps(train_lib.build_setup(make_cfg(data, mesh__data=2, mesh__fsdp=2, mesh__tensor=2,
                                                         train__loss_chunk=0)), init_params, batches)
  mf, stf, cf = run_steps(train_lib.build_setup(make_cfg(data, mesh__data=2, mesh__fsdp=2, mesh__tensor=2,
                                                         train__loss_chunk=32)), init_params, batches)
  for a, b in zip(m0, mf):
    assert a['loss'] == pytest.approx(b['loss'], abs=1e-5)
    assert a['grad_norm'] == pytest.approx(b['grad_norm'], rel=1e-5)
  assert max_abs_diff(st0['params'], stf['params']) < 1e-5
  # per-device logits of the whole batch: [B/2, T, V] f32 (batch over data, vocab replicated or split)
  full = re.compile(rf'f32\[(4|8),{SEQ},(259|130|129)\]')
  assert full.search(c0.as_text()) and not full.search(cf.as_text())


def test_init_is_the_same_on_any_mesh(data, init_params):
  """The same seed gives the same model on (2, 2, 2) as on (8, 1, 1) (init runs directly into the
  shardings, so no device ever holds the whole model)."""
  cfg = make_cfg(data, mesh__data=2, mesh__fsdp=2, mesh__tensor=2)
  p222 = np_tree(train_lib.init_state(train_lib.build_setup(cfg), seed=0)['params'])
  assert max_abs_diff(init_params['params'], p222) == 0.0
  std = np.std(p222['blocks']['wq_DHK'])
  assert std == pytest.approx(cfg.model.init_std, rel=0.1)


def test_gradient_accumulation_matches_one_big_batch(data, init_params):
  """4 microbatches of 2 sequences on a 2-device data-parallel mesh == one batch of 8 on one device
  (mean loss, grad norm; params after 2 steps, the first of which has lr 0 in the warmup)."""
  mesh2 = sharding.make_mesh(dict(data=2, fsdp=1, tensor=1), devices=jax.devices()[:2])
  batches = random_batches(2, 8, seed=1)
  m1, st1, _ = run_steps(train_lib.build_setup(make_cfg(data), mesh=single_mesh()), init_params, batches)
  m4, st4, c4 = run_steps(train_lib.build_setup(make_cfg(data, train__microbatches=4), mesh=mesh2),
                          init_params, batches)
  for a, b in zip(m1, m4):
    assert a['loss'] == pytest.approx(b['loss'], abs=1e-5)
    assert a['grad_norm'] == pytest.approx(b['grad_norm'], rel=1e-5)
  assert max_abs_diff(st1['params'], st4['params']) < 1e-5
  assert max_abs_diff(st1['params'], init_params['params']) > 1e-4   # the steps did move the params
  # every microbatch stays split over both data-parallel devices: the compiled step never gathers
  # the token batch (which would make each device compute whole microbatches alone)
  assert not [l for l in c4.as_text().splitlines() if 'all-gather' in l and 's32[' in l]


# ----------------------------------------------------------------------------- the loop
def test_stop_and_resume_matches_uninterrupted_run(data, ref_run, tmp_path, monkeypatch):
  """STEPS steps == STEPS/2 + SIGTERM + resume + STEPS/2: same logged losses (every step), same eval
  loss, same final params and Adam moments (restored from both final checkpoints)."""
  workdir = tmp_path / 'resumed'
  cfg, half = ref_run['cfg'], STEPS // 2
  orig = train_lib.jit_train_step
  calls = []

  def jit_with_sigterm(setup, keys):
    step = orig(setup, keys)

    def wrapped(state, batch):
      out = step(state, batch)
      calls.append(1)
      if len(calls) == half:   # a preemption notice arrives during this step (also a checkpoint step)
        os.kill(os.getpid(), signal.SIGTERM)
      return out
    return wrapped

  monkeypatch.setattr(train_lib, 'jit_train_step', jit_with_sigterm)
  first = train_lib.train(cfg, workdir, quiet=True)
  assert first == dict(state='preempted', step=half, exit_code=train_lib.EXIT_PREEMPTED)
  assert checkpoint.latest_step(workdir) == half
  assert max(losses(workdir)) == half
  assert not (workdir / 'summary.json').exists()
  monkeypatch.setattr(train_lib, 'jit_train_step', orig)

  second = train_lib.train(cfg, workdir, quiet=True)
  assert second['state'] == 'done' and second['step'] == STEPS
  ref, got = losses(ref_run['workdir']), losses(workdir)
  assert sorted(got) == sorted(ref) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([got[s] for s in ref], [ref[s] for s in ref], rtol=1e-6)
  assert second['eval/loss'] == pytest.approx(ref_run['result']['eval/loss'], rel=1e-6)

  setup = train_lib.build_setup(cfg)
  step_a, params_a, opt_a = restore_final(ref_run['workdir'], setup)
  step_b, params_b, opt_b = restore_final(workdir, setup)
  assert step_a == step_b == STEPS
  assert max_abs_diff(params_a, params_b) < 1e-6
  assert max_abs_diff(opt_a, opt_b) < 1e-6
  with open(workdir / 'summary.json') as f:
    assert json.load(f)['step'] == STEPS


def test_resume_on_another_mesh(data, ref_run, tmp_path):
  """The reference run's step-STEPS/2 checkpoint, written on (8, 1, 1), resumed on (2, 2, 2):
  the second half of the run follows the reference (up to float summation order: ~3e-7 seen)."""
  half = STEPS // 2
  workdir = tmp_path / 'elastic'
  shutil.copytree(ref_run['workdir'] / checkpoint.CKPT_DIR / str(half), workdir / checkpoint.CKPT_DIR / str(half))
  cfg = make_cfg(data, train__ckpt_every=half, mesh__data=2, mesh__fsdp=2, mesh__tensor=2)
  result = train_lib.train(cfg, workdir, quiet=True)
  assert result['state'] == 'done'
  got, want = losses(workdir), losses(ref_run['workdir'])
  assert sorted(got) == list(range(half + 1, STEPS + 1))
  np.testing.assert_allclose([got[s] for s in got], [want[s] for s in got], rtol=1e-5)
  assert result['eval/loss'] == pytest.approx(ref_run['result']['eval/loss'], rel=1e-5)


@pytest.mark.slow
def test_sigterm_to_the_command_saves_exits_75_and_rerun_finishes(data, ref_run, tmp_path):
  """SIGTERM to `python -m scaling train` mid-run: exit status 75 and a checkpoint at the step it
  stopped; the same command again resumes and every logged loss equals the uninterrupted run's."""
  wd = tmp_path / 'run'
  args = ['train', '--workdir', str(wd), '--no_sample', *[f'--config.{k}={v}' for k, v in ref_run['overrides'].items()]]
  env = dict(os.environ, XLA_FLAGS=xla_flags(8), JAX_PLATFORMS='cpu',
             PYTHONPATH=str(REPO))   # the run's compile cache comes with os.environ (conftest.py)
  proc = subprocess.Popen([sys.executable, '-m', 'scaling', *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  metrics = wd / 'metrics.jsonl'
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:   # the loop is running
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.01)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == train_lib.EXIT_PREEMPTED, out
  m = re.search(r'SIGTERM received: saved checkpoint at step (\d+)', out)
  assert m, out
  stopped = int(m.group(1))
  assert 2 <= stopped < STEPS
  assert checkpoint.latest_step(wd) == stopped
  assert max(losses(wd)) == stopped
  assert not (wd / 'summary.json').exists()

  assert cli.main(args) == 0   # the same command again (in this process: a second start costs seconds)
  got, want = losses(wd), losses(ref_run['workdir'])
  assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([got[s] for s in want], [want[s] for s in want], rtol=1e-6)
  assert checkpoint.latest_step(wd) == STEPS


@pytest.mark.parametrize('phase', ['data preparation', 'state initialisation and restore'])
def test_sigterm_before_the_first_step_exits_75_and_writes_no_checkpoint(data, tmp_path, monkeypatch, phase):
  """A SIGTERM during data preparation or state init (before any step, e.g. a preemption while a big
  corpus tokenizes) is a clean, resumable stop: exit code 75, no step run, no checkpoint, no summary;
  then the same run starts and finishes normally."""
  import scaling.data.prepare as prepare_lib
  target = (prepare_lib, 'prepare') if phase == 'data preparation' else (train_lib, 'init_state')
  real = getattr(*target)

  def signalled(*a, **kw):
    os.kill(os.getpid(), signal.SIGTERM)   # delivered to the handler before `real` returns
    return real(*a, **kw)
  monkeypatch.setattr(*target, signalled)
  wd = tmp_path / 'run'
  handler = signal.getsignal(signal.SIGTERM)
  result = train_lib.train(make_cfg(data, train__steps=3), wd, quiet=True)
  assert result == dict(state='preempted', step=0, exit_code=train_lib.EXIT_PREEMPTED)
  assert signal.getsignal(signal.SIGTERM) == handler   # the stop handler is uninstalled again
  if phase == 'data preparation':
    assert not wd.exists()   # stopped before the workdir was written
  else:
    assert (wd / 'config.json').exists() and checkpoint.latest_step(wd) is None
    assert not (wd / 'summary.json').exists() and not (wd / 'metrics.jsonl').exists()
  monkeypatch.setattr(*target, real)
  assert train_lib.train(make_cfg(data, train__steps=3), wd, quiet=True)['state'] == 'done'


def test_loss_falls_below_unigram_entropy(data, ref_run):
  """The reference run on the text corpus: the loss starts at log(V) and ends closer to what one
  byte of context allows than to the best context-free loss, and never below the source's entropy.

  References, computed here from the corpus bytes and from write_corpus's recipe:
  - the unigram entropy H(X) (2.97 nats): the best loss of a model that ignores context;
  - the bigram conditional entropy H(X_t | X_t-1) (1.33 nats): the best loss with one byte of
    context (a plug-in estimate on the corpus itself);
  - the entropy rate of the source (0.26 nats/byte): a sentence is a uniform length in [4, 12)
    and uniform words from WORDS, so no model's expected held-out loss can be lower.
  The threshold is the midpoint of the first two (2.15): below it, a model has gained more than
  half of what one byte of context is worth, which a context-free model cannot. The split is by names
  relative to the corpus directory, so the same document is held out in every run and the
  final loss is the same in every run (printed).
  """
  text = b''.join(p.read_bytes() for p in sorted(pathlib.Path(data['corpus']).parent.glob('*.txt')))
  x = np.frombuffer(text, np.uint8).astype(np.int64)

  def entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())

  unigram_entropy = entropy(np.bincount(x, minlength=256).astype(np.float64))
  bigram_joint = entropy(np.bincount(x[:-1] * 256 + x[1:], minlength=256 * 256).astype(np.float64))
  bigram_entropy = bigram_joint - entropy(np.bincount(x[:-1], minlength=256).astype(np.float64))
  lengths, mean_word = np.arange(4, 12), np.mean([len(w) for w in WORDS])
  bytes_per_sentence = lengths.mean() * mean_word + (lengths.mean() - 1) + 2   # spaces, '.', '\n'
  entropy_rate = (math.log(len(lengths)) + lengths.mean() * math.log(len(WORDS))) / bytes_per_sentence
  assert 0 < entropy_rate < bigram_entropy < unigram_entropy
  threshold = (unigram_entropy + bigram_entropy) / 2
  got, result = losses(ref_run['workdir']), ref_run['result']
  assert got[1] == pytest.approx(math.log(VOCAB), abs=0.1)   # near-uniform predictions at init
  assert result['train/loss'] == got[STEPS]
  final = np.mean([got[s] for s in range(STEPS - 4, STEPS + 1)])
  print(f'\nfinal train loss {final:.6f} (last 5 steps), eval loss {result["eval/loss"]:.6f}; '
        f'unigram {unigram_entropy:.3f}, bigram {bigram_entropy:.3f}, threshold {threshold:.3f}, '
        f'entropy rate {entropy_rate:.3f} nats/byte')
  assert final < threshold, (final, threshold)
  assert entropy_rate < result['eval/loss'] < threshold, (result['eval/loss'], threshold)


def test_divergence_stops_with_step_and_keeps_last_good_checkpoint(data, tmp_path):
  """A huge lr makes the gradients then the loss non-finite: the run stops, names the step, and
  keeps the checkpoints written before it, all finite (none saved from the NaN state)."""
  workdir = tmp_path / 'diverge'
  cfg = make_cfg(data, train__lr=1e30, train__ckpt_every=1, train__keep_checkpoints=10)
  result = train_lib.train(cfg, workdir, quiet=True)
  assert result['state'] == 'diverged' and result['exit_code'] == train_lib.EXIT_DIVERGED
  bad = result['step']
  assert f'at step {bad}' in result['error'] and 'diverged' in result['error']
  logged = losses(workdir)
  assert all(math.isfinite(v) for v in logged.values()) and max(logged, default=0) < bad
  steps = checkpoint.manager(workdir, async_save=False).all_steps()
  assert steps and max(steps) == bad - 1
  _, params, opt_state = restore_final(workdir, train_lib.build_setup(cfg))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves((params, opt_state)))
  assert not (workdir / 'summary.json').exists()


# ----------------------------------------------------------------------------- schedules
def _train_cfg(**kw):
  cfg = config_lib.load_config('default.py', {f'train.{k}': v for k, v in kw.items()})
  return cfg.train


@pytest.mark.parametrize('warmup', [0, 10])
def test_cosine_schedule_formula(warmup):
  S, lr, r = 100, 3e-3, 0.1
  sched = optim.schedule(_train_cfg(lr=lr, min_lr_ratio=r, warmup_steps=warmup, schedule='cosine'), S)
  for s in (0, 1, 5, 9, 10, 11, 40, 55, 99):
    if s < warmup:
      want = lr * s / warmup
    else:
      want = lr * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (S - warmup))))
    assert float(sched(s)) == pytest.approx(want, rel=1e-5, abs=1e-12), s
  assert float(sched(S)) == pytest.approx(lr * r, rel=1e-5)


def test_wsd_schedule_formula():
  S, W, lr, r, frac = 100, 10, 1e-3, 0.1, 0.2
  sched = optim.schedule(_train_cfg(lr=lr, min_lr_ratio=r, warmup_steps=W, schedule='wsd', decay_fraction=frac), S)
  D = round((S - W) * frac)   # 18 decay steps: lr is flat until step 82, then linear to lr * r at S
  for s in (0, 5, 10, 50, 81, 82, 83, 90, 99, 100):
    if s < W:
      want = lr * s / W
    elif s < S - D:
      want = lr
    else:
      want = lr + (lr * r - lr) * (s - (S - D)) / D
    assert float(sched(s)) == pytest.approx(want, rel=1e-5), s


def test_constant_schedule_formula():
  sched = optim.schedule(_train_cfg(lr=2e-3, warmup_steps=4, schedule='constant'), 50)
  assert [float(sched(s)) for s in (0, 2, 4, 30, 49)] == pytest.approx([0, 1e-3, 2e-3, 2e-3, 2e-3])


def test_schedule_with_warmup_longer_than_run():
  """warmup_steps >= steps: the warmup is cut to steps - 1, so the last step still reaches lr."""
  sched = optim.schedule(_train_cfg(lr=1e-3, warmup_steps=50, schedule='constant'), 11)
  assert float(sched(10)) == pytest.approx(1e-3)
  assert float(sched(5)) == pytest.approx(5e-4)


# ----------------------------------------------------------------------------- weight decay
@pytest.mark.parametrize('variant', [{}, {'norm': 'layernorm', 'mlp': 'gelu', 'position': 'learned',
                                          'tied_embeddings': False}])
def test_weight_decay_mask_matrices_only(variant):
  """Matrices (embeddings, projections, head) decay; norm scales [L, D] / [D] and biases do not.

  Checked on the mask and on its effect: with zero gradients one AdamW step multiplies a decayed
  parameter by exactly (1 - lr * wd) and leaves the others unchanged.
  """
  cfg = config_lib.load_config('default.py', {
      **{f'model.{k}': v for k, v in variant.items()}, 'model.vocab_size': 64, 'model.seq_len': 16,
      'model.num_layers': 2, 'model.d_model': 16, 'model.num_heads': 2, 'model.num_kv_heads': 1,
      'train.weight_decay': 0.5, 'train.lr': 0.1, 'train.warmup_steps': 0, 'train.schedule': 'constant'})
  params = nnx.to_pure_dict(nnx.state(model_lib.abstract_model(cfg.model), nnx.Param))
  params = jax.tree.map(lambda s: jnp.full(s.shape, 2.0, s.dtype), params)
  mask = optim.decay_mask(params)
  flat = {jax.tree_util.keystr(p): (x, m) for (p, x), m in
          zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(mask))}
  expect_decay = {k: not (k.endswith("['scale']") or k.endswith("['bias']")) for k in flat}
  assert {k: m for k, (_, m) in flat.items()} == expect_decay
  names = ' '.join(flat)
  assert "['blocks']['attn_norm']['scale']" in names and "['embed_VD']" in names
  assert flat["['blocks']['attn_norm']['scale']"][0].ndim == 2   # stacked [L, D]: a vector per layer
  if variant:
    assert "['lm_head_DV']" in names and "['pos_embed_TD']" in names and "['final_norm']['bias']" in names

  tx, _ = optim.make_optimizer(cfg.train, total_steps=10)

  @jax.jit
  def one_step(p):
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
    return jax.tree.map(jnp.add, p, updates)
  new = one_step(params)
  for (path, x), m in zip(jax.tree_util.tree_leaves_with_path(new), jax.tree.leaves(mask)):
    want = 2.0 * (1 - 0.1 * 0.5) if m else 2.0
    np.testing.assert_allclose(np.asarray(x), want, rtol=1e-6, err_msg=jax.tree_util.keystr(path))


# ----------------------------------------------------------------------------- bad input
@pytest.fixture
def no_long_work(monkeypatch):
  """Fails the test if train() gets as far as data preparation or compiling."""
  import scaling.data.prepare

  def forbidden(name):
    def f(*a, **k):
      raise AssertionError(f'{name} was reached: the error must come before it')
    return f
  monkeypatch.setattr(scaling.data.prepare, 'prepare', forbidden('data preparation'))
  monkeypatch.setattr(train_lib, 'init_state', forbidden('init_state (compile)'))
  monkeypatch.setattr(train_lib, 'jit_train_step', forbidden('jit_train_step (compile)'))


@pytest.mark.parametrize('overrides, error, words', [
    (dict(train__batch_size=6), sharding.MeshError, ['batch_size=6', 'data-parallel size 8']),
    (dict(mesh__data=3), sharding.MeshError, ['data=3', '= 3 devices', '8 are available']),
    (dict(model__d_model=64), checkpoint.CheckpointError, ['d_model: checkpoint 32 vs config 64', 'another --workdir']),
    (dict(model__num_layers=3), checkpoint.CheckpointError, ['num_layers: checkpoint 2 vs config 3']),
    # same model, but the saved data iterator cannot continue with other loader settings
    (dict(train__batch_size=16), checkpoint.CheckpointError, ['global_batch_size: checkpoint 8 vs config 16']),
    (dict(model__seq_len=16), checkpoint.CheckpointError, ['seq_len: checkpoint 32 vs config 16']),
    (dict(train__seed=1), checkpoint.CheckpointError, ['seed: checkpoint 0 vs config 1']),
])
def test_bad_input_fails_fast_and_leaves_workdir_untouched(data, ref_run, no_long_work, overrides, error, words):
  workdir = ref_run['workdir']
  before = snapshot(workdir)
  assert 'config.json' in before and any(k.startswith(f'checkpoints/{STEPS}/') for k in before)
  with pytest.raises(error) as e:
    train_lib.train(make_cfg(data, **overrides), workdir, quiet=True)
  for w in words:
    assert w in str(e.value), (w, str(e.value))
  assert snapshot(workdir) == before


def test_tokenizer_larger_than_model_vocab(data, tmp_path):
  workdir = tmp_path / 'new'
  with pytest.raises(config_lib.ConfigError, match=r'model.vocab_size=200 but the tokenizer.*has 259 ids.*model.vocab_size=0'):
    train_lib.train(make_cfg(data, model__vocab_size=200), workdir, quiet=True)
  assert not workdir.exists()
