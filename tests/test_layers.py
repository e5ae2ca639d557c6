"""Layers import downward only (issue 23.4): the data layer sits below training, evaluation and the commands, and the
metrics below training. Checked on the source with `ast` (nothing is imported), both module-level and function-level
imports, `from headgan_jax import train` as well as `from headgan_jax.train import ...`."""
from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'headgan_jax'

# folder of headgan_jax -> the headgan_jax modules / packages no module in it may import.
FORBIDDEN = {
    'data': ('headgan_jax.train', 'headgan_jax.metrics', 'headgan_jax.reenact', 'headgan_jax.main_job'),
    'metrics': ('headgan_jax.train',),
}


def imported_modules(path: pathlib.Path) -> set[str]:
  """Every module `path` imports, fully qualified: `from a import b` yields a and a.b (b may be a module)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out.add(node.module)
      out.update(f'{node.module}.{alias.name}' for alias in node.names)
  return out


def violations(folder: str, forbidden: tuple[str, ...], package: pathlib.Path = PACKAGE) -> list[str]:
  """'<file> imports <module>' for every import of a forbidden module by a file under package/folder."""
  bad = []
  for path in sorted((package / folder).rglob('*.py')):
    for module in sorted(imported_modules(path)):
      if any(module == f or module.startswith(f + '.') for f in forbidden):
        bad.append(f'{path.relative_to(package.parent)} imports {module}')
  return bad


def test_data_and_metrics_import_only_downward():
  bad = [line for folder, forbidden in FORBIDDEN.items() for line in violations(folder, forbidden)]
  assert not bad, 'upward imports:\n  ' + '\n  '.join(bad)


def test_the_check_sees_an_upward_import(tmp_path):
  """The check is not vacuous: a data module importing the trainer (in a function) is reported."""
  (tmp_path / 'data').mkdir()
  (tmp_path / 'data' / 'x.py').write_text('def f():\n  from headgan_jax.train import loop\n  return loop\n')
  (tmp_path / 'data' / 'y.py').write_text('from headgan_jax import train\n')
  assert violations('data', FORBIDDEN['data'], tmp_path) == [f'{tmp_path.name}/data/x.py imports headgan_jax.train',
                                                             f'{tmp_path.name}/data/x.py imports headgan_jax.train.loop',
                                                             f'{tmp_path.name}/data/y.py imports headgan_jax.train']
