"""lm-evaluation-harness in-process (scaling/inference/harness.py): our adapter against lm-eval's own `hf` model.

References, independent of the adapter: the same checkpoint exported to transformers (`scaling export`,
scaling/inference/hf_export.py) and scored by lm-eval's `HFLM` (torch), and a direct numpy float64 log-softmax of our
model's logits over one unpadded sequence. The model is tiny (2 layers, D 32) with random parameters
and a 320-piece sentencepiece BPE tokenizer, saved as a workdir; the tasks are YAML files over local
JSONL files (no network).
"""

import json
import os
import pathlib
import types

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import random_params_model, tiny_config  # noqa: E402
from flax import nnx  # noqa: E402

from scaling.cli import main as cli
from scaling.data import tokenizer as tok_lib  # noqa: E402
from scaling.inference import harness, hf_export  # noqa: E402
from scaling.train import checkpoint as ckpt_lib  # noqa: E402

pytest.importorskip('lm_eval')
from lm_eval.api.instance import Instance  # noqa: E402

SEQ = 64
WORDS = ('the of and to in that is was he for it with as his on be at by had not are but from or have an they '
         'which one you were her all she there would their we him been has when who will more no if out so said').split()
REQUESTS = [   # (context, continuation): spaces at the context's end, an empty context, a long one (truncated)
    ('The cat sat on the', ' mat'),
    ('Question: who was there? Answer:', ' she was'),
    ('and then ', 'he said no'),
    ('', 'the first words'),
    (' '.join(WORDS) * 2, ' and the end'),
    ('It was', ' not'),
]


def _lines(n=300, seed=0):
  rng = np.random.default_rng(seed)
  return [' '.join(rng.choice(WORDS, int(rng.integers(4, 12)))).capitalize() + '.' for _ in range(n)]


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp('harness')
  tok = tok_lib.train_sentencepiece(_lines(), kind='bpe', vocab_size=320)
  cfg = tiny_config(vocab_size=320, seq_len=SEQ, attention='xla')
  with cfg.data.unlocked():
    cfg.data.tokenizer, cfg.data.vocab_size = 'bpe', 320
  model = random_params_model(cfg.model, seed=1, std=0.3)
  ckpt_lib.save_imported(root / 'run', cfg, model, tok)
  return dict(path=root / 'run', root=root, model=model, tok=tok)


@pytest.fixture(scope='module')
def exported(workdir):
  out = workdir['root'] / 'hf'
  args = types.SimpleNamespace(workdir=str(workdir['path']), out=str(out), step=None, dtype='float32',
                               max_shard_size='2GB')
  assert hf_export.run_export(args) == 0
  return out


def _instances(pairs, kind='loglikelihood'):
  return [Instance(request_type=kind, doc={}, arguments=p, idx=i) for i, p in enumerate(pairs)]


@nnx.jit
def _forward(model, x_BT):
  return model(x_BT)


def _direct(model, ctx_ids, cont_ids):
  """log p(cont | ctx) and greedy from one forward, numpy float64 (the last SEQ+1 tokens kept). The input
  is padded at its end to SEQ, one compiled width for every call: the model is causal, so the padding
  cannot reach the positions read."""
  full = (list(ctx_ids) + list(cont_ids))[-(SEQ + 1):]
  x_BT = np.zeros((1, SEQ), np.int32)
  x_BT[0, :len(full) - 1] = full[:-1]
  logits = np.asarray(_forward(model, jnp.asarray(x_BT)), np.float64)[0, :len(full) - 1]
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  n = min(len(cont_ids), len(full) - 1)
  pos = np.arange(len(full) - 1 - n, len(full) - 1)
  tgt = np.asarray(full[1:])[pos]
  return float((logits[pos, tgt] - logz[pos]).sum()), bool(np.all(logits[pos].argmax(-1) == tgt))


def test_loglikelihood_matches_lm_evals_hf_model_and_a_direct_computation(workdir, exported):
  from lm_eval.models.huggingface import HFLM
  ours = harness.make_lm(workdir['model'], workdir['tok'], batch_size=4)
  got = ours.loglikelihood(_instances(REQUESTS))
  ref_lm = HFLM(pretrained=str(exported), dtype='float32', device='cpu', batch_size=3, max_length=SEQ,
                prefix_token_id=workdir['tok'].eos_id)
  ref = ref_lm.loglikelihood(_instances(REQUESTS))
  for (ctx, cont), (lp, greedy), (lp_hf, greedy_hf) in zip(REQUESTS, got, ref):
    assert abs(lp - lp_hf) < 1e-4, (ctx[:30], cont, lp, lp_hf)
    assert greedy == greedy_hf
  tok = workdir['tok']
  for (ctx, cont), (lp, greedy) in zip(REQUESTS, got):
    if ctx:
      ctx, cont = ctx.rstrip(), ctx[len(ctx.rstrip()):] + cont   # lm-eval moves trailing spaces over
      whole, c = tok.encode(ctx + cont), tok.encode(ctx)
      ctx_ids, cont_ids = c, whole[len(c):]
    else:
      ctx_ids, cont_ids = [tok.eos_id], tok.encode(cont)
    lp_direct, greedy_direct = _direct(workdir['model'], ctx_ids, cont_ids)
    assert lp == pytest.approx(lp_direct, abs=1e-4) and greedy == greedy_direct
  assert all(w % harness.BUCKET == 0 or w == SEQ for _, w in ours.shapes)
  assert len(ours.shapes) <= 2   # 6 requests of 5..64 tokens: at most two padded widths, not one per request


def test_rolling_loglikelihood_is_the_sum_over_windows(workdir, exported):
  """A text longer than seq_len: our rolling log-likelihood equals HFLM's and the chain-rule sum of
  per-window direct computations (lm-eval's disjoint windows)."""
  from lm_eval import utils
  from lm_eval.models.huggingface import HFLM
  text = ' '.join(_lines(30, seed=5))
  ours = harness.make_lm(workdir['model'], workdir['tok'], batch_size=4)
  (lp,) = ours.loglikelihood_rolling(_instances([(text,)], 'loglikelihood_rolling'))
  ref_lm = HFLM(pretrained=str(exported), dtype='float32', device='cpu', batch_size=2, max_length=SEQ,
                prefix_token_id=workdir['tok'].eos_id)
  (lp_hf,) = ref_lm.loglikelihood_rolling(_instances([(text,)], 'loglikelihood_rolling'))
  ids = workdir['tok'].encode(text)
  assert len(ids) > 2 * SEQ
  windows = map(utils.make_disjoint_window, utils.get_rolling_token_windows(ids, workdir['tok'].eos_id, SEQ, 1))
  direct = sum(_direct(workdir['model'], c, t)[0] for c, t in windows)
  assert lp == pytest.approx(lp_hf, abs=1e-3) and lp == pytest.approx(direct, abs=1e-3)


def _write_tasks(root: pathlib.Path) -> dict:
  """A multiple-choice, a rolling-perplexity and a generate-until task over local JSONL files."""
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(3)
  mc = []
  for i in range(6):
    q = ' '.join(rng.choice(WORDS, 5)).capitalize()
    choices = [' ' + ' '.join(rng.choice(WORDS, int(rng.integers(1, 4)))) for _ in range(3)]
    mc.append({'question': q, 'choices': choices, 'gold': int(i % 3)})
  (root / 'mc.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in mc))
  (root / 'text.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n' for t in _lines(3, seed=9)))
  (root / 'gen.jsonl').write_text(''.join(json.dumps({'q': ' '.join(rng.choice(WORDS, 4)), 'a': 'the'}) + '\n'
                                          for _ in range(3)))
  head = 'dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {path}\ntest_split: test\n'
  (root / 'tiny_mc.yaml').write_text(
      'task: tiny_mc\n' + head.format(path=root / 'mc.jsonl') + 'output_type: multiple_choice\n'
      'doc_to_text: "{{question}}"\ndoc_to_choice: choices\ndoc_to_target: gold\n'
      'metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n')
  (root / 'tiny_ppl.yaml').write_text(
      'task: tiny_ppl\n' + head.format(path=root / 'text.jsonl') + 'output_type: loglikelihood_rolling\n'
      'doc_to_text: ""\ndoc_to_target: "{{text}}"\n'
      'metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n')
  (root / 'tiny_gen.yaml').write_text(
      'task: tiny_gen\n' + head.format(path=root / 'gen.jsonl') + 'output_type: generate_until\n'
      'doc_to_text: "{{q}}"\ndoc_to_target: "{{a}}"\n'
      'generation_kwargs:\n  until: ["."]\n  max_gen_toks: 6\n  do_sample: false\n'
      'metric_list:\n  - metric: exact_match\n')
  return dict(mc=mc, root=root)


def test_scaling_eval_tasks_runs_local_yaml_tasks(workdir, capsys):
  """`scaling eval --tasks a.yaml,b.yaml,c.yaml`: results in the workdir, a table printed; the
  multiple-choice accuracy equals the argmax over choices of direct log-likelihoods, and the greedy
  generation equals scaling.inference.generate's (cut at the stop string)."""
  from scaling.inference.generate import generate
  t = _write_tasks(workdir['root'] / 'tasks')
  names = ','.join(str(t['root'] / f'{n}.yaml') for n in ('tiny_mc', 'tiny_ppl', 'tiny_gen'))
  assert cli.main(['eval', '--workdir', str(workdir['path']), '--tasks', names, '--eval_batch_size', '4']) == 0
  printed = capsys.readouterr().out
  assert 'tiny_mc' in printed and 'tiny_ppl' in printed and 'tiny_gen' in printed and 'acc' in printed
  results = json.loads((workdir['path'] / 'lm_eval' / 'results_step0.json').read_text())
  tok, model = workdir['tok'], workdir['model']
  correct = 0
  for doc in t['mc']:
    ctx = doc['question'] + ' '   # lm-eval's default target_delimiter
    scores = []
    for ch in doc['choices']:
      c, rest = ctx.rstrip(), ctx[len(ctx.rstrip()):] + ch
      whole, ci = tok.encode(c + rest), tok.encode(c)
      scores.append(_direct(model, ci, whole[len(ci):])[0])
    correct += int(np.argmax(scores) == doc['gold'])
  assert results['results']['tiny_mc']['acc,none'] == pytest.approx(correct / len(t['mc']))
  assert np.isfinite(results['results']['tiny_ppl']['word_perplexity,none'])
  lm = harness.make_lm(model, tok, batch_size=4)
  q = json.loads((t['root'] / 'gen.jsonl').read_text().splitlines()[0])['q']
  (text,) = lm.generate_until(_instances([(q, {'until': ['.'], 'max_gen_toks': 6, 'do_sample': False})],
                                         'generate_until'))
  (ref,) = generate(model, tok, [q], max_new_tokens=6, temperature=0.0)
  assert text == ref.split('.')[0]


class _Index:
  """lm-eval's TaskManager with a fixed index of two registered names (building the real one takes ~15 s)."""

  def __init__(self, include_defaults=True):
    pass

  def match_tasks(self, names):
    return [n for n in names if n in ('hellaswag', 'arc_easy')]


def test_clear_errors(workdir, monkeypatch, capsys):
  import lm_eval.tasks
  monkeypatch.setattr(lm_eval.tasks, 'TaskManager', _Index)
  assert cli.main(['eval', '--workdir', str(workdir['path']), '--tasks', 'arc_easy,no_such_task_xyz']) == 2
  err = capsys.readouterr().err
  assert 'no_such_task_xyz' in err and 'arc_easy' not in err
  _no_lm_eval_is_a_clear_error(workdir, monkeypatch, capsys)


@pytest.mark.slow
def test_unknown_names_are_found_in_lm_evals_own_index(workdir, monkeypatch, capsys):
  """The same error from lm-eval's real index of its registered tasks."""
  assert cli.main(['eval', '--workdir', str(workdir['path']), '--tasks', 'no_such_task_xyz']) == 2
  assert 'no_such_task_xyz' in capsys.readouterr().err


def _no_lm_eval_is_a_clear_error(workdir, monkeypatch, capsys):
  import sys
  monkeypatch.setitem(sys.modules, 'lm_eval', None)   # as if not installed
  assert cli.main(['eval', '--workdir', str(workdir['path']), '--tasks', 'hellaswag']) == 2
  assert ".[eval]" in capsys.readouterr().err


def test_task_yamls_skip_lm_evals_own_index_unless_a_name_or_group_needs_it(tmp_path, monkeypatch):
  """Building lm-eval's index of its built-in tasks takes seconds: resolve_tasks asks for it only when a
  registered name is given or a YAML is a group (whose members may be registered names)."""
  import lm_eval.tasks
  made = []

  class Recorder:
    def __init__(self, include_defaults=True):
      made.append(include_defaults)

    def match_tasks(self, names):
      return list(names)
  monkeypatch.setattr(lm_eval.tasks, 'TaskManager', Recorder)
  t = _write_tasks(tmp_path / 'tasks')
  mc = str(t['root'] / 'tiny_mc.yaml')
  (tmp_path / 'group.yaml').write_text('group: both\ntask:\n  - tiny_mc\n  - hellaswag\n')
  for spec, defaults in ((mc, False), (str(t['root']), False), (f'{mc},hellaswag', True),
                         (str(tmp_path / 'group.yaml'), True)):
    made.clear()
    tasks, _ = harness.resolve_tasks(spec)
    assert made == [defaults], (spec, made)
    assert tasks and (spec != mc or tasks[0]['task'] == 'tiny_mc')
