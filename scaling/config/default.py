"""The default run: a small LLaMA-style model on the embedded Shakespeare corpus.

`scaling train` with no arguments uses this file. Every field is documented here;
`scaling/model/ladder.py` overrides only the model dims and the batch/steps.

Override any field from the command line: `--config.model.num_layers=2`.
`scaling.model.transformer.ModelDims` takes its defaults from the model section here (one source).
"""

import ml_collections


def model() -> ml_collections.ConfigDict:
  """The model section (scaling.model.transformer.ModelDims takes its defaults from here)."""
  m = ml_collections.ConfigDict()
  m.vocab_size = 0           # embedding rows. 0: follow the tokenizer (its id count: data.vocab_size for
                             # bpe/unigram, 259 for byte, filled when the config loads; char/tiktoken: when
                             # the data is prepared). An explicit size below the tokenizer's id count is an
                             # error naming both fields; one above it too, unless pad_vocab (below)
  m.pad_vocab = False        # True: an explicit vocab_size above the tokenizer's id count is deliberate
                             # padding (e.g. a multiple of the mesh's model axes); the extra rows are never
                             # inputs and never sampled
  m.seq_len = 256            # training context length (also the learned-position table size, unless position_table)
  m.num_layers = 4
  m.d_model = 256
  m.num_heads = 4
  m.num_kv_heads = 2         # grouped-query attention; must divide num_heads
  m.head_dim = 0             # 0: d_model // num_heads
  m.d_ff = 0                 # 0: swiglu -> 8/3 d_model rounded up to a multiple of 64; gelu -> 4 d_model
  m.norm = 'rmsnorm'         # rmsnorm | layernorm
  m.norm_eps = 1e-5
  m.position = 'rope'        # rope | learned | none
  m.position_table = 0       # position=learned: rows of the position table. 0: seq_len (positions past the training
                             # length are refused). > seq_len: the rows past seq_len are never trained, but the
                             # model can be evaluated (and generate) up to this length; only with learned positions
  m.rope_theta = 10000.0
  m.mlp = 'swiglu'           # swiglu | gelu
  m.tied_embeddings = True
  m.dtype = 'auto'           # compute dtype: auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | bfloat16
  m.scan_layers = False      # lax.scan over the stacked blocks: compile time independent of depth (on for
                             # the big rungs); unrolled is ~5% faster for shallow CPU models
  m.remat = 'none'           # none | full | dots | dots_except_mlp
  m.attention = 'auto'       # auto | xla | blockwise | cudnn | splash
  m.attention_block_size = 512
  m.sliding_window = 0       # 0: full causal attention
  m.init_std = 0.02          # N(0, init_std); output projections scaled by 1/sqrt(2 num_layers)
  m.parametrization = 'sp'   # sp | mup | completep (the table: scaling/model/parametrization.py). mup: with m = d_model /
                             # mup_base_width, hidden matrices init / sqrt(m) and Adam lr / m (weight decay
                             # scales with each parameter's own lr), attention logits ~ 1/head_dim (mup_base_head_dim),
                             # logits / m; the lr and init_std found at the base width then hold at any width.
                             # completep (Dey et al. 2025, alpha = 1): mup's width rules (hidden weight decay x m so
                             # lr x wd holds) and depth: with d = num_layers / mup_base_depth each residual branch
                             # x 1/d, Adam's eps on the blocks / (m d); the lr found at the base depth then holds
  m.mup_base_width = 0       # mup: the d_model the lr and init_std were tuned at (0: this d_model, m = 1)
  m.mup_base_head_dim = 0    # mup: the head_dim at the base width; attention logits x sqrt(base / head_dim)
                             # (~ 1/head_dim). 0: this head_dim, factor 1 (head_dim fixed, heads grow with width)
  m.mup_base_depth = 0       # completep: the num_layers the lr and init_std were tuned at (0: this num_layers, d = 1)
  return m


def data() -> ml_collections.ConfigDict:
  """The data section: corpus, tokenizer, split."""
  d = ml_collections.ConfigDict()
  d.corpus = 'shakespeare'   # shakespeare | prose[:PARTS] (docs/corpus.md) | comma-separated files/globs (.txt .jsonl .jsonl.gz .parquet) | hf:NAME[:CONFIG]
  d.text_field = 'text'      # for jsonl / parquet / hf
  d.tokenizer = 'bpe'        # bpe | unigram | char | byte | tiktoken:ENCODING
  d.vocab_size = 4096        # for bpe/unigram: pieces to train (char/byte: decided by the tokenizer); the
                             # model follows it unless model.vocab_size is set
  d.data_dir = ''            # '' -> $SCALING_CACHE/data/<hash of corpus+tokenizer> (default ~/.cache/scaling)
  d.val_fraction = 0.05      # fraction of documents (whole works) held out for validation
  d.character_coverage = 1.0 # bpe/unigram: share of characters that get pieces; < 1 (e.g. 0.9995) spells the rarest
                             # in bytes (needed when a corpus has more distinct characters than a small vocab)
  d.train_tokens = 0         # > 0: train on a fixed slice of this many tokens of the training split (whole documents
                             # in a seeded order; same tokenizer and validation split: scaling/data/subset.py)
  d.document_masking = False # emit segment ids so attention does not cross documents
  d.num_workers = 0          # grain worker processes (0 = in-process; fastest on small CPUs)
  # a data mixture (scaling/data/mixture.py): source name -> corpus spec (any data.corpus form, e.g. 'prose:linux');
  # non-empty: the run trains on these sources (data.corpus is not used), each with its own train/validation split
  # (data.val_fraction) and one tokenizer (bpe/unigram/char: trained on an equal share of every source), and each
  # source's held-out split is a tagged eval set (eval/<name>/bpb; eval/bpb is their mean), its train loss
  # train/<name>/loss. --config.data.mixture.linux=prose:linux adds one
  d.mixture = ml_collections.ConfigDict()
  d.mixture_weights = ''     # 'linux=0.7,kjv=0.3': every source once, each >= 0 (0 leaves it out), summing to 1 (1/3 is
                             # exact). Each global batch holds exactly weight x batch_size rows of a source where that
                             # is an integer, else within one row. May change on resume (recorded in history.jsonl)
  d.mixture_stages = ''      # 'STEP:name=w,...;STEP:...': other weights from STEP on; every source keeps its position
                             # (no window seen twice, none skipped). May change on resume (recorded)
  d.mixture_max_epochs = 1.0 # the most passes over any source's training windows a run may make (checked before
                             # any work: a source too small for its weight is an error naming it)
  return d


def train() -> ml_collections.ConfigDict:
  """The training section: batch, steps or tokens, optimizer, schedule, evaluation, checkpoints."""
  t = ml_collections.ConfigDict()
  t.seed = 0                 # the data order and (unless init_seed >= 0) the parameter init
  t.init_seed = -1           # >= 0: the parameter init's own seed (packable: scaling/config/pack.py); -1: seed
  t.batch_size = 16          # global batch, in sequences
  t.microbatches = 1         # gradient accumulation: batch_size must divide by it
  t.batch_schedule = ''      # 'STEP:BATCH,...': once STEP steps are done the global batch is BATCH (e.g. '100:16,300:32';
                             # batch_size until the first). Data position, tokens_seen and FLOPs count sequences, so a
                             # change repeats or skips none; every batch must divide by microbatches, the data-parallel
                             # size and the process count (scaling/config/batch.py). '' = batch_size throughout
  t.batch_lr_rule = 'sqrt'   # lr of a step at batch B under batch_schedule: x sqrt(B / batch_size) (sqrt: Adam's square-
                             # root rule) | x B / batch_size (linear) | x 1 (unchanged)
  t.steps = 400              # total optimizer steps (or set tokens > 0 to derive steps); ~3 min on 2 CPU cores
                             # (a run in progress changes its length only with `scaling train --extend STEPS`)
  t.tokens = 0               # token budget; > 0 overrides steps = tokens // (batch_size * seq_len)
  t.lr = 3e-3
  t.min_lr_ratio = 0.1       # final lr = lr * min_lr_ratio
  t.warmup_steps = 40
  t.schedule = 'cosine'      # cosine | wsd | constant
  t.decay_fraction = 0.2     # wsd: fraction of steps in the final decay
  t.decay_steps = 0          # wsd: > 0 fixes the decay's length in steps (overrides decay_fraction): the
                             # stable phase ends at steps - decay_steps (a cooldown branch: at the fork step)
  t.decay_shape = 'linear'   # wsd decay: linear | cosine | 1-sqrt (Hägele et al. 2024)
  t.init_from = ''           # 'WORKDIR[:STEP]': start from another run's checkpoint (params, optimizer
                             # state, data position; default its latest step), then follow this run's
                             # schedule (scaling/train/branch.py). A relative WORKDIR is taken from this run's
                             # workdir, as a symlink's target is ('../<hash>:960' = a sibling sweep run).
                             # Ignored once this workdir has a checkpoint of its own (resume)
  t.optimizer = 'adamw'      # adamw | muon. muon (scaling/train/muon.py): the hidden matrices (attention and MLP) take
                             # Muon's orthogonalized momentum, scaled by sqrt(max(1, fan_out / fan_in)); embeddings,
                             # the LM head and the norms take AdamW (b1, b2, eps). lr, schedule, weight_decay and
                             # grad_clip apply to both
  t.muon_ns_steps = 5        # muon: Newton-Schulz iterations per step
  t.muon_momentum = 0.95     # muon: momentum (Nesterov)
  t.muon_adam_lr = 0.0       # muon: peak lr of the AdamW part (embeddings, head, norms) on the same schedule shape
                             # (warmup, decay, batch rule: train.lr's schedule x muon_adam_lr / lr); 0: train.lr
  t.weight_decay = 0.1       # on matrices only (ndim >= 2, embeddings included; Muon's matrices too)
  t.b1 = 0.9
  t.b2 = 0.95
  t.eps = 1e-8
  t.grad_clip = 1.0          # global-norm clip; 0 disables
  t.z_loss = 0.0             # coefficient of log(Z)^2
  t.loss_chunk = 512         # logits rows (global batch x positions) per chunk of the fused head+loss (scaling/train/loss.py); 0: all logits at once
  t.eval_every = 200
  t.eval_batches = 16        # 0: the whole validation split
  t.final_eval_lengths = ()  # extra context lengths evaluated at the end (summary: eval/bpb@L, eval/bpb@2x)
  # tagged eval sets (scaling/train/evalsets.py): tag -> corpus spec (any data.corpus form), each its corpus's
  # held-out split, tokenized with the run's tokenizer and cached; metrics eval/<tag>/loss, eval/<tag>/bpb at
  # eval_every and at the end. The training corpus's own split is always one, under its corpus name (e.g.
  # eval/shakespeare/bpb). A trailing '?': skipped while the corpus is not downloaded; '' turns a tag off.
  # Add one with --config.train.eval_sets.web='/data/web/*.jsonl'; replace all with --config.train.eval_sets={}
  t.eval_sets = ml_collections.ConfigDict({'prose': 'prose?'})
  t.log_every = 10
  t.predict_every = 0        # > 0 (`scaling train`): every this many steps, fit the multi-power law to the train loss so
                             # far (a background thread) and log the predicted final loss with its 90% interval
                             # (predict/final_loss*, scaling/analysis/curves/live.py); 0: off
  t.ckpt_every = 200
  t.keep_checkpoints = 2
  t.ckpt_steps = ()          # steps saved besides every ckpt_every, and never deleted (cooldown branches' forks)
  t.peak_flops = 0.0         # per-device peak FLOP/s for MFU; 0 -> table (accelerators) or measured (CPU)
  return t


def logging() -> ml_collections.ConfigDict:
  """Experiment tracking (scaling/train/tracking.py)."""
  lg = ml_collections.ConfigDict()
  lg.wandb_project = ''      # Weights & Biases project: '' = off. Logs the scalars TensorBoard gets + this config
  lg.wandb_entity = ''       # W&B team/user ('' = your default)
  lg.wandb_group = ''        # '' = the sweep's name for a sweep run (its run.json), else no group
  lg.wandb_name = ''         # '' = the run hash for a sweep run, else the workdir's name
  lg.wandb_mode = ''         # online | offline (run files only, no network) | '' = $WANDB_MODE, else online
  return lg


def mesh() -> ml_collections.ConfigDict:
  """The device mesh."""
  mesh = ml_collections.ConfigDict()
  mesh.data = -1             # -1: fill with the remaining devices
  mesh.fsdp = 1
  mesh.tensor = 1
  return mesh


def sample() -> ml_collections.ConfigDict:
  """Sampling at the end of `scaling train`."""
  s = ml_collections.ConfigDict()
  s.prompts = ('ROMEO:', 'First Citizen:\nBefore we proceed')   # () skips `scaling train`'s end-of-run samples
  s.max_new_tokens = 64
  s.temperature = 0.8
  s.top_k = 0
  s.top_p = 0.9
  s.seed = 0
  return s


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.name = ''                # free-form label of the run (sweeps use it, e.g. for the arm of a study)
  c.model = model()
  c.data = data()
  c.train = train()
  c.logging = logging()
  c.mesh = mesh()
  c.sample = sample()
  return c
