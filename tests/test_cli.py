"""`scaling train` from the command line: bad flags exit 2 with a message, --profile_steps, --debug.

The tests call `scaling.cli.main.main` in-process (the SIGTERM test of the real
command in a subprocess lives in test_train.py, next to its reference run).
JAX's persistent compilation cache (a per-session temp dir) lets the
profile/debug runs reuse the programs test_train.py compiled.
"""

import hashlib
import pathlib

import numpy as np
import pytest

from scaling.cli import main as cli
from scaling.config import load as config_lib
from scaling.train import checkpoint
from scaling.train.metrics import read_metrics

WORDS = 'one two three four five six seven eight nine ten , and or .'.split()


def write_corpus(root: pathlib.Path, num_docs: int = 6) -> str:
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(7)
  for i in range(num_docs):
    text = ' '.join(WORDS[j] for j in rng.integers(0, len(WORDS), 1500))
    (root / f'doc{i}.txt').write_text(text)
  return str(root / '*.txt')


def overrides(data: dict, **kw) -> dict:
  """Config overrides for a tiny model on the test corpus ('__' stands for '.')."""
  base = {
      'model.vocab_size': 259, 'model.seq_len': 32, 'model.num_layers': 2, 'model.d_model': 32,
      'model.num_heads': 4, 'model.num_kv_heads': 2, 'model.d_ff': 64,
      'data.corpus': data['corpus'], 'data.tokenizer': 'byte', 'data.data_dir': data['data_dir'],
      # the training settings of tests/test_train.py: the same programs, compiled once per session
      'train.batch_size': 8, 'train.steps': 100, 'train.lr': 1e-2, 'train.warmup_steps': 5, 'train.log_every': 1,
      'train.eval_every': 1000, 'train.eval_batches': 1, 'train.ckpt_every': 1000, 'train.peak_flops': 1e12,
  }
  base.update({k.replace('__', '.'): v for k, v in kw.items()})
  return base


def flags(over: dict) -> list[str]:
  return [f'--config.{k}={v}' for k, v in over.items()]


def snapshot(workdir: pathlib.Path) -> dict:
  return {str(p.relative_to(workdir)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
          for p in sorted(workdir.rglob('*')) if p.is_file()}


def losses(workdir) -> dict[int, float]:
  return {r['step']: r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  from scaling.data.prepare import prepare
  root = tmp_path_factory.mktemp('cli_data')
  d = dict(corpus=write_corpus(root / 'corpus'), data_dir=str(root / 'prepared'))
  prepare(config_lib.load_config('default.py', overrides(d)).data, verbose=False)
  return d


@pytest.fixture
def old_workdir(tmp_path):
  """A workdir that looks like a previous run's (config.json and a checkpoint file)."""
  wd = tmp_path / 'old'
  (wd / checkpoint.CKPT_DIR / '4').mkdir(parents=True)
  (wd / 'config.json').write_text('{"model": {}}')
  (wd / checkpoint.CKPT_DIR / '4' / '_CHECKPOINT_METADATA').write_text('{}')
  return wd


@pytest.mark.parametrize('flag, words', [
    ('--config.train.nope=1', ["unknown config key 'train.nope'", 'batch_size']),
    ('--config.trian.steps=1', ["unknown config key 'trian.steps'", "'trian' is not a section", 'train']),
    ('--config.train.steps=many', ['--config.train.steps', 'expected an integer', "'many'"]),
    ('--config.model.num_kv_heads=3', ['num_kv_heads=3 does not divide model.num_heads=4']),
    # checked against the 8 devices before any data or compile work
    ('--config.train.batch_size=6', ['train.batch_size=6', 'data-parallel size 8', 'multiple of 8']),
    ('--config.mesh.data=3', ['data=3 x fsdp=1 x tensor=1 = 3 devices, but 8 are available']),
])
def test_bad_config_flag_exits_2_with_message(old_workdir, capsys, flag, words):
  before = snapshot(old_workdir)
  code = cli.main(['train', '--workdir', str(old_workdir), '--no_sample', flag])
  err = capsys.readouterr().err
  assert code == 2
  assert err.startswith('error: ')
  for w in words:
    assert w in err, (w, err)
  assert snapshot(old_workdir) == before


def test_bad_profile_spec_exits_2_before_work(data, tmp_path, capsys):
  wd = tmp_path / 'wd'
  code = cli.main(['train', '--workdir', str(wd), '--no_sample', '--profile_steps', '4:2', *flags(overrides(data))])
  assert code == 2
  assert 'need 0 <= A < B' in capsys.readouterr().err
  assert not wd.exists()


@pytest.mark.slow
def test_profile_steps_writes_a_trace_and_debug_lists_params(data, tmp_path, capsys):
  """--profile_steps 2:4 leaves a trace under workdir/profile; --debug prints every parameter's
  path, shape, dtype and sharding (here on resuming the finished run: the listing comes before
  the un-jitted steps, which on 8 fake devices cost half a minute of compiles per new shape)."""
  wd = tmp_path / 'run'
  args = ['train', '--workdir', str(wd), '--no_sample',
          *flags(overrides(data, mesh__data=2, mesh__fsdp=2, mesh__tensor=2))]
  assert cli.main([*args, '--profile_steps', '2:4']) == 0
  assert 'profile of steps 2:4 written to' in capsys.readouterr().out
  traces = [p for p in (wd / 'profile').rglob('*') if p.is_file() and p.stat().st_size > 0]
  assert any(p.name.endswith(('.xplane.pb', '.trace.json.gz')) for p in traces), traces

  assert cli.main([*args, '--debug']) == 0
  out = capsys.readouterr().out
  rows = {line.split()[0]: line.split(None, 1)[1].split() for line in out.splitlines() if line.startswith("['")}
  # path -> [shape..., dtype, spec...]; vocab 259 does not divide tensor=2, so the embedding is
  # split over fsdp only; the q projection [L, D, H, K] over (fsdp, tensor)
  assert ' '.join(rows["['embed_VD']"]) == "(259, 32) float32 P(None, 'fsdp')"
  assert ' '.join(rows["['blocks']['wq_DHK']"]) == "(2, 32, 4, 8) float32 P(None, 'fsdp', 'tensor', None)"
  assert ' '.join(rows["['blocks']['attn_norm']['scale']"]) == "(2, 32) float32 P(None, 'fsdp')"
  assert len(rows) == 11   # embed, final norm, 9 stacked block params
  assert 'resumed from' in out


def test_empty_prompts_skip_the_end_of_run_samples(data, tmp_path, capsys):
  # sample.prompts=() reads as --no_sample: the run finishes with exit 0 instead of training and then
  # failing in generate ('prompts is empty', exit 2)
  wd = tmp_path / 'run'
  code = cli.main(['train', '--workdir', str(wd), '--config.sample.prompts=()', *flags(overrides(data))])
  out = capsys.readouterr()
  assert code == 0, out.err
  assert '=== samples' not in out.out and (wd / 'summary.json').exists()


def test_an_unknown_flag_that_names_a_config_field_suggests_the_override(capsys):
  """`scaling train --steps 20` (#39 item 8): the usage error names the override to write instead; a field
  name in two sections lists both; an unknown flag that is no field gets the plain error; a command that
  takes no config gets no config hint."""
  from scaling.cli import main as cli
  cases = [(['train', '--steps', '20'], 'did you mean --config.train.steps=20?'),
           (['table', '--train.lr=1e-3'], 'did you mean --config.train.lr=1e-3?'),
           (['train', '--seed', '3'], '--config.sample.seed=3 or --config.train.seed=3'),
           (['train', '--no_such_thing'], 'unrecognized arguments: --no_such_thing\n'),
           (['eval', '--workdir', 'w', '--steps', '5'], 'unrecognized arguments: --steps 5\n')]
  for argv, want in cases:
    with pytest.raises(SystemExit) as e:
      cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and want in err, (argv, err)
