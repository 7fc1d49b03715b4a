"""`scaling train`: train (or resume) a model in a workdir, then print greedy and top-p samples."""

from __future__ import annotations

import sys

HELP = 'train (or resume) a model'


def add_args(p) -> None:
  p.add_argument('--workdir', default=None, help='run directory (default: ./workdir). An existing run (its '
                 'config.json and a checkpoint) resumes from its own config.json when no --config is given')
  p.add_argument('--extend', type=int, default=None, metavar='STEPS',
                 help='continue the run in --workdir to STEPS steps in all, with the lr schedule defined for the new '
                 'length (cosine and wsd are recomputed for it: the lr changes from the resume step on); recorded '
                 'in the workdir\'s history.jsonl')
  p.add_argument('--force-change', dest='force_change', action='store_true',
                 help='apply --config changes that change the math of the run in --workdir (lr, schedule, data, ...) '
                 'from its resume step on, and record them in its history.jsonl; without it they are refused')
  p.add_argument('--debug', action='store_true', help='un-jitted step with NaN checks; print param shardings')
  p.add_argument('--profile_steps', default='', help='A:B writes a profiler trace of steps A..B-1')
  p.add_argument('--no_sample', dest='sample', action='store_false', help='skip the samples at the end')
  p.add_argument('--local_processes', type=int, default=1, help='start N processes on this host (multi-host test)')
  p.add_argument('--coordinator', default=None, help='HOST:PORT of process 0 for jax.distributed')
  p.add_argument('--num_processes', type=int, default=None)
  p.add_argument('--process_id', type=int, default=None)


def run(args, overrides) -> int:
  from scaling.train import distributed
  if args.local_processes > 1:
    return distributed.launch_local(args.local_processes, sys.argv[1:])
  distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  from scaling.config import history
  from scaling.config.load import load_config
  from scaling.train.loop import train
  workdir = args.workdir or 'workdir'
  if args.config is None and history.existing_run(workdir):   # the workdir is the source of truth
    cfg = history.load_workdir_config(workdir, overrides)
    if distributed.is_main():
      print(f'{workdir} holds a run: its own config.json is the config (no --config given)'
            + (f', with {len(overrides)} --config.* flag(s) on top' if overrides else ''), flush=True)
  else:
    cfg = load_config(args.config, overrides)
  sample = args.sample and bool(cfg.sample.prompts)   # sample.prompts=() skips the samples, like --no_sample
  hooks = ()
  if cfg.train.get('predict_every', 0):   # the predicted final loss (analysis: handed in, the trainer never imports it)
    from scaling.analysis.curves import live
    hooks = (live.hook(cfg),)
  result = train(cfg, workdir, debug=args.debug, profile_steps=args.profile_steps, final_model=sample,
                 extend=args.extend, force_change=args.force_change, hooks=hooks)
  code = result['exit_code']
  if result['state'] == 'done' and sample and distributed.is_main():
    try:
      _print_samples(result['model'], result['tokenizer'], cfg)
    except KeyboardInterrupt:
      print('interrupted (SIGINT) during the end-of-run samples; the training run itself is finished and saved',
            file=sys.stderr, flush=True)
      code = 130
  distributed.end_of_run()   # main-only work is done: all processes reach jax's shutdown barrier together
  return code


def _print_samples(model, tok, cfg):
  from scaling.inference.generate import generate
  s = cfg.sample
  prompts = list(s.prompts)
  for label, temp, top_p in (('greedy', 0.0, 1.0), (f'top-p {s.top_p}, T={s.temperature}', s.temperature, s.top_p)):
    outs = generate(model, tok, prompts, max_new_tokens=s.max_new_tokens, temperature=temp, top_k=s.top_k,
                    top_p=top_p, seed=s.seed)
    print(f'\n=== samples ({label}) ===')
    for p, o in zip(prompts, outs):
      print(f'--- {p!r}\n{p}{o}')
