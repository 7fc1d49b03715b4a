"""Sweep expansion, run resolution, bad input, and the commands each backend would run (dry run)."""

import json
import os
import pathlib
import shlex
import subprocess
import sys
import textwrap

import pytest

from scaling.config import load as config_lib
from scaling.launch import cli as launch_cli
from scaling.launch import sweep as sweep_lib
from scaling.launch.sweep import LaunchError, concat, product, zip_

REPO = pathlib.Path(__file__).resolve().parent.parent
LADDER = REPO / 'scaling' / 'model' / 'ladder.py'


def write_sweep(tmp_path, body: str, name='sw.py') -> pathlib.Path:
  p = tmp_path / name
  p.write_text(textwrap.dedent(body))
  return p


BASIC = """
from scaling.launch.sweep import branches, product
import importlib.util, pathlib

def get_config(arg=None):
  spec = importlib.util.spec_from_file_location('_l', {ladder!r})
  m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
  c = m.get_config('nano')
  c.train.steps = 7
  return c

def get_sweep(arg=None):
  return {sweep}

def get_resources():
  return {resources}
"""


def basic(tmp_path, sweep="product({'rung': ['nano'], 'train.lr': [1e-3, 3e-3]})", resources='{}'):
  return write_sweep(tmp_path, BASIC.format(ladder=str(LADDER), sweep=sweep, resources=resources))


# ---- combinators ---------------------------------------------------------------------------------

def test_product_enumerates_every_combination_first_axis_slowest():
  got = product({'a.x': [1, 2]}, b__y=['p', 'q', 'r'])
  want = [{'a.x': a, 'b.y': b} for a in (1, 2) for b in ('p', 'q', 'r')]
  assert got == want


def test_zip_and_concat_and_subsweeps():
  z = zip_({'a': [1, 2, 3]}, b=[4, 5, 6])
  assert z == [{'a': 1, 'b': 4}, {'a': 2, 'b': 5}, {'a': 3, 'b': 6}]
  c = concat(z[:1], [{'c': 0}])
  assert c == [{'a': 1, 'b': 4}, {'c': 0}]
  # a sub-sweep crossed with a constant "common" row adds its keys to every run
  p = product(z, [{'train.steps': 5}])
  assert [r['train.steps'] for r in p] == [5, 5, 5] and [r['a'] for r in p] == [1, 2, 3]


def test_combinator_errors():
  with pytest.raises(LaunchError, match='equal length'):
    zip_(a=[1, 2], b=[1])
  with pytest.raises(LaunchError, match="key 'a' is set twice"):
    product([{'a': 1}], [{'a': 2}])
  with pytest.raises(LaunchError, match='list of values'):
    product(a='abc')


@pytest.mark.parametrize('key,value', [('train.lr', 1e-3), ('train.steps', 20), ('model.tied_embeddings', False),
                                       ('model.norm', 'layernorm'), ('sample.prompts', ('a', 'b c')),
                                       ('train.peak_flops', 1e11), ('train.seed', 3)])
def test_format_value_round_trips_through_override_parsing(key, value):
  # Two code paths: set the python value directly vs. parse the flag text the launcher passes.
  c1 = config_lib.load_config(str(LADDER) + ':nano', {key: value})
  c2 = config_lib.load_config(str(LADDER) + ':nano', {key: sweep_lib.format_value(value)})
  assert config_lib.config_hash(c1) == config_lib.config_hash(c2)


# ---- resolving runs ------------------------------------------------------------------------------

def test_rung_runs_resolve_to_ladder_configs_and_hashes(tmp_path):
  p = basic(tmp_path, sweep="product({'rung': ['nano', '2m'], 'train.lr': [1e-3]}) + [{'train.seed': 5}]")
  sw = sweep_lib.load_sweep(str(p))
  assert len(sw.runs) == 3
  for run in sw.runs[:2]:
    want = config_lib.load_config(f'{LADDER}:{run.overrides["rung"]}', {'train.lr': 1e-3})
    assert run.hash == config_lib.config_hash(want)
    assert run.spec == f'{LADDER.resolve()}:{run.overrides["rung"]}'
  # a run without 'rung' starts from the sweep file's own get_config (steps = 7 there)
  base = sw.runs[2]
  assert base.spec == str(p.resolve()) and base.config.train.steps == 7 and base.config.train.seed == 5
  assert len({r.hash for r in sw.runs}) == 3
  assert sw.runs[0].flag_list() == ['--config.train.lr=0.001']


def test_extra_overrides_apply_to_every_run_and_change_hashes(tmp_path):
  p = basic(tmp_path)
  a = sweep_lib.load_sweep(str(p))
  b = sweep_lib.load_sweep(str(p), {'train.steps': '3'})
  assert all(r.config.train.steps == 3 for r in b.runs)
  assert {r.hash for r in a.runs}.isdisjoint({r.hash for r in b.runs})


def test_labels_show_only_varying_keys(tmp_path):
  sw = sweep_lib.load_sweep(str(REPO / 'configs' / 'sweeps' / 'smoke.py'))
  assert [r.label for r in sw.runs] == ['num_layers=1 steps=8', 'num_layers=1 steps=16', 'num_layers=2 steps=8',
                                        'num_layers=2 steps=16']
  nano = config_lib.load_config(f'{LADDER}:nano').model
  assert all(r.config.model.d_model == nano.d_model for r in sw.runs)


def test_smoke_sweep_has_what_a_fit_needs():
  # The README fits the smoke sweep: a power law needs >= 2 distinct sizes at one token budget, and
  # >= 2 budgets at one size. Sizes from the layer count (1 and 2 layers of the nano rung), budgets from
  # steps x batch x seq_len = 8 and 16 x 4 x 64.
  from scaling.config.load import train_steps
  from scaling.model.accounting import count_params
  sw = sweep_lib.load_sweep(str(REPO / 'configs' / 'sweeps' / 'smoke.py'))
  points = {(count_params(r.config.model)['non_embedding'],
             train_steps(r.config) * r.config.train.batch_size * r.config.model.seq_len) for r in sw.runs}
  sizes, budgets = {n for n, _ in points}, {d for _, d in points}
  assert budgets == {8 * 4 * 64, 16 * 4 * 64}
  assert len(sizes) == 2 and len(points) == 4      # every size at every budget


@pytest.mark.parametrize('sweep,resources,match', [
    ("[{'rung': 'nano', 'train.lrr': 1e-3}]", '{}', r"unknown config key 'train.lrr'"),
    ("[{'rung': 'nano', 'modle.d_model': 64}]", '{}', r"'modle' is not a section"),
    ("[{'rung': 'gigantic'}]", '{}', r"unknown ladder rung 'gigantic'"),
    ("[{'train.steps': 'many'}]", '{}', r'expected an integer'),
    ("[{'rung': 'nano'}, {'rung': 'nano'}]", '{}', r'runs 0 and 1 resolve to the same config'),
    ("[]", '{}', r'non-empty list'),
    ("[{'rung': 'nano'}]", "{'gpus': 8}", r"unknown resource key\(s\) gpus"),
])
def test_bad_sweeps_fail_before_anything_is_written(tmp_path, capsys, sweep, resources, match):
  p = basic(tmp_path, sweep=sweep, resources=resources)
  with pytest.raises(LaunchError, match=match):
    sweep_lib.load_sweep(str(p))
  root = tmp_path / 'root'
  rc = launch_cli.run_sweep_cli(['--config', str(p), '--root', str(root), '--backend', 'local'])
  assert rc == 2
  assert 'error' in capsys.readouterr().err
  assert not root.exists()


def test_unknown_key_in_a_later_run_stops_the_whole_sweep(tmp_path, capsys):
  p = basic(tmp_path, sweep="[{'rung': 'nano'}, {'rung': 'nano', 'train.lr': 1e-2}, {'rung': 'nano', 'train.nope': 1}]")
  root = tmp_path / 'root'
  assert launch_cli.run_sweep_cli(['--config', str(p), '--root', str(root)]) == 2
  err = capsys.readouterr().err
  assert 'run 2' in err and "unknown config key 'train.nope'" in err
  assert not root.exists()


@pytest.mark.parametrize('backend,tool,resources', [
    ('slurm', 'sbatch', '{}'),
    ('tpu-vm', 'gcloud', "{'tpu_type': 'v5litepod-16', 'zone': 'us-west4-a'}"),
    ('gke', 'xpk', "{'cluster': 'c', 'tpu_type': 'v5litepod-16', 'docker_image': 'img'}"),
])
def test_missing_tool_is_a_clear_error_and_nothing_is_written(tmp_path, monkeypatch, capsys, backend, tool, resources):
  p = basic(tmp_path, resources=resources)
  empty = tmp_path / 'bin'
  empty.mkdir()
  monkeypatch.setenv('PATH', str(empty))
  root = tmp_path / 'root'
  rc = launch_cli.run_sweep_cli(['--config', str(p), '--root', str(root), '--backend', backend])
  assert rc == 2
  err = capsys.readouterr().err
  assert f'`{tool}` is not on PATH' in err and backend in err
  assert not root.exists()


def test_missing_cloud_resources_are_named(tmp_path, capsys):
  p = basic(tmp_path)
  root = tmp_path / 'root'
  assert launch_cli.run_sweep_cli(['--config', str(p), '--backend', 'tpu-vm', '--root', str(root)]) == 2
  err = capsys.readouterr().err
  assert "resources['tpu_type']" in err and '--resource tpu_type=' in err
  assert launch_cli.run_sweep_cli(['--config', str(p), '--backend', 'gke', '--root', str(root)]) == 2
  assert "resources['cluster']" in capsys.readouterr().err
  assert not root.exists()


def test_dry_run_shows_missing_resources_as_placeholders_and_the_flag_that_fills_them(tmp_path, capsys):
  p = basic(tmp_path)
  root = tmp_path / 'root'
  assert launch_cli.run_sweep_cli(['--config', str(p), '--backend', 'tpu-vm', '--dry-run', '--root', str(root)]) == 0
  out = capsys.readouterr().out
  note = [x for x in out.splitlines() if x.startswith('# placeholders')]
  assert note and '<tpu_type>' in note[0] and '--resource tpu_type=' in note[0] and '--resource zone=' in note[0]
  create = shlex.split(next(x for x in out.splitlines() if x.startswith('gcloud compute tpus tpu-vm create')))
  assert '--zone=<zone>' in create and '--accelerator-type=<tpu_type>' in create
  # the flag fills them: no placeholder left, the values in the commands
  assert launch_cli.run_sweep_cli(['--config', str(p), '--backend', 'tpu-vm', '--dry-run', '--root', str(root),
                                   '--resource', 'tpu_type=v4-8', '--resource', 'zone=z1', '--resource',
                                   'spot=true']) == 0
  out = capsys.readouterr().out
  assert '<tpu_type>' not in out and '<zone>' not in out and '# placeholders' not in out
  create = shlex.split(next(x for x in out.splitlines() if x.startswith('gcloud compute tpus tpu-vm create')))
  assert '--accelerator-type=v4-8' in create and '--zone=z1' in create and create[-1] == '--spot'
  assert launch_cli.run_sweep_cli(['--config', str(p), '--dry-run', '--resource', 'gpus=8']) == 2
  assert "--resource 'gpus=8'" in capsys.readouterr().err
  assert not root.exists()


# ---- dry runs: the exact commands ------------------------------------------------------------------

SLURM_RES = ("{'nodes': 2, 'gpus_per_node': 8, 'cpus_per_task': 12, 'time': '02:00:00', 'partition': 'gpu', "
             "'account': 'proj', 'qos': 'high', 'mem': '200G', 'setup': 'module load cuda'}")


def test_slurm_dry_run_prints_batch_scripts_and_writes_nothing(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv('SCALING_TRAIN_CMD', '/opt/py -m scaling train')
  p = basic(tmp_path, resources=SLURM_RES)
  root = tmp_path / 'root'
  assert launch_cli.run_sweep_cli(['--config', str(p), '--root', str(root), '--backend', 'slurm', '--dry-run']) == 0
  out = capsys.readouterr().out
  assert not root.exists()
  sw = sweep_lib.load_sweep(str(p))
  for run in sw.runs:
    rd = root.absolute() / 'runs' / run.hash
    assert f'sbatch --parsable {rd}/job.sbatch' in out
  # the first script, cut out of the dry-run text
  script = out.split(f'# --- {root.absolute()}/runs/{sw.runs[0].hash}/job.sbatch ---\n')[1].split('\n# ---\n')[0]
  sbatch = [line for line in script.splitlines() if line.startswith('#SBATCH')]
  assert set(sbatch) >= {'#SBATCH --nodes=2', '#SBATCH --ntasks-per-node=8', '#SBATCH --gpus-per-node=8',
                         '#SBATCH --cpus-per-task=12', '#SBATCH --time=02:00:00', '#SBATCH --partition=gpu',
                         '#SBATCH --account=proj', '#SBATCH --qos=high', '#SBATCH --mem=200G', '#SBATCH --requeue',
                         '#SBATCH --signal=TERM@120'}
  srun = [line for line in script.splitlines() if line.startswith('srun ')]
  assert len(srun) == 1
  argv = shlex.split(srun[0].rstrip(' &'))
  wd = str(root.absolute() / 'runs' / sw.runs[0].hash)
  assert argv == ['srun', '--nodes=2', '--ntasks-per-node=8', '--kill-on-bad-exit=1', '/opt/py', '-m', 'scaling',
                  'train', '--config', f'{LADDER.resolve()}:nano', '--workdir', wd, '--no_sample',
                  '--config.train.lr=0.001']
  assert 'module load cuda' in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
  # the script is valid bash
  chk = subprocess.run(['bash', '-n'], input=script, text=True, capture_output=True)
  assert chk.returncode == 0, chk.stderr


def test_tpu_vm_commands(tmp_path):
  p = basic(tmp_path, resources="{'tpu_type': 'v5litepod-16', 'zone': 'us-west4-a', 'project': 'proj', "
                                "'remote_root': '/gcs/b/sw', 'spot': True, 'queued': True}")
  from scaling.launch.tpu_vm import TpuVmBackend
  sw = sweep_lib.load_sweep(str(p))
  be = TpuVmBackend(tmp_path / 'root', sw.resources, max_parallel=2)
  text = be.dry_run(sw)
  lines = [shlex.split(x) for x in text.splitlines() if not x.startswith('#')]
  loc = ['--zone=us-west4-a', '--project=proj']
  assert lines[0] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'create', 'scaling-sw-0', '--node-id=scaling-sw-0',
                      *loc, '--accelerator-type=v5litepod-16', '--runtime-version=tpu-ubuntu2204-base', '--spot']
  assert lines[1][5] == 'scaling-sw-1'
  # then the project is installed on each VM (scaling/launch/install.py; tests/test_tpu_vm_plan.py checks the step)
  assert [x[3:6] for x in lines[2:4]] == [['tpu-vm', 'ssh', 'scaling-sw-0'], ['tpu-vm', 'ssh', 'scaling-sw-1']]
  assert all('git checkout --quiet --detach' in x[-1] for x in lines[2:4])
  ssh = lines[4]
  assert ssh[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'scaling-sw-0']
  assert ssh[6:9] == [*loc, '--worker=all']
  remote = ssh[9].removeprefix('--command=')
  cd, train = remote.split(' && ')
  assert cd == 'cd ~/scaling'
  assert shlex.split(train) == ['.venv/bin/python', '-m', 'scaling', 'train', '--config', 'scaling/model/ladder.py:nano',
                                '--workdir', f'/gcs/b/sw/runs/{sw.runs[0].hash}', '--no_sample', '--config.train.lr=0.001']
  assert lines[5][5] == 'scaling-sw-1'   # the second run goes to the second VM
  assert lines[-2:] == [['gcloud', 'compute', 'tpus', 'queued-resources', 'delete', f'scaling-sw-{i}', *loc, '--force',
                         '--quiet'] for i in (0, 1)]


def test_gke_commands(tmp_path):
  p = basic(tmp_path, resources="{'cluster': 'c1', 'tpu_type': 'v5p-128', 'docker_image': 'gcr.io/p/scaling:1', "
                                "'num_slices': 2, 'project': 'proj', 'zone': 'us-east5-a', 'remote_root': '/gcs/sw'}")
  from scaling.launch.gke import GkeBackend
  sw = sweep_lib.load_sweep(str(p))
  root = tmp_path / 'root'
  be = GkeBackend(root, sw.resources)
  cmds = [shlex.split(x) for x in be.dry_run(sw).splitlines() if not x.startswith('#')]
  assert len(cmds) == 2
  h = sw.runs[1].hash
  want_train = ['python3', '-m', 'scaling', 'train', '--config', 'scaling/model/ladder.py:nano', '--workdir',
                f'/gcs/sw/runs/{h}', '--no_sample', '--config.train.lr=0.003']
  c = cmds[1]
  assert c[:-1] == ['xpk', 'workload', 'create', '--cluster=c1', '--project=proj', '--zone=us-east5-a',
                    f'--workload=scaling-{h[:12]}-a1', '--tpu-type=v5p-128', '--num-slices=2',
                    '--docker-image=gcr.io/p/scaling:1', '--max-restarts=3']
  cd, train = c[-1].removeprefix('--command=').split(' && ')
  assert cd == 'cd /app' and shlex.split(train) == want_train
  assert len(f'scaling-{h[:12]}-a1') <= 40
  assert be.status_command('w') == ['xpk', 'workload', 'list', '--cluster=c1', '--project=proj', '--zone=us-east5-a',
                                    '--wait-for-job-completion=w', '--timeout=0']
  assert not root.exists()


def test_local_dry_run_passes_local_processes(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv('SCALING_TRAIN_CMD', raising=False)
  p = basic(tmp_path)
  assert launch_cli.run_sweep_cli(['--config', str(p), '--root', str(tmp_path / 'r'), '--dry-run',
                                   '--local_processes', '2']) == 0
  cmds = [shlex.split(x) for x in capsys.readouterr().out.splitlines() if not x.startswith('#')]
  assert len(cmds) == 2
  assert cmds[0][:4] == [sys.executable, '-m', 'scaling', 'train'] and cmds[0][-2:] == ['--local_processes', '2']
  assert not (tmp_path / 'r').exists()


def test_status_and_collect_on_a_missing_root_are_errors(tmp_path, capsys):
  assert launch_cli.run_sweep_cli(['status', '--root', str(tmp_path / 'nope')]) == 2
  assert launch_cli.run_sweep_cli(['collect', '--root', str(tmp_path / 'nope')]) == 2
  assert 'no runs/ directory' in capsys.readouterr().err


def test_scaling_cli_dispatches_sweep(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  p = basic(tmp_path)
  out = subprocess.run([sys.executable, '-m', 'scaling', 'sweep', '--config', str(p), '--dry-run',
                        '--root', str(tmp_path / 'r'), '--config.train.steps=3'],
                       capture_output=True, text=True, env=env, cwd=REPO)
  assert out.returncode == 0, out.stderr
  assert out.stdout.count('--config.train.steps=3') == 2
  sw = sweep_lib.load_sweep(str(p), {'train.steps': '3'})
  assert all(r.hash in out.stdout for r in sw.runs)
  assert json.loads(json.dumps(sw.runs[0].overrides)) == {'rung': 'nano', 'train.lr': 0.001}


# ---- cooldown branches ----------------------------------------------------------------------------------

def test_branches_expand_one_parent_per_size_and_one_branch_per_budget():
  rows = sweep_lib.branches(['nano', '2m'], [150, 300, 600, 1200], decay_fraction=0.2)
  assert len(rows) == 2 * 5
  parent = rows[0]
  # decays 30/60/120/240 -> forks 120/240/480/960: each fork step saved and kept (train.ckpt_steps)
  assert parent == {'rung': 'nano', 'train.schedule': 'constant', 'train.steps': 960,
                    'train.ckpt_steps': (120, 240, 480, 960)}
  got = [(r['train.steps'], r['train.decay_steps'], r[sweep_lib.BRANCH_KEY]['step']) for r in rows[1:5]]
  assert got == [(150, 30, 120), (300, 60, 240), (600, 120, 480), (1200, 240, 960)]
  assert all(r['train.schedule'] == 'wsd' and r[sweep_lib.BRANCH_KEY]['parent'] == parent for r in rows[1:5])
  assert rows[5]['rung'] == '2m' and rows[6][sweep_lib.BRANCH_KEY]['parent']['rung'] == '2m'
  with pytest.raises(LaunchError, match='distinct budgets'):
    sweep_lib.branches(['nano'], [100, 100])
  with pytest.raises(LaunchError, match='decay_fraction'):
    sweep_lib.branches(['nano'], [100], decay_fraction=1.0)


def test_branch_runs_name_their_parent_by_hash_and_step(tmp_path):
  sw = sweep_lib.load_sweep(str(basic(tmp_path, sweep="branches([{'train.seed': 0}], [10, 20])")))
  parent, b10, b20 = sw.runs
  assert parent.parent is None
  assert (b10.parent, b10.fork_step, b20.fork_step) == (parent.hash, 8, 16)
  assert b10.flags['train.init_from'] == f'../{parent.hash}:8'
  assert b10.config.train.init_from == f'../{parent.hash}:8'
  assert b10.hash == config_lib.config_hash(b10.config)
  # the branch's hash follows its parent: another parent (seed 1) gives other branch hashes
  other = sweep_lib.load_sweep(str(basic(tmp_path, sweep="branches([{'train.seed': 1}], [10, 20])")))
  assert other.runs[1].config.train.init_from == f'../{other.runs[0].hash}:8'
  assert {r.hash for r in other.runs}.isdisjoint({r.hash for r in sw.runs})
  # listed before its parent, a branch still resolves (parents are resolved first)
  rev = sweep_lib.load_sweep(str(basic(tmp_path, sweep="branches([{'train.seed': 0}], [10, 20])[::-1]")))
  assert [r.hash for r in rev.runs] == [r.hash for r in sw.runs][::-1]


def test_runs_named_by_the_legacy_hash_are_adopted_with_their_branches(tmp_path):
  """Directories named before config.HASH_NEUTRAL (the hash of every field) are found on re-submission: the
  parent takes its legacy name and its branch forks from it, so the branch's own legacy name follows; the
  legacy names here are computed from the configs directly (what the old code hashed)."""
  spec = str(basic(tmp_path, sweep="branches([{'train.seed': 0}], [10, 20])"))
  fresh = sweep_lib.load_sweep(spec)
  parent, b10, _ = fresh.runs
  p_old = config_lib.config_hash(parent.config, legacy=True)
  b10_old = config_lib.config_hash(config_lib.load_config(b10.spec, {**b10.flags, 'train.init_from': f'../{p_old}:8'}),
                                   legacy=True)
  assert p_old != parent.hash
  on_disk = {p_old, b10_old}
  sw = sweep_lib.load_sweep(spec)
  adopted = sw.adopt_existing(lambda h: h in on_disk)
  assert adopted[0] == (parent.hash, p_old) and [old for _, old in adopted] == [p_old, b10_old]
  assert sw.runs[0].hash == p_old and sw.runs[1].hash == b10_old
  assert sw.runs[1].config.train.init_from == f'../{p_old}:8' and sw.runs[1].parent == p_old
  assert sw.runs[2].parent == p_old and sw.runs[2].hash not in on_disk   # not on disk: a new run, new-style name
  # directories under today's names: nothing is adopted
  again = sweep_lib.load_sweep(spec)
  assert again.adopt_existing(lambda h: h in {r.hash for r in fresh.runs} | on_disk) == []


@pytest.mark.parametrize('sweep, match', [
    ("[{'branch_of': {'parent': {'train.seed': 5}, 'step': 4}}]", 'not a run of this sweep'),
    ("[{'train.seed': 0}, {'branch_of': {'parent': {'train.seed': 0}, 'step': 40}}]", 'past the end of the parent'),
    ("[{'train.seed': 0}, {'branch_of': {'parent': {'train.seed': 0}}}]", "'branch_of' must be"),
    ("[{'train.seed': 0}, {'branch_of': {'parent': {'train.seed': 0}, 'step': 0}}]", 'integer >= 1'),
])
def test_bad_branch_rows_are_clear_errors(tmp_path, sweep, match):
  with pytest.raises(LaunchError, match=match):
    sweep_lib.load_sweep(str(basic(tmp_path, sweep=sweep)))


# The run hashes of two shipped sweeps as the code before the layered-package move named their directories
# (computed with the tree of commit e129459): a sweep started before the move resumes after it.
HASHES_BEFORE_THE_MOVE = {
    'smoke.py': ['1acf96e17b30', '72887132e561', '92cae689e0a7', 'd03e335d387c'],
    'cooldown.py': ['0577ae0c954e', '1a4979a17bc2', '37236ba953d8', '44893c0faea3', '64ebfdcaa15a', '864dd252a3c8',
                    '9a54ab17998f', 'a9183d61d1aa', 'b204242fa949', 'e25e1e922c1d', 'e5e7e4108591', 'ebfc893a42b0',
                    'ed9c7c6a821a'],
}


@pytest.mark.parametrize('name', sorted(HASHES_BEFORE_THE_MOVE))
def test_shipped_sweeps_keep_their_run_hashes(name):
  sw = sweep_lib.load_sweep(str(REPO / 'configs' / 'sweeps' / name))
  assert sorted(r.hash for r in sw.runs) == HASHES_BEFORE_THE_MOVE[name]
