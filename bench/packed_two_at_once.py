"""K=8 as two packs of 4 at once (the launcher with pack_max_members=4 and --max-parallel 2): the arm
bench/packed.py does not measure, with its flags (the study's runs, 40 steps, vmap). Needs the prose corpus.
Run from the repository root: python bench/packed_two_at_once.py"""
import json
import pathlib
import sys
import tempfile

sys.path.insert(0, 'bench')
import packed as P  # noqa: E402

args = P.parse_args(['--d_models', '32,64', '--ks', '4', '--layouts', 'vmap', '--steps', '40'])
study = P.load_study(); plan = study.plan()
scratch = pathlib.Path(tempfile.mkdtemp(prefix='twopacks-'))
b = P.Bench(args, study, plan, 'prose', scratch, [250, 3938])
for d in (32, 64):
  b.shapes[d] = P.study_shape(study, plan, d)
for d in (32, 64):
  argvs, logs = [], []
  lrs = P.member_lrs(b.lr(d), 8)
  for j in range(2):
    root = scratch / f'd{d}-pack{j}'
    argvs.append([sys.executable, '-m', 'scaling', 'train-packed', '--config', P.STUDY, '--workdir', str(root),
                  '--layout', 'vmap', '--vary', 'train.lr=' + ','.join(lrs[4 * j:4 * j + 4]), *b.flags(d, drop=('train.lr',))])
    logs.append(f'{root}.log')
  walls = P.run_together(argvs, logs, 900)
  done = sum(json.loads((scratch / f'd{d}-pack{j}' / f'member-{i}' / 'summary.json').read_text())['state'] == 'done'
             for j in range(2) for i in range(4))
  print(f'd_model {d}: K=8 as 2 packs of 4 at once: walls {walls[0]:.1f} / {walls[1]:.1f} s -> {max(walls):.1f} s, {done}/8 done', flush=True)
