"""`scaling runs` and `scaling plot` on run directories written by hand (config.json, metrics.jsonl, summary.json,
run.json, train.lock as `scaling train` and the launcher write them), against hand-worked expectations."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from scaling.analysis import run_plot, runs_table
from scaling.analysis.run_plot import PlotError
from scaling.cli import main as cli

REPO = pathlib.Path(__file__).resolve().parent.parent
HOST = socket.gethostname()


def config(name='r', steps=10, tokens=0, lr=0.01, schedule='wsd', warmup=2, init_from='', decay_steps=0,
           min_lr_ratio=0.1):
  return {'name': name, 'model': {'seq_len': 4},
          'train': {'steps': steps, 'tokens': tokens, 'batch_size': 2, 'lr': lr, 'schedule': schedule,
                    'warmup_steps': warmup, 'decay_fraction': 0.5, 'decay_steps': decay_steps,
                    'decay_shape': 'linear', 'min_lr_ratio': min_lr_ratio, 'init_from': init_from}}


def write_run(d: pathlib.Path, cfg=None, rows=(), summary=None, record=None, lock=None, segments=None,
              checkpoint=None):
  d.mkdir(parents=True)
  if cfg is not None:
    (d / 'config.json').write_text(json.dumps(cfg))
  if rows:
    (d / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))   # NaN as the writer writes it
  for name, obj in (('summary.json', summary), ('run.json', record), ('train.lock', lock),
                    ('segments.json', segments)):
    if obj is not None:
      (d / name).write_text(json.dumps(obj))
  if checkpoint is not None:
    (d / 'checkpoints' / str(checkpoint)).mkdir(parents=True)
  return d


def attempt(outcome, code, **kw):
  return {'attempts': [dict(n=1, backend='local', start=0.0, host=HOST, pid=1, outcome=outcome, exit_code=code, **kw)]}


def dead_pid() -> int:
  p = subprocess.Popen([sys.executable, '-c', 'pass'])
  p.wait()
  return p.pid


@pytest.fixture
def tree(tmp_path):
  t = tmp_path / 'tree'
  write_run(t / 'a', config(), rows=[{'step': 5, 'train/loss': 3.0, 'train/lr': 0.01, 'tokens_seen': 40},
                                     {'step': 10, 'train/loss': 2.0, 'train/lr': 0.001, 'tokens_seen': 80,
                                      'eval/loss': 2.5}],
            summary={'state': 'done', 'step': 10, 'tokens': 80, 'train/loss': 2.0, 'eval/loss': 2.5, 'wall_s': 125.0})
  write_run(t / 'sub' / 'b', config(), rows=[{'step': 5, 'train/loss': 3.1}],
            lock={'host': HOST, 'pid': os.getpid(), 'started': 0.0}, segments=[{'wall_s': 30.0}, {'wall_s': 12.5}])
  write_run(t / 'c', config(), rows=[{'step': 5, 'train/loss': 3.0}, {'step': 6, 'train/loss': float('nan')}])
  write_run(t / 'd', config(), rows=[{'step': 5, 'train/loss': 3.0}], record=attempt('failed', 1))
  write_run(t / 'e', config(), rows=[{'step': 5, 'train/loss': 3.0}], checkpoint=5,
            lock={'host': HOST, 'pid': dead_pid(), 'started': 0.0})
  write_run(t / 'f', config(), checkpoint=4, record=attempt('failed', 3))
  write_run(t / 'g', record={'config': config(), 'attempts': []})
  write_run(t / 'h', config(), rows=[{'step': 5, 'train/loss': 3.0}], record=attempt('preempted', 75))
  write_run(t / 't', config(tokens=160), rows=[{'step': 2, 'train/loss': 4.0}])
  write_run(t / '.hidden' / 'x', config(), rows=[{'step': 1, 'train/loss': 1.0}])
  return t


# ---- scaling runs --------------------------------------------------------------------------------------------------

def test_runs_rows_give_each_runs_state_step_losses_tokens_and_wall(tree):
  rows = runs_table.runs_rows(tree)
  got = [(r['run'], r['state'], r['step'], r['total_steps']) for r in rows]
  assert got == [('a', 'done', 10, 10), ('c', 'diverged', 6, 10), ('d', 'failed', 5, 10), ('e', 'stopped', 5, 10),
                 ('f', 'diverged', 4, 10), ('g', 'pending', None, 10), ('h', 'stopped', 5, 10),
                 ('sub/b', 'running', 5, 10), ('t', 'stopped', 2, 20)]
  a, b = rows[0], rows[7]
  assert (a['train_loss'], a['eval_loss'], a['tokens'], a['wall_s']) == (2.0, 2.5, 80, 125.0)
  assert (b['train_loss'], b['eval_loss'], b['tokens'], b['wall_s']) == (3.1, None, 40, 42.5)   # 5 steps x 2 x 4


def test_runs_table_text_and_counts(tree):
  text = runs_table.format_rows(runs_table.runs_rows(tree)).splitlines()
  assert text[0].split() == ['run', 'name', 'state', 'step', 'train_loss', 'eval_loss', 'tokens', 'wall']
  assert text[1].split() == ['a', 'r', 'done', '10/10', '2.0000', '2.5000', '80', '2m05s']
  assert text[2].split() == ['c', 'r', 'diverged', '6/10', 'nan', '-', '48', '-']
  assert text[-1] == '9 run(s): 1 done, 1 running, 3 stopped, 2 diverged, 1 failed, 1 pending'


def test_a_sweep_roots_runs_come_in_sweep_order(tmp_path):
  root = tmp_path / 'sw'
  write_run(root / 'runs' / 'aaaa', config(), record={'index': 1, 'sweep': 's', 'attempts': []},
            rows=[{'step': 1, 'train/loss': 5.0}])
  write_run(root / 'runs' / 'bbbb', config(), record={'index': 0, 'sweep': 's', 'attempts': []})
  assert [(r['run'], r['state']) for r in runs_table.runs_rows(root)] == [('bbbb', 'stopped'), ('aaaa', 'stopped')]
  assert [r['run'] for r in runs_table.runs_rows(root / 'runs' / 'aaaa')] == ['aaaa']   # one workdir


def test_runs_command_json_and_bad_input(tree, tmp_path, capsys):
  assert cli.main(['runs', str(tree), '--json']) == 0
  rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
  assert [r['state'] for r in rows] == ['done', 'diverged', 'failed', 'stopped', 'diverged', 'pending', 'stopped',
                                        'running', 'stopped']
  (tmp_path / 'empty').mkdir()
  assert cli.main(['runs', str(tmp_path / 'empty')]) == 1
  assert 'no runs under' in capsys.readouterr().err
  assert cli.main(['runs', str(tmp_path / 'missing')]) == 2
  assert 'is not a directory' in capsys.readouterr().err


# ---- scaling plot ------------------------------------------------------------------------------------------------

def lines(ax):
  return [(ln['label'], ln['x'], ln['y']) for ln in ax['lines']]


def test_plot_run_draws_the_logged_losses_and_lr_against_tokens(tree):
  r = run_plot.plot_run(tree / 'a')
  assert r['out'] == str(tree / 'a' / 'loss.png')
  assert (tree / 'a' / 'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  loss, lr = r['axes']
  assert lines(loss) == [('train/loss', [40.0, 80.0], [3.0, 2.0]), ('eval/loss', [80.0], [2.5])]
  assert lines(lr) == [('lr (logged)', [40.0, 80.0], [0.01, 0.001])]


def test_plot_run_rebuilds_the_lr_schedule_when_none_was_logged(tmp_path):
  # wsd: 10 steps, warmup 2 (0, lr/2), stable to update 6, then 4 linear decay updates towards 0.1 lr
  w = write_run(tmp_path / 'w', config(), rows=[{'step': 5, 'train/loss': 3.0}, {'step': 10, 'train/loss': 2.0}])
  r = run_plot.plot_run(w, tmp_path / 'out' / 'x.png')
  assert (tmp_path / 'out' / 'x.png').exists() and r['lr_source'] == 'config'
  ((label, x, y),) = lines(r['axes'][1])
  assert label == 'lr (schedule from config.json)' and x == [8.0 * k for k in range(1, 11)]
  assert y == pytest.approx([0.0, 0.005, 0.01, 0.01, 0.01, 0.01, 0.01, 0.00775, 0.0055, 0.00325])
  # cosine to 0 over 4 updates, no warmup: (1 + cos(pi c / 4)) / 2
  c = write_run(tmp_path / 'c', config(steps=4, lr=1.0, schedule='cosine', warmup=0, min_lr_ratio=0.0),
                rows=[{'step': 4, 'train/loss': 1.0}])
  ((_, x, y),) = lines(run_plot.plot_run(c)['axes'][1])
  assert x == [8.0, 16.0, 24.0, 32.0] and y == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466])


def test_a_branch_is_drawn_from_its_fork(tmp_path):
  b = write_run(tmp_path / 'runs' / 'br', config(init_from='../p:6', decay_steps=4),
                rows=[{'step': 8, 'train/loss': 2.4, 'tokens_seen': 64}, {'step': 10, 'train/loss': 2.2,
                                                                          'tokens_seen': 80, 'eval/loss': 2.3}])
  loss, lr = run_plot.plot_run(b)['axes']
  assert 'branch from step 6' in loss['title']
  assert lines(loss) == [('train/loss', [64.0, 80.0], [2.4, 2.2]), ('eval/loss', [80.0], [2.3]),
                         ('fork (step 6)', [48.0, 48.0], [0.0, 1.0])]
  sched, fork = lines(lr)
  assert sched[1] == [56.0, 64.0, 72.0, 80.0] and sched[2] == pytest.approx([0.01, 0.00775, 0.0055, 0.00325])
  assert fork[0] == 'fork (step 6)'


def test_plot_sweep_one_colour_per_run_with_labels_and_pending_runs_skipped(tmp_path):
  root = tmp_path / 'sw'
  ov = lambda lr: {'overrides': {'train.lr': lr, 'name': 's'}, 'attempts': []}  # noqa: E731
  write_run(root / 'runs' / 'x1', config(), record=ov(0.01),
            rows=[{'step': 5, 'train/loss': 3.0, 'tokens_seen': 40}, {'step': 10, 'train/loss': 2.0,
                                                                       'tokens_seen': 80, 'eval/loss': 2.5}])
  write_run(root / 'runs' / 'x2', config(), record=ov(0.02), rows=[{'step': 5, 'train/loss': 3.5, 'tokens_seen': 40}])
  write_run(root / 'runs' / 'x3', record=dict(ov(0.03), config=config()))
  r = run_plot.plot_sweep(root)
  assert r['out'] == str(root / 'curves.png') and (root / 'curves.png').exists()
  assert r['skipped'] == [str(root / 'runs' / 'x3')]
  (ax,) = r['axes']
  assert ax['xscale'] == 'log'
  assert lines(ax) == [('x1: lr=0.01', [40.0, 80.0], [3.0, 2.0]), ('x1: lr=0.01 (eval)', [80.0], [2.5]),
                       ('x2: lr=0.02', [40.0], [3.5])]
  c1, c1e, c2 = (ln['color'] for ln in ax['lines'])
  assert c1 == c1e != c2


def test_plot_bad_input_names_the_problem(tmp_path, capsys):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(PlotError, match='no config.json and no metrics.jsonl'):
    run_plot.plot_run(tmp_path / 'empty')
  fresh = write_run(tmp_path / 'fresh', config())
  with pytest.raises(PlotError, match='has not logged a step'):
    run_plot.plot_run(fresh)
  with pytest.raises(PlotError, match='no runs under it'):
    run_plot.plot_sweep(tmp_path / 'empty')
  assert cli.main(['plot', '--workdir', str(tmp_path / 'empty')]) == 2
  assert 'error: ' in capsys.readouterr().err and not (tmp_path / 'empty' / 'loss.png').exists()


def test_runs_and_plot_commands_never_load_jax(tree):
  code = (f'from scaling.cli import main\nassert main.main(["runs", {str(tree)!r}]) == 0\n'
          f'assert main.main(["plot", "--workdir", {str(tree / "a")!r}]) == 0\n'
          f'assert main.main(["plot", "--root", {str(tree)!r}]) == 0\n'
          'import sys\nheavy = sorted(m for m in ("jax", "flax", "optax", "orbax") if m in sys.modules)\n'
          'assert not heavy, heavy')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  r = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert (tree / 'curves.png').exists()


def test_total_steps_follows_a_batch_schedule_under_a_token_budget():
  from scaling.analysis.runs_table import total_steps
  # batch 4 x seq 8 for 10 steps (320 tokens), then 8 x 8 = 64 tokens a step: 680 tokens left hold 10 more steps
  # (640), an 11th would need 704; without the schedule 1000 // 32 = 31 steps
  cfg = {'train': {'batch_size': 4, 'tokens': 1000, 'steps': 5, 'batch_schedule': '10:8'}, 'model': {'seq_len': 8}}
  assert total_steps(cfg) == 20
  assert total_steps({**cfg, 'train': {**cfg['train'], 'batch_schedule': ''}}) == 31
  assert total_steps({**cfg, 'train': {**cfg['train'], 'tokens': 0}}) == 5
