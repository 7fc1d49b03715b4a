"""claims_measure's choices that need no model (scaling/analysis/seed/measure.py)."""


def test_the_judge_is_the_strongest_run_with_the_base_tokenizer():
  """measure._judge: the lowest eval/bpb among finished runs with the base's corpus and tokenizer whose context
  holds a prompt and its continuation (not the run with the most parameters)."""
  from scaling.analysis.seed import measure

  class Rd:
    def __init__(self, h, bpb):
      self.hash, self.path, self._bpb = h, f'/runs/{h}', bpb

    def summary(self):
      return None if self._bpb is None else {'eval/bpb': self._bpb}

  class Rec:
    def __init__(self, arm, tok='bpe', seq=256):
      self.config = {'name': f'seed_upgrades:{arm}', 'data': {'corpus': 'prose', 'tokenizer': tok, 'vocab_size': 4096},
                     'model': {'seq_len': seq}}

  found = [(Rd('b', 2.08), Rec('base')), (Rd('s4', 1.97), Rec('size-4x')), (Rd('c', 1.5), Rec('tok-char', 'char')),
           (Rd('x', 1.9), Rec('ctx64', seq=64)), (Rd('u', None), Rec('size-8x')), (Rd('t', 2.11), Rec('tok-bpe'))]
  assert measure._judge(found) == ('s4', '/runs/s4')
  assert measure._judge(found[2:3]) == (None, None)        # no base run: nothing to match the tokenizer to
