"""`scaling sweep` packs: runs that differ only in packable scalars train together in one process.

The grouping (scaling/launch/packing.py) on a mixed sweep against groups written out by hand, the memory
estimate of a tiny model against a hand count, `--dry-run`'s listing, and the local backend end to end:
three tiny runs differing in train.lr train as ONE real `scaling train-packed` process, a re-submit starts
nothing, a member whose lr diverges is recorded failed while the others are done. A stand-in packed trainer
(written below, milliseconds per run) covers the members dropped at start time.
"""

import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from scaling.config import load as config_lib
from scaling.launch import cli as launch_cli
from scaling.launch import packing
from scaling.launch import rundir as rd_lib
from scaling.launch import sweep as sweep_lib
from scaling.launch.packing import Pack
from scaling.model import accounting

REPO = pathlib.Path(__file__).resolve().parent.parent
WORDS = 'alpha beta gamma delta epsilon zeta eta theta , and . or'.split()


def tiny(tmp_path) -> dict:
  """A 17,600-parameter model on a byte-level toy corpus; 6 steps, no validation split (no evals)."""
  return {'model.vocab_size': '259', 'model.seq_len': '16', 'model.num_layers': '1', 'model.d_model': '32',
          'model.num_heads': '2', 'model.num_kv_heads': '1', 'model.d_ff': '64',
          'data.corpus': str(tmp_path / 'corpus' / '*.txt'), 'data.tokenizer': 'byte',
          'data.data_dir': str(tmp_path / 'prepared'), 'data.val_fraction': '0', 'train.eval_sets': '{}',
          'train.batch_size': '4', 'train.steps': '6', 'train.warmup_steps': '2', 'train.log_every': '3',
          'train.peak_flops': '1e12'}


SWEEP = """
from scaling.config import load

def get_config(arg=None):
  return load.load_config('default.py', dict({base!r}))

def get_sweep(arg=None):
  return {rows}

def get_resources():
  return {resources}
"""

# 0, 1, 3, 5 differ only in lr; 2 and 4 in lr at another width; 6 in the data seed (not packable);
# 7 and 8 are cooldown branches of run 0 that fork at one step and differ only in lr (they pack).
MIXED = [{'train.lr': 1e-3}, {'train.lr': 2e-3}, {'model.d_model': 64}, {'train.lr': 4e-3},
         {'model.d_model': 64, 'train.lr': 2e-3}, {'train.lr': 8e-3}, {'train.seed': 1},
         {'train.lr': 1e-3, 'train.schedule': 'wsd', 'branch_of': {'parent': {'train.lr': 1e-3}, 'step': 4}},
         {'train.lr': 5e-4, 'train.schedule': 'wsd', 'branch_of': {'parent': {'train.lr': 1e-3}, 'step': 4}}]


def write_sweep(tmp_path, rows, resources=None) -> pathlib.Path:
  p = tmp_path / 'pack_sweep.py'
  p.write_text(textwrap.dedent(SWEEP.format(base=tiny(tmp_path), rows=repr(rows), resources=repr(resources or {}))))
  return p


def write_corpus(tmp_path) -> None:
  d = tmp_path / 'corpus'
  d.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(7)
  for i in range(4):
    (d / f'doc{i}.txt').write_text(' '.join(WORDS[j] for j in rng.integers(0, len(WORDS), 900)))


def shape(units) -> list:
  """Units as sweep indices: a pack as the list of its runs' indices, a lone run as its index."""
  return [[r.index for r in u.runs] if isinstance(u, Pack) else u.index for u in units]


# ----------------------------------------------------------------------------- grouping (no training)
def test_memory_estimate_of_a_tiny_model_by_hand(tmp_path):
  """V=259, T=16, L=1, D=32, H=2, G=1, K=16, F=64 (swiglu, rmsnorm, tied), batch 4, xla attention."""
  cfg = config_lib.load_config('default.py', tiny(tmp_path))
  params = 259 * 32 + (32 * 32 + 2 * 32 * 16 + 32 * 32) + 3 * 32 * 64 + 2 * 32 + 32   # = 17,600
  per_layer = 6 * 32 + 3 * 2 * 16 + 3 * 1 * 16 + 3 * 64 + 2 * 2 * 16                 # = 592 per token
  rows = 4 * 16
  act = 4 * (rows * (per_layer + 2 * 32) + 2 * rows * 259)                           # logits: one chunk of 64 rows
  assert accounting.train_step_memory_bytes(cfg) == {'params_adam': 16 * params, 'activations': act,
                                                     'total': 16 * params + act}
  assert (16 * params, act) == (281_600, 300_544)


def test_grouping_of_a_mixed_sweep(tmp_path):
  sw = sweep_lib.load_sweep(str(write_sweep(tmp_path, MIXED)))
  # a limit of 3: runs 0 1 3 fill a group, 5 (over the limit) is alone; 2 and 4 pack; the seed alone; the branches
  # (one fork step) pack
  units = packing.group_runs(sw.runs, {'pack_max_members': 3}, host_bytes=None)
  assert shape(units) == [[0, 1, 3], [2, 4], 5, 6, [7, 8]]
  assert [u.limit for u in units if isinstance(u, Pack)] == [3, 3, 3]
  assert [u.fork_step for u in units if isinstance(u, Pack)] == [None, None, 4]
  assert 'pack_max_members=3' in units[0].why
  # the default limit (8) takes 0 1 3 5 together
  assert shape(packing.group_runs(sw.runs, {}, host_bytes=None)) == [[0, 1, 3, 5], [2, 4], 6, [7, 8]]
  # memory: a host of 4 x 582,144 bytes (the width-32 member, counted by hand above) holds 2 such members in
  # its half, and one of the wider (width 64: 661,504 bytes of params and Adam state alone, plus activations)
  units = packing.group_runs(sw.runs, {}, host_bytes=4 * 582_144)
  assert shape(units) == [[0, 1], 2, [3, 5], 4, 6, [7, 8]]
  assert units[0].limit == 2 and units[0].why.startswith('memory:')
  assert shape(packing.group_runs(sw.runs, {}, host_bytes=1)) == list(range(9))
  assert shape(packing.group_runs(sw.runs, {'pack_max_members': 1}, host_bytes=None)) == list(range(9))


@pytest.mark.parametrize('value', ['0', 'x', '2.5'])
def test_bad_pack_max_members_is_a_clear_error(tmp_path, capsys, value):
  p = write_sweep(tmp_path, MIXED[:2])
  root = tmp_path / 'root'
  assert launch_cli.run_sweep_cli(['--config', str(p), '--root', str(root), '--dry-run', '--resource',
                                   f'pack_max_members={value}']) == 2
  err = capsys.readouterr().err
  assert 'pack_max_members' in err and 'integer >= 1' in err and '--resource pack_max_members=N' in err
  assert not root.exists()


def dry_run(tmp_path, capsys, *extra) -> tuple[list[dict], list[list[str]]]:
  """(the groups --dry-run lists: hashes, K, limit text; every command), with the root left unwritten."""
  p = write_sweep(tmp_path, MIXED, {'pack_max_members': 3})
  root = tmp_path / 'root'
  capsys.readouterr()
  assert launch_cli.run_sweep_cli(['--config', str(p), '--root', str(root), '--dry-run', *extra]) == 0
  out = capsys.readouterr().out.splitlines()
  assert not root.exists()
  groups = []
  for line in out:
    if line.startswith('# pack '):
      head, _, limit = line.partition('(limit ')
      groups.append({'id': head.split()[2].rstrip(':'), 'k': int(head.split('K=')[1].split()[0]),
                     'limit': limit, 'runs': []})
    elif line.startswith('#   run '):
      groups[-1]['runs'].append(line.split()[2])
    elif line.startswith('#   cooldown branches '):
      groups[-1]['branches'] = line
  return groups, [shlex.split(x) for x in out if not x.startswith('#')]


def test_dry_run_lists_the_groups(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv('SCALING_TRAIN_CMD', raising=False)
  monkeypatch.delenv('SCALING_TRAIN_PACKED_CMD', raising=False)
  h = [r.hash for r in sweep_lib.load_sweep(str(write_sweep(tmp_path, MIXED))).runs]
  root = tmp_path / 'root'
  groups, cmds = dry_run(tmp_path, capsys)
  assert [g['runs'] for g in groups] == [[h[0], h[1], h[3]], [h[2], h[4]], [h[7], h[8]]]
  assert [g['k'] for g in groups] == [3, 2, 2] and all(g['limit'].startswith('3: pack_max_members=3') for g in groups)
  assert [g.get('branches') for g in groups[:2]] == [None, None]   # the group of branches says where they fork
  assert groups[2]['branches'] == (f'#   cooldown branches forked at step 4, each from its own parent ({h[0]}); the '
                                   f'group starts once every parent has its checkpoint of step 4')
  packed = [c for c in cmds if 'train-packed' in c]
  assert packed == [[sys.executable, '-m', 'scaling', 'train-packed', '--members',
                     str(root / 'packs' / f'{g["id"]}.json')] for g in groups]
  single = [c[c.index('--workdir') + 1] for c in cmds if c[:4] == [sys.executable, '-m', 'scaling', 'train']]
  assert single == [str(root / 'runs' / h[i]) for i in (5, 6)]

  groups, cmds = dry_run(tmp_path, capsys, '--no-pack')
  assert groups == [] and len(cmds) == 9 and all(c[3] == 'train' for c in cmds)

  # $SCALING_TRAIN_CMD ending in `train` gives the packed command; another trainer turns packing off
  monkeypatch.setenv('SCALING_TRAIN_CMD', '/opt/py -m scaling train')
  groups, cmds = dry_run(tmp_path, capsys)
  assert len(groups) == 3 and [c[:4] for c in cmds if 'train-packed' in c] == [['/opt/py', '-m', 'scaling',
                                                                                'train-packed']] * 3
  monkeypatch.setenv('SCALING_TRAIN_CMD', '/opt/my_trainer.py')
  groups, cmds = dry_run(tmp_path, capsys)
  assert groups == [] and len(cmds) == 9
  monkeypatch.setenv('SCALING_TRAIN_PACKED_CMD', '/opt/my_packed_trainer.py')
  groups, cmds = dry_run(tmp_path, capsys)
  assert len(groups) == 3 and [c[0] for c in cmds if '--members' in c] == ['/opt/my_packed_trainer.py'] * 3


# ----------------------------------------------------------------------------- the local backend
def launch(sweep_file, root, *extra, **env_kw) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO), **env_kw)
  # one CPU device, as a plain `scaling sweep` has (conftest gives the tests' own process 8)
  env['XLA_FLAGS'] = ' '.join(f for f in env.get('XLA_FLAGS', '').split() if 'device_count' not in f)
  for k in ('SCALING_TRAIN_CMD', 'SCALING_TRAIN_PACKED_CMD'):
    if k not in env_kw:
      env.pop(k, None)
  cmd = [sys.executable, '-m', 'scaling.launch.cli', '--config', str(sweep_file), '--root', str(root), *extra]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def runs_of(sweep_file, root) -> list[rd_lib.RunDir]:
  return [rd_lib.RunDir(root, r.hash) for r in sweep_lib.load_sweep(str(sweep_file)).runs]


@pytest.mark.slow   # a real local sweep that trains
def test_three_lrs_train_as_one_packed_process_and_a_resubmit_starts_nothing(tmp_path):
  write_corpus(tmp_path)
  p = write_sweep(tmp_path, [{'train.lr': 1e-2}, {'train.lr': 3e-3}, {'train.lr': 2e-3}])
  root = tmp_path / 'root'
  r = launch(p, root, '--max-retries', '0')
  assert r.returncode == 0, r.stdout + r.stderr
  rds = runs_of(p, root)
  files = sorted((root / 'packs').glob('*.json'))
  assert len(files) == 1
  members = json.loads(files[0].read_text())
  assert [m['workdir'] for m in members] == [str(rd.path) for rd in rds]
  assert [m['overrides']['train.lr'] for m in members] == ['0.01', '0.003', '0.002']
  pack_id = files[0].stem
  pids = set()
  for rd in rds:
    summ = json.loads((rd.path / 'summary.json').read_text())
    assert summ['state'] == 'done' and summ['step'] == 6
    rec = rd.read()
    assert rec['state'] == 'done' and len(rec['attempts']) == 1
    a = rec['attempts'][0]
    assert (a['outcome'], a['exit_code'], a['pack']) == ('done', 0, pack_id)
    pids.add(a['pid'])
    assert str(root / 'packs' / f'{pack_id}.log') in (rd.path / 'train.log').read_text()
  assert len(pids) == 1   # one process trained all three
  log = (root / 'packs' / f'{pack_id}.log').read_text().splitlines()   # the group's output, after its header
  assert log[1].startswith(f'==== {pack_id}, 3 runs') and log[1].endswith(f'train-packed --members {files[0]}')
  assert len(log) > 2

  assert launch_cli.run_sweep_cli(['collect', '--root', str(root)]) == 0
  rows = [json.loads(x) for x in (root / 'results.jsonl').read_text().splitlines()]
  assert sorted(r['run'] for r in rows) == sorted(rd.hash for rd in rds)
  assert [r['state'] for r in rows] == ['done'] * 3 and all(r['tokens'] == 6 * 4 * 16 for r in rows)

  before = {f: f.stat().st_mtime_ns for f in [files[0]] + [rd.path / n for rd in rds for n in ('run.json',
                                                                                                'summary.json')]}
  r = launch(p, root)
  assert r.returncode == 0, r.stdout + r.stderr
  assert r.stdout.count('already done: skipped') == 3 and '[sweep] start' not in r.stdout, r.stdout
  assert {f: f.stat().st_mtime_ns for f in before} == before


@pytest.mark.slow   # a real local sweep that trains
def test_a_diverging_member_is_recorded_failed_and_the_others_done(tmp_path):
  write_corpus(tmp_path)
  p = write_sweep(tmp_path, [{'train.lr': 1e-2}, {'train.lr': 1e9}, {'train.lr': 2e-3}])
  root = tmp_path / 'root'
  r = launch(p, root, '--max-retries', '0')
  assert r.returncode == 1, r.stdout + r.stderr
  ok1, bad, ok2 = runs_of(p, root)
  for rd in (ok1, ok2):
    assert rd.summary()['state'] == 'done'
    assert rd.read()['state'] == 'done' and rd.read()['attempts'][-1]['exit_code'] == 0
  assert json.loads((bad.path / 'summary.json').read_text())['state'] == 'diverged'
  rec = bad.read()
  assert rec['state'] == 'failed' and len(rec['attempts']) == 1
  assert (rec['attempts'][0]['outcome'], rec['attempts'][0]['exit_code']) == ('failed', 3)
  assert len({rd.read()['attempts'][0]['pid'] for rd in (ok1, bad, ok2)}) == 1
  assert 'no retries left' in r.stdout
  rows = {row['run']: row for row in rd_lib.status_rows(root)}
  assert [rows[rd.hash]['state'] for rd in (ok1, bad, ok2)] == ['done', 'failed', 'done']


# A stand-in for `scaling train-packed --members FILE`, in milliseconds: every start is counted in each member's
# starts.jsonl; while the file $FAKE_PACKED_HOLD exists it waits (SIGTERM: exit 75, no summary, as every member
# checkpointed); then each member is done, except the one with train.lr $FAKE_PACKED_DIVERGE_LR: diverged, exit 3.
FAKE_PACKED = """
import json, os, pathlib, signal, sys, time
members = json.loads(pathlib.Path(sys.argv[sys.argv.index('--members') + 1]).read_text())
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
for m in members:
  with open(pathlib.Path(m['workdir']) / 'starts.jsonl', 'a') as f:
    f.write(json.dumps({'k': len(members)}) + '\\n')
hold = os.environ.get('FAKE_PACKED_HOLD')
while hold and os.path.exists(hold) and not stop:
  time.sleep(0.02)
if stop:
  sys.exit(75)
code = 0
for m in members:
  bad = m['overrides'].get('train.lr') == os.environ.get('FAKE_PACKED_DIVERGE_LR')
  summ = {'state': 'diverged', 'step': 2, 'exit_code': 3} if bad else {'state': 'done', 'step': 6}
  (pathlib.Path(m['workdir']) / 'summary.json').write_text(json.dumps(summ))
  code = code or (3 if bad else 0)
sys.exit(code)
"""


def fake_env(tmp_path) -> dict:
  """The stand-in packed trainer, and tests/fake_train.py for the runs that train alone."""
  fake = tmp_path / 'fake_packed.py'
  fake.write_text(FAKE_PACKED)
  return {'SCALING_TRAIN_CMD': f'{sys.executable} {REPO / "tests" / "fake_train.py"}',
          'SCALING_TRAIN_PACKED_CMD': f'{sys.executable} {fake}', 'FAKE_TRAIN_STEP_S': '0.01'}


def starts(rd) -> list:
  p = rd.path / 'starts.jsonl'
  return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def test_a_preempted_pack_resumes_together_and_a_failed_member_retries_alone(tmp_path):
  p = write_sweep(tmp_path, [{'train.lr': x} for x in (1e-3, 2e-3, 3e-3)])
  root, hold = tmp_path / 'root', tmp_path / 'hold'
  env = fake_env(tmp_path)
  hold.touch()
  cmd = [sys.executable, '-m', 'scaling.launch.cli', '--config', str(p), '--root', str(root)]
  proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), FAKE_PACKED_HOLD=str(hold), **env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  rds = runs_of(p, root)
  t0 = time.monotonic()
  while not all(starts(rd) for rd in rds):
    assert time.monotonic() - t0 < 30 and proc.poll() is None, proc.communicate()[0] if proc.poll() else 'timeout'
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=30)
  assert proc.returncode == 75, out
  for rd in rds:
    a = rd.read()['attempts']
    assert rd.read()['state'] == 'preempted' and [(x['outcome'], x['exit_code']) for x in a] == [('preempted', 75)]

  # resumed together; the member with lr 0.002 diverges there (failed, exit 3) and is retried alone, unpacked
  r = launch(p, root, '--max-retries', '1', FAKE_PACKED_DIVERGE_LR='0.002', **env)
  assert r.returncode == 0, r.stdout + r.stderr
  assert [len(starts(rd)) for rd in rds] == [2, 3, 2]
  assert [s.get('k') for s in starts(rds[1])] == [3, 3, None]   # the third: tests/fake_train.py, alone
  recs = [rd.read() for rd in rds]
  assert [[x['outcome'] for x in rec['attempts']] for rec in recs] == [['preempted', 'done'],
                                                                       ['preempted', 'failed', 'done'],
                                                                       ['preempted', 'done']]
  packs = [[x.get('pack') for x in rec['attempts']] for rec in recs]
  assert packs[1][2] is None and len({x for pk in packs for x in pk if x}) == 1   # one group, started twice
  assert recs[1]['attempts'][1]['exit_code'] == 3 and all(rd.summary() is not None for rd in rds)


def test_members_busy_elsewhere_or_finished_are_dropped_at_start(tmp_path):
  p = write_sweep(tmp_path, [{'train.lr': x} for x in (1e-3, 2e-3, 3e-3, 4e-3)])
  root = tmp_path / 'root'
  sw = sweep_lib.load_sweep(str(p))
  rds = [rd_lib.RunDir(root, r.hash) for r in sw.runs]
  for run, rd in zip(sw.runs, rds):
    rd_lib.ensure_run_dir(rd, run, sw)   # as a launcher that started before would have
  (rds[3].path / 'summary.json').write_text(json.dumps({'state': 'done', 'step': 6}))   # finished before
  env = fake_env(tmp_path)
  with rds[0].locked() as fd:   # another launcher runs run 0 now
    assert fd is not None
    r = launch(p, root, **env)
  assert r.returncode == 0, r.stdout + r.stderr
  assert 'being run by another launcher' in r.stdout and 'already done: skipped' in r.stdout
  assert [starts(rd) for rd in rds] == [[], [{'k': 2}], [{'k': 2}], []]
  members = json.loads(next((root / 'packs').glob('*.json')).read_text())
  assert [m['workdir'] for m in members] == [str(rds[1].path), str(rds[2].path)]
  assert rds[3].read()['attempts'] == []
  # the next launcher finds run 0 free and the others done: a group of one is a normal run (`scaling train`)
  r = launch(p, root, **env)
  assert r.returncode == 0, r.stdout + r.stderr
  assert f'start run {rds[0].hash}' in r.stdout and r.stdout.count('already done: skipped') == 3, r.stdout
  a = rds[0].read()['attempts']
  assert len(a) == 1 and 'pack' not in a[0] and a[0]['cmd'][:2] == [sys.executable, str(REPO / 'tests' / 'fake_train.py')]


# ----------------------------------------------------------------------------- cooldown branches of packed parents
# Two learning-rate arms, two budgets (scaling/launch/sweep.py branches): budget 5 decays 1 step from step 4, budget
# 10 decays 2 from step 8; each arm's constant-lr parent trains to 8 keeping 4 and 8. Rows in sweep order:
# 0 parent a, 1 a@5, 2 a@10, 3 parent b, 4 b@5, 5 b@10.
BUDGETS, FORKS = (5, 10), (4, 8)


def branch_sweep(tmp_path) -> pathlib.Path:
  return write_sweep(tmp_path, sweep_lib.branches([{'train.lr': 1e-2}, {'train.lr': 3e-3}], BUDGETS))


def test_a_group_of_branches_waits_for_every_parents_fork_checkpoint(tmp_path, capsys):
  """The parents pack, and so do the two arms' branches of each budget (one group per fork step). A group of
  branches starts only once both parents have the fork step's checkpoint; a parent that ended without it drops
  its branch from the group ('blocked'), and the other starts alone. --dry-run names each group's parents."""
  import collections
  import types

  from scaling.launch.local import LocalBackend
  p = branch_sweep(tmp_path)
  sw = sweep_lib.load_sweep(str(p))
  h = [r.hash for r in sw.runs]
  root = tmp_path / 'root'
  capsys.readouterr()
  assert launch_cli.run_sweep_cli(['--config', str(p), '--root', str(root), '--dry-run']) == 0
  said = [x for x in capsys.readouterr().out.splitlines() if x.startswith('#   cooldown branches')]
  assert said == [f'#   cooldown branches forked at step {s}, each from its own parent ({h[0]}, {h[3]}); the group '
                  f'starts once every parent has its checkpoint of step {s}' for s in FORKS]

  be = LocalBackend(root, sw.resources, log=lambda *a: None)
  be.ensure_run_dirs(sw)
  units = be.units(sw)
  assert shape(units) == [[0, 3], [1, 4], [2, 5]] and [u.fork_step for u in units] == [None, 4, 8]
  parents, early, late = units
  queue, counts = collections.deque([early, late]), collections.Counter()
  training = {0: types.SimpleNamespace(run=parents)}   # the parents' process runs

  def saved(i, step):
    (rd_lib.RunDir(root, h[i]).path / 'checkpoints' / str(step)).mkdir(parents=True)
  assert be._pop_ready(queue, training, counts) is None
  saved(0, 4)
  assert be._pop_ready(queue, training, counts) is None   # parent a has step 4, parent b not yet: the group waits
  saved(3, 4)
  assert be._pop_ready(queue, training, counts) is early and list(queue) == [late]
  saved(0, 8)   # the parents' process ended: a with step 8, b without (it failed before)
  got = be._pop_ready(queue, {}, counts)
  assert got is sw.runs[2] and not queue and counts == {'blocked': 1}


@pytest.mark.slow   # a real local sweep that trains (three packed processes)
def test_a_branches_sweep_packs_its_parents_and_each_budgets_branches(tmp_path):
  """2 lr arms x 2 budgets with packing on: three `scaling train-packed` processes (the parents; the branches of
  budget 5; of budget 10), every run done, and collect's rows what an unpacked sweep's are, written out by hand:
  each branch's parent and fork step, its tokens (the parent's steps before the fork included) and own tokens."""
  write_corpus(tmp_path)
  p = branch_sweep(tmp_path)
  root = tmp_path / 'root'
  sw = sweep_lib.load_sweep(str(p))
  h = [run.hash for run in sw.runs]
  r = launch(p, root, '--max-retries', '0')
  assert r.returncode == 0, r.stdout + r.stderr
  groups = {}
  for f in (root / 'packs').glob('*.json'):
    groups[f.stem] = [pathlib.Path(m['workdir']).name for m in json.loads(f.read_text())]
  assert sorted(groups.values()) == sorted([[h[0], h[3]], [h[1], h[4]], [h[2], h[5]]])
  for i, run in enumerate(sw.runs):
    rd = rd_lib.RunDir(root, run.hash)
    a = rd.read()['attempts']
    assert len(a) == 1 and a[0]['outcome'] == 'done' and run.hash in groups[a[0]['pack']], (i, a)
    steps = sorted(row['step'] for row in map(json.loads, (rd.path / 'metrics.jsonl').read_text().splitlines()))
    assert steps[-1] == int(run.config.train.steps) and steps[0] > (run.fork_step or 0), (i, steps)   # a branch's
    # rows start after its fork (log_every 3: a@5 logs only step 5, a@10 steps 9 and 10)

  assert launch_cli.run_sweep_cli(['collect', '--root', str(root)]) == 0
  rows = {row['run']: row for row in map(json.loads, (root / 'results.jsonl').read_text().splitlines())}
  tok = 4 * 16   # tokens per step
  want = {h[0]: ('parent', 'parent', None, None, 8), h[3]: ('parent', 'parent', None, None, 8)}
  for (pi, bi), budget, fork in [((0, 1), 5, 4), ((0, 2), 10, 8), ((3, 4), 5, 4), ((3, 5), 10, 8)]:
    want[h[bi]] = ('done', 'branch', h[pi], fork, budget)
  for run_hash, (state, role, parent, fork, steps) in want.items():
    row = rows[run_hash]
    assert (row['state'], row['role'], row['parent'], row['fork_step']) == (state, role, parent, fork), row
    assert row['tokens'] == steps * tok and row['own_tokens'] == (steps - (fork or 0)) * tok, row
    assert isinstance(row['train/loss'], float) and np.isfinite(row['train/loss'])
