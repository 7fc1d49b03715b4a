"""The names a config may choose and the exit codes of `scaling train`, in one place.

Free of JAX on purpose: validating a config (scaling/config/load.py), a launcher's dry run
(launch/) and a sweep's run hashes import this module and nothing heavier. Each
implementation imports its names from here and checks at import that it implements
every one (scaling/model/attention.py, scaling/model/transformer.py, scaling/train/optim.py).
"""

# model section
NORMS = ('rmsnorm', 'layernorm')
POSITIONS = ('rope', 'learned', 'none')
MLPS = ('swiglu', 'gelu')
DTYPES = ('auto', 'float32', 'bfloat16')
ATTENTION = ('auto', 'reference', 'xla', 'blockwise', 'cudnn', 'splash')   # model.attention
REMATS = ('none', 'full', 'dots', 'dots_except_mlp')                       # model.remat
PARAMETRIZATIONS = ('sp', 'mup', 'completep')                              # model.parametrization

# train section
OPTIMIZERS = ('adamw', 'muon')                                              # train.optimizer
SCHEDULES = ('cosine', 'wsd', 'constant')
DECAY_SHAPES = ('linear', 'cosine', '1-sqrt')                              # train.decay_shape (wsd)
BATCH_LR_RULES = ('sqrt', 'linear', 'unchanged')                         # train.batch_lr_rule

# exit codes of `scaling train` (the launchers read them: scaling/base/layout.py)
EXIT_OK = 0
EXIT_DIVERGED = 3          # a non-finite loss or gradient norm; the last good checkpoint is kept
EXIT_PREEMPTED = 75        # EX_TEMPFAIL: saved and stopped on SIGTERM; re-running resumes
EXIT_INTERRUPTED = 130     # 128 + SIGINT: saved and stopped by the user (Ctrl-C); re-running resumes
