"""headgan_jax/tracking sits below headgan_jax/data: it never imports data, train, metrics or the commands above
them (read from the source with `ast`, function-level imports included; nothing is imported)."""
import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
TRACKING = REPO / 'headgan_jax' / 'tracking'
ABOVE = ('headgan_jax.data', 'headgan_jax.train', 'headgan_jax.metrics', 'headgan_jax.reenact',
         'headgan_jax.main_job')


def imported_modules(source: str, package: str) -> set[str]:
  """Every module an `import` statement anywhere in `source` names, absolute; `from P import N` counts P.N too (N may
  be a module). `package`: the dotted package of the file, to resolve relative imports."""
  found = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parent = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(parent + ([base] if base else []))
      found.add(base)
      found.update(f'{base}.{a.name}' for a in node.names)
  return found


def forbidden(modules: set[str]) -> list[str]:
  return sorted(m for m in modules if any(m == a or m.startswith(a + '.') for a in ABOVE))


def test_checker_sees_upward_imports():
  bad = ('import headgan_jax.data.clips\n'
         'def f():\n  from headgan_jax import train\n'
         'from ..metrics import fid\n'
         'from headgan_jax.face3d import fitting\n')
  assert forbidden(imported_modules(bad, 'headgan_jax.tracking')) == [
      'headgan_jax.data.clips', 'headgan_jax.metrics', 'headgan_jax.metrics.fid', 'headgan_jax.train']


def test_tracking_imports_nothing_above_it():
  files = sorted(TRACKING.glob('*.py'))
  assert {f.name for f in files} >= {'__init__.py', 'video.py', 'facemesh.py', 'face_model.py', 'track.py'}
  bad = {f.name: forbidden(imported_modules(f.read_text(), 'headgan_jax.tracking')) for f in files}
  assert not any(bad.values()), {k: v for k, v in bad.items() if v}
