"""The package's layers, read from the source with `ast` (nothing is imported): headgan_jax/kernels imports nothing
above the bottom layer, and the modules of headgan_jax/nn import each other without a cycle (issue 23). Imports
inside functions count too: that is how nn/ had its cycle (conv.py built the networks that import it)."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'headgan_jax'
# What kernels/ may import besides itself: the README's bottom layer.
BOTTOM = ('headgan_jax.errors', 'headgan_jax.files', 'headgan_jax.host_malloc', 'headgan_jax.compilation_cache')


def module_name(path: pathlib.Path) -> str:
  """'headgan_jax.nn.blocks' for headgan_jax/nn/blocks.py, 'headgan_jax.nn' for headgan_jax/nn/__init__.py."""
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def is_module(name: str) -> bool:
  path = PACKAGE.parent.joinpath(*name.split('.'))
  return path.with_suffix('.py').is_file() or (path / '__init__.py').is_file()


def imports(path: pathlib.Path) -> set[str]:
  """The headgan_jax modules `path` imports anywhere in it (`from a import b` is a.b when b is a module, else a)."""
  package = module_name(path) if path.name == '__init__.py' else module_name(path).rpartition('.')[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:  # Relative: from the package, up level - 1 more.
        anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(anchor + ([base] if base else []))
      for alias in node.names:
        found.add(f'{base}.{alias.name}' if is_module(f'{base}.{alias.name}') else base)
  return {name for name in found if name == 'headgan_jax' or name.startswith('headgan_jax.')}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` (its nodes in order, the first repeated at the end), or None."""
  state: dict[str, str] = {}  # 'open' while on the current path, 'done' after.

  def visit(node: str, path: list[str]) -> list[str] | None:
    state[node] = 'open'
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
      if nxt not in state:
        cycle = visit(nxt, path + [node])
        if cycle:
          return cycle
    state[node] = 'done'
    return None

  for start in sorted(graph):
    if start not in state:
      cycle = visit(start, [])
      if cycle:
        return cycle
  return None


def test_kernels_import_nothing_above_the_bottom_layer():
  files = sorted((PACKAGE / 'kernels').rglob('*.py'))
  assert {p.name for p in files} >= {'__init__.py', 'conv.py', 'onednn.py'}, files
  for path in files:
    above = {m for m in imports(path) if not m.startswith('headgan_jax.kernels') and m not in BOTTOM}
    assert not above, f'{path.relative_to(PACKAGE.parent)} imports {sorted(above)}'
  # The layers are read right: nn's blocks do use the kernels.
  assert 'headgan_jax.kernels.conv' in imports(PACKAGE / 'nn' / 'blocks.py')


def test_nn_modules_import_each_other_without_a_cycle():
  nn_modules = {module_name(p): p for p in sorted((PACKAGE / 'nn').glob('*.py'))}
  graph = {name: imports(path) & nn_modules.keys() for name, path in nn_modules.items()}
  assert 'headgan_jax.nn.blocks' in graph['headgan_jax.nn.generator']  # The graph is not empty by mistake.
  cycle = find_cycle(graph)
  assert cycle is None, 'import cycle in headgan_jax/nn: ' + ' -> '.join(cycle)


def test_find_cycle():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'a'}}) == ['a', 'a']


REPO = PACKAGE.parent
COMMANDS = PACKAGE / 'commands'


def python_files(root: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in root.rglob('*.py') if not any(part.startswith('.') for part in p.relative_to(REPO).parts))


def test_nothing_below_the_commands_imports_them():
  """headgan_jax/commands is the top layer: a library module whose command moved there forwards to it by `runpy`
  (a string, no import), never by importing it."""
  files = [p for p in python_files(PACKAGE) if COMMANDS not in p.parents]
  assert PACKAGE / 'tracking' / 'track.py' in files and len(files) > 50
  for path in files:
    above = {m for m in imports(path) if m == 'headgan_jax.commands' or m.startswith('headgan_jax.commands.')}
    assert not above, f'{path.relative_to(REPO)} imports {sorted(above)}'
  # The check reads imports right: the commands import the library.
  assert 'headgan_jax.tracking.track' in imports(COMMANDS / 'track.py')


def test_one_flags_library_argparse_only_in_the_standalone_scripts():
  """The commands parse their flags with absl.flags (headgan_jax/commands/parsing.py); argparse is left to the
  standalone scripts of bench/ and scripts/."""
  def imports_argparse(path: pathlib.Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
      if any(n == 'argparse' or n.startswith('argparse.') for n in names):
        return True
    return False

  standalone = (REPO / 'bench', REPO / 'scripts')
  files = [p for p in python_files(REPO) if not any(root in p.parents for root in standalone)]
  assert REPO / 'train.py' in files and COMMANDS / 'train.py' in files
  assert not [str(p.relative_to(REPO)) for p in files if imports_argparse(p)]
  assert imports_argparse(REPO / 'bench' / 'track.py')  # The check finds argparse where it is.
