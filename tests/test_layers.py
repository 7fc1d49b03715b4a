"""The package's shape: sub-packages in layers, imports only downward, no circle, and the jax-free entry points.

The import graph is read with `ast` from every module under scaling/, imports inside functions included (a lazy
import is still an arrow). A module may import its own layer and the layers below it; two layers of one rank
(inference and launch) do not import each other.
"""

import ast
import collections
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = REPO / 'scaling'

# rank of each layer: a module may import modules of its own layer or of a lower rank
LAYERS = {'base': 0, 'data': 1, 'config': 2, 'model': 3, 'train': 4, 'inference': 5, 'launch': 5,
          'analysis': 6, 'cli': 7}
TOP_LEVEL = {'scaling': 'base', 'scaling.__main__': 'cli'}   # the package itself and `python -m scaling`


def module_names(package: pathlib.Path) -> dict[str, pathlib.Path]:
  out = {}
  for p in package.rglob('*.py'):
    parts = p.relative_to(package.parent).with_suffix('').parts
    name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
    out[name] = p
  return out


def _targets(mod: str, path: pathlib.Path, node, modules) -> list[str]:
  """The internal modules one import statement names (a `from PKG import NAME` naming a module counts as it)."""
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  else:
    base = node.module or ''
    if node.level:
      pkg = mod.split('.') if path.name == '__init__.py' else mod.split('.')[:-1]
      pkg = pkg[:len(pkg) - node.level + 1]
      base = '.'.join(pkg + ([base] if base else []))
    names = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base for a in node.names]
  out = []
  for t in names:
    while t and t not in modules:
      t = t.rpartition('.')[0]
    if t and t != mod:
      out.append(t)
  return out


def import_graph(package: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
  """module -> the internal modules it imports, at any depth of the file (functions, methods, branches)."""
  modules = module_names(package)
  graph = collections.defaultdict(set)
  for mod, path in modules.items():
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        graph[mod].update(_targets(mod, path, node, modules))
    graph.setdefault(mod, set())
  return dict(graph)


def layer_of(mod: str) -> str:
  if mod in TOP_LEVEL:
    return TOP_LEVEL[mod]
  layer = mod.split('.')[1]
  if layer not in LAYERS:
    raise AssertionError(f'{mod} is in no layer: put it in one of scaling/{{{",".join(LAYERS)}}}/')
  return layer


def upward_imports(graph) -> list[str]:
  bad = []
  for mod, targets in sorted(graph.items()):
    a = layer_of(mod)
    for t in sorted(targets):
      b = layer_of(t)
      if b != a and LAYERS[b] >= LAYERS[a]:
        bad.append(f'{mod} ({a}) imports {t} ({b})')
  return bad


def cycles(graph) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan), each a circle of imports."""
  index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_imports_go_only_down_the_layers_and_close_no_circle():
  graph = import_graph()
  assert len(graph) > 40, sorted(graph)   # the whole package was read
  assert upward_imports(graph) == []
  assert cycles(graph) == []


def test_sub_package_inits_are_empty_of_code():
  """Importing a layer's package runs nothing: no re-exports that would pull a heavy module in."""
  for init in PACKAGE.rglob('__init__.py'):
    tree = ast.parse(init.read_text())
    code = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert code == [], f'{init.relative_to(REPO)} holds code; import from the module that defines it'


def test_the_checks_find_what_they_look_for(tmp_path):
  """The same checks on a made-up package with a lazy circle and an upward import: both are found."""
  pkg = tmp_path / 'scaling'
  for d, files in {'base': {'a.py': 'def f():\n  from scaling.config import c\n'},
                   'config': {'c.py': 'from scaling.base import a\n'},
                   'data': {'d.py': 'import scaling.config.c\n'}}.items():
    (pkg / d).mkdir(parents=True)
    (pkg / d / '__init__.py').write_text('')
    for name, text in files.items():
      (pkg / d / name).write_text(text)
  (pkg / '__init__.py').write_text('')
  graph = import_graph(pkg)
  assert graph['scaling.base.a'] == {'scaling.config.c'}
  assert cycles(graph) == [['scaling.base.a', 'scaling.config.c']]
  assert upward_imports(graph) == ['scaling.base.a (base) imports scaling.config.c (config)',
                                   'scaling.data.d (data) imports scaling.config.c (config)']


JAX_FREE = {
    'the launcher': 'import scaling.launch.cli, scaling.launch.local, scaling.launch.slurm, '
                    'scaling.launch.tpu_vm, scaling.launch.gke',
    'the accounting': 'import scaling.model.accounting; scaling.model.accounting.count_params',
    '`scaling fit --help`': 'from scaling.cli import main\ntry:\n  main.main(["fit", "--help"])\n'
                            'except SystemExit:\n  pass',
    '`scaling sweep --dry-run`': 'import tempfile\nfrom scaling.cli import main\n'
                                 'assert main.main(["sweep", "--config", "configs/sweeps/smoke.py", "--backend", "local", '
                                 '"--root", tempfile.mkdtemp(), "--dry-run"]) == 0',
    '`scaling report --help`': 'from scaling.cli import main\ntry:\n  main.main(["report", "--help"])\n'
                               'except SystemExit:\n  pass',
}


@pytest.mark.parametrize('what', sorted(JAX_FREE))
def test_entry_points_that_never_load_jax(what):
  code = JAX_FREE[what] + '\nimport sys\nheavy = sorted(m for m in ("jax", "flax", "optax", "orbax") if m in sys.modules)' \
                          '\nassert not heavy, heavy'
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  r = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]


# Size limits that keep a module readable in one sitting; an exception names its reason here.
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 600, 80
LONG_BY_DESIGN: dict[str, str] = {}


def test_modules_and_functions_stay_small():
  too_long = []
  for mod, path in sorted(module_names(PACKAGE).items()):
    text = path.read_text()
    if text.count('\n') > MAX_MODULE_LINES and mod not in LONG_BY_DESIGN:
      too_long.append(f'{mod}: {text.count(chr(10))} lines')
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        n = node.end_lineno - node.lineno + 1
        if n > MAX_FUNCTION_LINES and f'{mod}.{node.name}' not in LONG_BY_DESIGN:
          too_long.append(f'{mod}.{node.name}: {n} lines')
  assert too_long == []
