"""Published compute-optimal scaling results to set a sweep's fit beside: the numbers, what each study measured, and
how sure we are of each digit.

Each anchor: key, cite (authors, year, title, arXiv id), measured (what was fitted, on what), n_convention (what
N counts), values {a, b, alpha, beta, E, A, B}: each None when the study gives no such number, a per-method
dict for studies with several (Hoffmann's approaches 1/2/3; E, A, B, alpha, beta only for approach 3), notes, and
approximate (True: the study states a only roughly). Numbers in `uncertain` are recalled, not
checked against the paper: the report prints them with a mark and they must be checked before being quoted.

Conventions: N_opt ~ C^a, D_opt ~ C^b; L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann's approach 3 form; nats
per token on the study's own data, so E, A, B do not transfer between datasets or tokenizers: compare exponents).
"""

from __future__ import annotations

ANCHORS: tuple[dict, ...] = (
    {
        'key': 'hoffmann2022',
        'short': 'Hoffmann et al. 2022',
        'cite': 'Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models" (Chinchilla), arXiv:2203.15556',
        'measured': 'over 400 models (70M to over 16B parameters, 5B to 500B tokens) on MassiveText; three '
                    'estimates of N_opt(C): 1 the lower envelope of training curves, 2 IsoFLOP parabolas, '
                    '3 a parametric L(N, D) fitted with a Huber loss',
        'n_convention': 'total parameters',
        'values': {'a': {'approach1': 0.50, 'approach2': 0.49, 'approach3': 0.46},
                   'b': {'approach1': 0.50, 'approach2': 0.51, 'approach3': 0.54},
                   'E': {'approach3': 1.69}, 'A': {'approach3': 406.4}, 'B': {'approach3': 410.7},
                   'alpha': {'approach3': 0.34}, 'beta': {'approach3': 0.28}},
        'notes': 'a, b from Table 2; E, A, B, alpha, beta from eq. 10 (approach 3). The rounded alpha and beta give '
                 'beta / (alpha + beta) = 0.452, not the 0.46 of Table 2.',
        'uncertain': (),
    },
    {
        'key': 'besiroglu2024',
        'short': 'Besiroglu et al. 2024',
        'cite': 'Besiroglu, Erdil, Barnett, You 2024, "Chinchilla Scaling: A replication attempt", arXiv:2404.10102',
        'measured': "Hoffmann's approach 3 refitted on data reconstructed from Hoffmann et al.'s Figure 4: the "
                    'published fit fits those data poorly and its intervals are implausibly narrow (an optimiser '
                    'stopped early and rounded constants); the refit agrees with approaches 1 and 2',
        'n_convention': 'total parameters (as Hoffmann)',
        'values': {'a': 0.51, 'b': 0.49, 'E': 1.82, 'A': 482.0, 'B': 2085.4, 'alpha': 0.3478, 'beta': 0.3658},
        'notes': 'a = beta / (alpha + beta) = 0.513 from their alpha and beta; about 20 tokens per parameter at '
                 "Chinchilla's scale, as Hoffmann's approaches 1 and 2.",
        'uncertain': (),
    },
    {
        'key': 'porian2024',
        'short': 'Porian et al. 2024',
        'cite': 'Porian, Wortsman, Jitsev, Schmidt, Carmon 2024, "Resolving Discrepancies in Compute-Optimal Scaling '
                'of Language Models", arXiv:2406.19146 (NeurIPS 2024)',
        'measured': "Kaplan's and Hoffmann's a reproduced on OpenWebText2 and RefinedWeb: counting the last layer's "
                    'FLOPs, a warmup scaled to the model, and hyperparameters (lr, batch, AdamW beta2) tuned per '
                    "size move Kaplan's a to Hoffmann's; careful lr decay is not needed for it",
        'n_convention': 'parameters with FLOPs counted including the last (output) layer',
        'values': {'a': 0.5, 'b': None},
        'approximate': True,
        'notes': 'a ~ 0.5 after the corrections (their per-setting point estimates and intervals are in the paper; '
                 'not copied here).',
        'uncertain': (),
    },
    {
        'key': 'deepseek2024',
        'short': 'DeepSeek-AI 2024',
        'cite': 'DeepSeek-AI (Bi et al.) 2024, "DeepSeek LLM: Scaling Open-Source Language Models with Longtermism", '
                'arXiv:2401.02954',
        'measured': 'IsoFLOP profiles with model scale M = non-embedding FLOPs per token (C = M D) instead of N; '
                    'M_opt ~ C^a, D_opt ~ C^b on their pretraining data; a depends on data quality (higher-quality '
                    'data puts more of the compute into model scale)',
        'n_convention': 'M = non-embedding FLOPs per token (attention included), not a parameter count',
        'values': {'a': 0.5243, 'b': 0.4757},
        'notes': 'a and b for their final data. Across their datasets a rose with data quality, from about 0.45 '
                 '(early in-house data) to about 0.58 (OpenWebText2).',
        'uncertain': ('the per-dataset range 0.45 to 0.58 (recalled from their data-quality table, not checked)',),
    },
    {
        'key': 'kaplan2020',
        'short': 'Kaplan et al. 2020',
        'cite': 'Kaplan et al. 2020, "Scaling Laws for Neural Language Models", arXiv:2001.08361',
        'measured': 'L(N) and L(D) power laws without an irreducible term, and the compute-efficient allocation '
                    '(models stopped well before convergence) on WebText2; Hoffmann et al. attribute the larger a to '
                    'a learning-rate schedule not matched to each run\'s length, Porian et al. to the uncounted '
                    'last layer, warmup and untuned hyperparameters at small scale',
        'n_convention': 'non-embedding parameters',
        'values': {'a': 0.73, 'b': 0.27, 'alpha': 0.076, 'beta': 0.095},
        'notes': 'alpha = alpha_N 0.076 and beta = alpha_D 0.095 are the exponents of L(N) and L(D) alone, not of '
                 "Hoffmann's L(N, D); compare a and b.",
        'uncertain': (),
    },
)

BY_KEY = {a['key']: a for a in ANCHORS}


def anchor_value(key: str, quantity: str, method: str | None = None) -> float | None:
  """An anchor's number for one quantity (a, b, alpha, beta, E, A, B); for a per-method entry (Hoffmann's), `method`
  picks it (approach1/2/3); None when the study (or that method) gives none."""
  v = BY_KEY[key]['values'].get(quantity)
  if isinstance(v, dict):
    return v.get(method) if method else None
  return v


def value_text(v: float | dict | None, digits: str = 'g') -> str:
  """A value as text: '—' for none, one number, or per-method values joined by '/' with the methods named."""
  if v is None:
    return '—'
  if isinstance(v, dict):
    if len(v) == 1:
      (method, x), = v.items()
      return f'{x:{digits}} ({method.replace("approach", "approach ")})'
    return '/'.join(f'{x:.2f}' for x in v.values()) + ' (approaches ' + '/'.join(k[-1] for k in v) + ')'
  return f'{v:{digits}}'


def a_range_text(anchor: dict) -> str:
  """The anchor's a as text: one number (~ where the study gives only an approximate value) or the per-method
  values joined by '/'."""
  text = value_text(anchor['values'].get('a'))
  return f'~{text}' if anchor.get('approximate') else text
