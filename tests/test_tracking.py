"""Weights & Biases logging (scaling/train/tracking.py, through MetricsWriter) in offline mode, read back.

The reference is the run file itself: WANDB_MODE=offline writes WORKDIR/wandb/offline-run-*/run-<id>.wandb,
a log of protobuf records (wandb's `Record`) in 32 KiB blocks with 7-byte record headers (LevelDB's
log format behind a 7-byte ':W&B' file header). `read_records` below parses it independently of the
code under test and of wandb's writer, so the test sees what would be synced: the run's project,
group, name and config, and every logged scalar at its step.
"""

import json
import struct
import time

import pytest

pytest.importorskip('wandb')
from wandb.proto import wandb_internal_pb2  # noqa: E402

from scaling.config import load as config_lib  # noqa: E402
from scaling.train import tracking  # noqa: E402
from scaling.train.metrics import MetricsWriter  # noqa: E402

BLOCK = 32768


def read_records(path):
  """Every Record in a .wandb file (FULL records, and FIRST/MIDDLE/LAST fragments joined)."""
  data = open(path, 'rb').read()
  assert data[:4] == b':W&B'
  pos, out, pending = 7, [], b''
  while pos + 7 <= len(data):
    left = BLOCK - pos % BLOCK
    if left < 7:   # the block's tail is padding
      pos += left
      continue
    _, length, kind = struct.unpack('<IHB', data[pos:pos + 7])
    if length == 0 and kind == 0:
      pos += left
      continue
    if pos + 7 + length > len(data):   # a record still being written
      break
    chunk = data[pos + 7:pos + 7 + length]
    pos += 7 + length
    pending = chunk if kind in (1, 2) else pending + chunk
    if kind in (1, 4):
      rec = wandb_internal_pb2.Record()
      rec.ParseFromString(pending)
      out.append(rec)
  return out


def run_contents(workdir, patience_s: float = 300.0):
  """(run record, config, {step: scalars}) of the run file, once wandb's service has written its exit record
  (it writes asynchronously: finish() may return first on a loaded machine; the wait only catches a hang)."""
  (run_dir,) = [d for d in (workdir / 'wandb').iterdir() if d.name.startswith('offline-run-')]
  (path,) = [p for p in run_dir.iterdir() if p.suffix == '.wandb']
  deadline = time.time() + patience_s
  while not any(r.WhichOneof('record_type') == 'exit' for r in read_records(path)):
    assert time.time() < deadline, f'{path} has no exit record after {patience_s} s'
    time.sleep(0.5)
  history, config, run = {}, {}, None
  for rec in read_records(path):
    kind = rec.WhichOneof('record_type')
    if kind == 'run':
      run = rec.run
      config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    elif kind == 'config':
      config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
    elif kind == 'history':
      row = {(i.key or '/'.join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
      history[row.pop('_step')] = {k: v for k, v in row.items() if not k.startswith('_')}
  return run, config, history


@pytest.fixture
def offline(monkeypatch, tmp_path):
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_SILENT', 'true')
  monkeypatch.setenv('WANDB_CACHE_DIR', str(tmp_path / 'wandb_cache'))
  monkeypatch.setenv('WANDB_CONFIG_DIR', str(tmp_path / 'wandb_config'))
  for k in ('SCALING_WANDB_GROUP', 'SCALING_WANDB_NAME', 'WANDB_PROJECT', 'WANDB_RUN_GROUP'):
    monkeypatch.delenv(k, raising=False)


def test_the_writer_logs_the_same_scalars_and_the_config_offline(offline, tmp_path):
  """A sweep run (run.json from the launcher): group = the sweep's name, name = the run hash; the rows
  MetricsWriter gives TensorBoard arrive at their steps (non-finite values and strings left out)."""
  wd = tmp_path / 'sweeps' / 'ladder' / 'runs' / 'abc123def456'
  wd.mkdir(parents=True)
  (wd / 'run.json').write_text(json.dumps({'hash': 'abc123def456', 'sweep': '/repo/configs/sweeps/ladder.py:small'}))
  cfg = config_lib.load_config(None, {'logging.wandb_project': 'study', 'train.steps': 123})
  w = MetricsWriter(wd, config=cfg)
  rows = {10: {'train/loss': 3.5, 'train/lr': 1e-3}, 20: {'train/loss': 3.0, 'eval/bpb': 2.25, 'eval/prose/bpb': 2.75,
                                                        'eval/bad': float('nan'), 'note': 'x'}}
  for step, row in rows.items():
    w.write(step, row)
  w.close()
  run, config, history = run_contents(wd)
  assert run.project == 'study' and run.run_group == 'ladder-small' and run.display_name == 'abc123def456'
  assert config['train']['steps'] == 123 and config['logging']['wandb_project'] == 'study'
  assert history == {10: {'train/loss': 3.5, 'train/lr': 1e-3},
                     20: {'train/loss': 3.0, 'eval/bpb': 2.25, 'eval/prose/bpb': 2.75}}
  lines = [json.loads(x) for x in (wd / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in lines] == [10, 20]   # metrics.jsonl as before


def test_off_by_default_and_names_outside_a_sweep(offline, tmp_path, monkeypatch):
  cfg = config_lib.load_config(None)
  assert cfg.logging.wandb_project == '' and tracking.make_tracker(cfg, tmp_path) is None
  w = MetricsWriter(tmp_path / 'plain', config=cfg)
  w.write(1, {'train/loss': 1.0})
  w.close()
  assert not (tmp_path / 'plain' / 'wandb').exists()
  lg = config_lib.load_config(None, {'logging.wandb_project': 'p'}).logging
  assert tracking.identity(lg, tmp_path / 'myrun') == (None, 'myrun')
  monkeypatch.setenv('SCALING_WANDB_GROUP', 'g1')
  assert tracking.identity(lg, tmp_path / 'myrun') == ('g1', 'myrun')


def test_missing_wandb_is_a_clear_error(monkeypatch):
  import sys
  monkeypatch.setitem(sys.modules, 'wandb', None)
  cfg = config_lib.load_config(None, {'logging.wandb_project': 'p'})
  with pytest.raises(tracking.TrackingError, match=r"\.\[wandb\]"):
    tracking.check_available(cfg)
  with pytest.raises(config_lib.ConfigError, match='wandb_mode'):
    config_lib.load_config(None, {'logging.wandb_mode': 'sometimes'})
