"""The benchmark scripts run: each one at a tiny size on CPU (seconds), its printed table checked for its
columns and for numbers that follow from the arguments; plus the accelerator benchmark's argument handling.

Each script runs as its user runs it (a subprocess from the repository root, one CPU device). Not run here,
as none has a knob that makes it take seconds: bench/data_bench.py (trains tokenizers on the whole Shakespeare
corpus, ~45 s; its parts are tested in test_data.py and test_tokenizer.py) and bench/block_profile.py (it
first measures a 2048^3 matmul rate, 10-15 s of CPU on 2 cores). bench/train_step.py runs with --peak_n.
"""

import ast
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, os.path.join(ROOT, 'bench'))

import accelerator  # noqa: E402
import train_step  # noqa: E402

pytestmark = pytest.mark.slow   # each benchmark script end to end in a subprocess (not in -m 'not slow')

HANG_S = 600   # a limit that only catches a hang: every script here takes seconds


def run_script(argv, **env):
  """stdout of `argv` run from the repository root on one CPU device; fails with its output on an error.
  XLA's backend optimizations off, as the suite's own compiles (tests/conftest.py: compiles of tiny programs ~40%
  cheaper): the scripts here run at tiny sizes and the tests check their tables' arithmetic, not speed."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_backend_optimization_level=0', **env)
  p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S)
  assert p.returncode == 0, f'{argv} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}'
  return p.stdout


def md_table(text, first_column):
  """The markdown table whose header starts with `| first_column |`: (header cells, [row cells])."""
  lines = text.splitlines()
  (start,) = [i for i, l in enumerate(lines) if l.startswith(f'| {first_column} |')]
  cells = lambda line: [c.strip() for c in line.strip().strip('|').split('|')]
  header, rows = cells(lines[start]), []
  assert set(lines[start + 1].replace('|', '').replace(':', '')) == {'-'}, lines[start + 1]
  for line in lines[start + 2:]:
    if not line.startswith('|'):
      break
    rows.append(cells(line))
    assert len(rows[-1]) == len(header), line
  return header, rows


def number(cell):
  return float(cell.replace(',', '').rstrip('x%'))


@pytest.mark.skipif(shutil.which('nvidia-smi') is not None,
                    reason='with nvidia-smi on PATH the wrapper takes its GPU path (pip installs jax[cuda12])')
def test_shell_wrapper_runs_the_cpu_path():
  """bench/accelerator.sh as documented (RUNGS, STEPS, extra flags passed through), on CPU: no GPU setup."""
  out = run_script(['bash', 'bench/accelerator.sh', '--batches', '2', '--warmup', '1', '--seq_len', '32',
                    '--override', 'model.num_layers=1'], PYTHON=sys.executable, RUNGS='nano', STEPS='1')
  assert '# 1 x cpu (cpu)' in out
  header, rows = md_table(out, 'rung')
  assert header == ['rung', 'params', 'T', 'batch/device', 'step s', 'tokens/s', 'MFU', 'peak mem/device GB',
                    'compile s', 'attention', 'remat']
  assert [r[0] for r in rows] == ['nano']   # RUNGS replaced the default 125m,350m,1b
  assert rows[0][2] == '32' and rows[0][3] == '2'   # T and batch/device as asked
  assert float(rows[0][5].replace(',', '')) > 0     # tokens/s
  (summary,) = [l for l in out.splitlines() if l.startswith('# nano: ')]
  got = ast.literal_eval(summary[len('# nano: '):])
  # nano with 1 layer: embedding 4096 x 128 = 524,288 (tied); attention 128 x 128 x 2 (q, o)
  # + 128 x 64 x 2 (k, v) = 49,152; SwiGLU 3 x 128 x 512 = 196,608; norms 3 x 128 = 384: 770,432.
  assert got['params'] == 770_432
  assert (got['seq_len'], got['batch_per_device'], got['devices']) == (32, 2, 1)
  assert got['tokens_per_s'] == pytest.approx(32 * 2 / got['step_s'], rel=1e-9)   # one step's tokens / its time
  assert got['step_s'] > 0 and got['compile_s'] > 0 and 0 < got['mfu'] < 1


@pytest.mark.parametrize('argv', [['--batches', 'x'], ['--batches', '0'], ['--steps', '0'],
                                  ['--override', 'novalue']])
def test_bad_arguments_exit_with_usage(argv):
  with pytest.raises(SystemExit) as e:
    accelerator.parse_args(argv)
  assert e.value.code == 2


def test_oom_messages_are_recognised():
  assert accelerator.is_oom(RuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate'))
  assert not accelerator.is_oom(RuntimeError('shape mismatch'))


def test_decode_bench_cache_and_full_forward_agree():
  out = run_script([sys.executable, 'bench/decode_bench.py', '--contexts', '16', '--batches', '2',
                    '--new_tokens', '4', '--reps', '1', '--layers', '1', '--d_model', '32', '--heads', '2',
                    '--kv_heads', '1', '--vocab', '64'])
  assert 'model: 1 layers, d_model 32, 2 heads / 1 kv heads' in out
  header, rows = md_table(out, 'context')
  assert header[:3] == ['context', 'batch', 'new tokens'] and header[-1] == 'same tokens'
  assert [r[:3] for r in rows] == [['16', '2', '4']]
  for r in rows:
    assert r[-1] == 'yes'   # the KV-cache loop, generate_tokens and the full-forward loop: the same tokens
    assert number(r[header.index('cache tok/s')]) > 0 and number(r[header.index('full-forward tok/s')]) > 0


def test_attention_bench_rows_per_impl_and_length(tmp_path):
  md = tmp_path / 'attention.md'
  out = run_script([sys.executable, 'bench/attention_bench.py', '--seq_lens', '64', '--block_sizes', '16',
                    '--heads', '2', '--kv_heads', '1', '--head_dim', '16', '--time_budget_s', '0.5',
                    '--out', str(md)])
  header, rows = md_table(out, 'impl')
  assert header == ['impl', 'T', 'fwd ms', 'fwd+bwd ms', 'fwd temp MiB', 'fwd+bwd temp MiB']
  impls = {r[0] for r in rows}
  assert {'reference', 'blockwise (block 16)'} <= impls
  assert len(rows) == len(impls) and all(r[1] == '64' for r in rows)   # one row per impl at the T asked
  assert all(number(c) >= 0 for r in rows for c in r[2:])
  assert md_table(md.read_text(), 'impl') == (header, rows)   # --out holds the same table


def test_long_context_bench_runs_a_child_per_measurement(tmp_path):
  md = tmp_path / 'long.md'
  # a tiny model, its child compiled as the suite's (XLA's backend optimizations off): the test checks the plan, the
  # table and that each measurement is a process of its own, not a benchmark-sized compile (~20 CPU-s at the defaults)
  out = run_script([sys.executable, 'bench/long_context.py', '--impls', 'xla', '--train_lengths', '64',
                    '--forward_lengths', '128', '--xla_max', '64', '--out', str(md), '--layers', '1', '--d_model', '32',
                    '--heads', '2', '--kv_heads', '1', '--vocab', '64',
                    '--child_xla_flags=--xla_backend_optimization_level=0'])
  header, rows = md_table(out, 'mode')
  assert header == ['mode', 'T', 'attention', 'peak RSS MB', 'step s', 'compile+first s']
  assert [r[:3] for r in rows] == [['train', '64', 'xla']]   # forward at 128 > --xla_max: skipped, one child
  assert all(number(r[3]) > 100 for r in rows)   # a process with jax imported holds > 100 MB
  assert md_table(md.read_text(), 'mode') == (header, rows)
  assert md.read_text().startswith('# Long context on CPU (1 layers, d_model 32, batch 1, remat full)')


# ----------------------------------------------------------------------------- bench/train_step.py
TINY = ['--d_model', '32', '--layers', '1', '--seq', '16', '--batch', '2', '--vocab', '64']
# scaling/config/default.py at the TINY dims: heads 4 / kv heads 2, head_dim K = 8, d_ff = 8/3 * 32 = 85 rounded up to
# 128. Matmul params: q, o 2 x 32 x 32 + k, v 2 x 32 x 16 + MLP 3 x 32 x 128 + head 32 x 64 = 17,408; FLOPs per
# token 6 x 17,408 + 12 L H K (T + 1) / 2 = 104,448 + 12 x 4 x 8 x 8.5 = 107,712.
TINY_FLOPS_PER_TOKEN = 107_712
TRAIN_STEP_HEADER = ['arm', 'dtype', 'step ms', 'tokens/s', 'ours / this', 'ours / this per round (median, range)',
                     'MFU (vs own matmul peak)', 'first-step loss', 'page faults/step']


def run_train_step(tmp_path, arms, dtypes, *extra):
  """(stdout, the --json file) of bench/train_step.py at the TINY dims, 2 timed steps after 1 warm-up."""
  path = tmp_path / 'train_step.json'
  out = run_script([sys.executable, 'bench/train_step.py', *TINY, '--steps', '2', '--warmup', '1',
                    '--peak_n', '128', '--settle', '0', '--arms', ','.join(arms), '--dtypes', ','.join(dtypes),
                    '--json', str(path), *extra], SCALING_MALLOC_TUNING='1')   # as run by hand (conftest turns it off)
  return out, json.loads(path.read_text())


def check_train_step(out, got, arms, dtypes):
  """The table: one row per (dtype, arm) in order, its numbers those of the --json rows, and these follow
  from the dims: tokens/s = batch x seq / step time, ratio = ours' tokens/s / the arm's, MFU = the FLOPs
  per token worked out above x tokens/s / the framework's peak; first-step losses ~ln(vocab), and equal
  across arms (every arm starts from our initial weights on the same batch)."""
  header, rows = md_table(out, 'arm')
  assert header == TRAIN_STEP_HEADER
  assert [r[:2] for r in rows] == [[a, d] for d in dtypes for a in arms]
  assert (got['batch'], got['seq'], got['vocab']) == (2, 16, 64)
  (peer,) = re.findall(r'attn_implementation=(\w+)', out)
  assert peer == got['attn_implementation'] and peer in ('sdpa', 'eager', 'flex_attention')
  by = {(j['arm'], j['dtype']): j for j in got['rows']}
  for r in rows:
    j = by[tuple(r[:2])]
    ours = by[('ours', j['dtype'])]
    assert j['tokens_per_s'] == pytest.approx(2 * 16 / j['step_s'], rel=1e-9)
    assert j['ratio'] == pytest.approx(ours['tokens_per_s'] / j['tokens_per_s'], rel=1e-9)
    assert j['step_s'] == pytest.approx(statistics.median(j['step_times']), rel=1e-12) and len(j['step_times']) == 2
    paired = [t / o for t, o in zip(j['step_times'], ours['step_times'])]   # the arm's step over ours', per round
    assert j['round_ratio'] == pytest.approx(statistics.median(paired), rel=1e-12)
    assert j['round_ratio_range'] == pytest.approx([min(paired), max(paired)], rel=1e-12)
    assert j['flops_per_token'] == TINY_FLOPS_PER_TOKEN
    peak = got['peaks'][j['dtype']]['jax' if j['arm'] == 'ours' else 'torch']
    assert j['mfu'] == pytest.approx(TINY_FLOPS_PER_TOKEN * j['tokens_per_s'] / peak, rel=1e-9)
    # the printed cells are the rounded values
    assert number(r[2]) == pytest.approx(j['step_s'] * 1e3, rel=1e-3)
    assert number(r[3]) == pytest.approx(2 * 16 / (number(r[2]) / 1e3), rel=2e-3, abs=1)
    assert number(r[4]) == pytest.approx(j['ratio'], abs=0.006)
    lo, hi = j['round_ratio_range']
    assert r[5] == f'{j["round_ratio"]:.2f}x ({lo:.2f}-{hi:.2f})'
    assert number(r[6]) == pytest.approx(j['mfu'] * 100, abs=0.06)
    assert number(r[7]) == pytest.approx(j['first_loss'], abs=6e-5)
    assert abs(j['first_loss'] - math.log(64)) < 0.1   # init std 0.02: near-uniform logits
    tol = 1e-4 if j['dtype'] == 'float32' else 2e-2
    assert j['first_loss'] == pytest.approx(ours['first_loss'], abs=tol)


def test_train_step_ours_and_transformers_eager(tmp_path):
  # float32 only: each (arm, dtype) is a process of its own (~15 s on 2 cores); bfloat16 (both arms' autocast
  # and our bf16 compute) is covered by test_train_step_transformers_compiled below
  arms, dtypes = ['ours', 'transformers'], ['float32']
  out, got = run_train_step(tmp_path, arms, dtypes)   # the default --peer_limit: probed, and float32 is never too slow
  check_train_step(out, got, arms, dtypes)
  # each arm in its own process: ours with the malloc tuning of the scaling command, the peer with glibc's
  assert '# host malloc tuning (scaling/base/hostmem.py): ours on, transformers off' in out, out


@pytest.mark.slow   # torch.compile: graph capture and AOTAutograd (inductor's C++ build would add ~90 CPU-s)
def test_train_step_transformers_compiled(tmp_path):
  # bfloat16 only: the compiled arm's code is the same in both dtypes but for the autocast, which bfloat16
  # exercises (the eager test above covers float32, and leaves bfloat16 to this one: our arm's bf16 row is
  # here too); a second inductor build would double the test's time
  # --peer_limit 0: the peer runs whatever PyTorch's bfloat16 matmul rate (the default limit would skip it on a CPU
  # without native bf16, and this test could not check it there), and without the pre-flight probe (a process importing
  # torch, ~7 CPU-s), which the eager test above (it lets the peer run) and the skip test below (it skips) exercise
  # --compile_backend aot_eager: the script's compiled arm (torch.compile's graph capture of the forward and loss,
  # AOTAutograd's backward) without inductor's code generation, which is PyTorch's, not this script's: an empty
  # inductor cache (as in CI) costs ~96 CPU-s for its 23 kernels; the default stays inductor (what a user gets)
  arms, dtypes = ['ours', 'transformers+compile'], ['bfloat16']
  out, got = run_train_step(tmp_path, arms, dtypes, '--peer_malloc', 'tuned', '--peer_limit', '0',
                            '--compile_backend', 'aot_eager')
  check_train_step(out, got, arms, dtypes)
  assert "# transformers+compile: torch.compile(backend='aot_eager') on the forward and loss" in out, out
  assert not got['skipped'] and '# skipped' not in out
  assert '# host malloc tuning (scaling/base/hostmem.py): ours on, transformers+compile on' in out, out


def test_train_step_skips_a_peer_too_slow_to_time(tmp_path):
  """A peer whose step the pre-flight matmul probe puts above --peer_limit is skipped before it starts, and the
  output says so: the estimate is the step's FLOPs (worked out above) at the probed rate (here a limit of 1e-12 s
  stands in for bfloat16 on a CPU without native bf16)."""
  out, got = run_train_step(tmp_path, ['ours', 'transformers'], ['float32'], '--peer_limit', '1e-12')
  _, rows = md_table(out, 'arm')
  assert [r[:2] for r in rows] == [['ours', 'float32']]   # measured alone
  (sk,) = got['skipped']
  assert (sk['arm'], sk['dtype']) == ('transformers', 'float32') and sk['rate'] > 0
  assert sk['probe_n'] in (256, 512, 1024, 2048)   # grown from 256^3 until one call takes 50 ms
  assert sk['est_step_s'] == pytest.approx(TINY_FLOPS_PER_TOKEN * 2 * 16 / sk['rate'], rel=1e-9)
  assert f"({sk['probe_n']}^3)" in out
  assert '# skipped: transformers float32: ' in out and 'above --peer_limit 1e-12' in out, out
  assert 'torch' not in got['peaks']['float32']   # no peer process ran


@pytest.mark.parametrize('argv', [['--arms', 'torch'], ['--arms', ''], ['--dtypes', 'float16'], ['--steps', '0'],
                                  ['--warmup', '0'], ['--override', 'novalue'], ['--peer_malloc', 'jemalloc'],
                                  ['--peer_limit', '-1']])
def test_train_step_bad_arguments_exit_with_usage(argv, capsys):
  with pytest.raises(SystemExit) as e:
    train_step.parse_args(argv)
  assert e.value.code == 2
  assert argv[0] in capsys.readouterr().err   # the message names the flag


def test_train_step_refuses_a_model_the_peer_cannot_express():
  """Before any measurement: the transformers arms need a Llama-shaped model (SwiGLU here)."""
  with pytest.raises(SystemExit, match=r"model.mlp='gelu'.*run --arms ours"):
    train_step.main(['--override', 'model.mlp=gelu', '--arms', 'ours,transformers'])
