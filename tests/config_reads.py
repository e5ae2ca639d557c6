"""Which leaves of a config the code reads: a recorder for tests/test_config_fields.py.

    recorder = ReadRecorder()
    recorder.track(config)               # this object's reads count, with '' as its path (a root)
    with recorder.recording():           # ConfigDict's methods are patched only inside this block
      ... build, train, evaluate ...
    recorder.reads                       # {'model.ngf', 'train.lr', 'evals.image.every', ...}
    recorder.where['model.ngf']          # {'headgan_jax/nn/generator.py:152 (make_generator)', ...}

What counts as a read: `ConfigDict.__getitem__` returning a value that is not a ConfigDict, on a tracked ConfigDict.
Attribute access (`config.model.ngf`: __getattr__ -> __getitem__), `config['model']['ngf']`, dotted keys
(`config['model.ngf']`), `.get('ngf', default)` and iteration that hands out values (`items()`, `values()`) all go
through __getitem__. A ConfigDict value (a section such as `config.model`, an entry such as `config.evals.fid`) is
not a read; it becomes tracked under its path, so that reads below it count with the full path.

What does NOT count:
- Serialising a config. A field that is only written into config.json, TensorBoard's hparams or a printed config is
  not used, so `to_dict`, `to_json`, `to_json_best_effort`, `to_yaml`, `repr` / `str`, equality and
  FrozenConfigDict's hash read nothing while they run (they still run as usual). Code that picks fields one by one
  into a key (the data pipeline's `assemble_settings`) is ordinary code to this recorder; the test marks such
  functions with `paused` (see below).
- Validity checks. A read made directly by a function named `check` / `validate` or `check_*` / `validate_*`
  (optionally with a leading underscore: `check_data_config`, `validate_model_config`; CHECK_FUNCTION) is recorded
  in `checked`, not in `reads`: a
  field that only a check looks at changes nothing that is computed (the "landmarks" ablation was such a field).
  Reads by the functions such a check calls count as usual.
- Reads while `paused()` is active in that thread (the test's own look-ups, cache keys).

Copies keep their paths: `copy_and_resolve_references()`, `ConfigDict(config)` (a shallow copy) and
`FrozenConfigDict(config)` (a deep one; also its `as_configdict()`) read nothing while copying, and the copy with every
section below it is tracked under the original's paths, so reads on the copy (evaluate.FrameTracker's Tracker config,
the synthetic source's frozen config) count as reads of the original's leaves.

Configs rebuilt from plain data (`ConfigDict(json.loads(...))`: a run's config.json read by evaluate.py, the
pipeline's `ConfigDict(json.loads(assemble_settings(config)))`) are new objects. One whose every leaf path is a leaf
path of a tracked root is taken for a (partial) copy of that config and tracked as a root, so reads on it count
under the same paths; any other stays untracked (an eval spec built in code, say). `copy.deepcopy` and pickling are
not followed (the project uses neither on configs).

Reads in any thread count (grain's threads, if they ever read the config); the suppression while serialising or
copying is per thread.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from ml_collections.config_dict import config_dict as cd_lib

ConfigDict = cd_lib.ConfigDict
FrozenConfigDict = cd_lib.FrozenConfigDict

# Functions whose own reads are validity checks, not uses (see the module docstring).
CHECK_FUNCTION = re.compile(r'_?(check|validate)(_|$)')


def _resolve(value: Any) -> Any:
  return value.get() if isinstance(value, cd_lib.FieldReference) else value


def leaves(config: ConfigDict | Mapping, prefix: str = '') -> dict[str, Any]:
  """{'model.ngf': 32, ...}: every leaf (a value that is not a ConfigDict or dict) of `config`, read without being
  recorded."""
  fields = config._fields if isinstance(config, ConfigDict) else config  # pylint: disable=protected-access
  out = {}
  for key in sorted(fields, key=str):
    value = _resolve(fields[key])
    if isinstance(value, (ConfigDict, Mapping)):
      out.update(leaves(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _caller() -> tuple[str, str]:
  """('file:line (function)', function name) of the code that made the look-up (outside ml_collections and this file)."""
  frame = sys._getframe(2)  # pylint: disable=protected-access
  while frame is not None and (frame.f_code.co_filename == __file__ or 'ml_collections' in frame.f_code.co_filename):
    frame = frame.f_back
  if frame is None:
    return '?', ''
  name = frame.f_code.co_name
  return f'{os.path.relpath(frame.f_code.co_filename)}:{frame.f_lineno} ({name})', name


# The methods that serialise or compare: nothing read while they run counts.
_SERIALISING = {
    ConfigDict: ('to_dict', 'to_json', 'to_json_best_effort', 'to_yaml', '_json_dumps_wrapper', '__repr__', '__str__',
                 '__eq__', '__ne__', 'eq_as_configdict', '__getstate__', '__reduce_ex__'),
    FrozenConfigDict: ('__hash__', '__eq__'),
}


class ReadRecorder:
  """Records the dotted paths of the config leaves read (see the module docstring)."""

  def __init__(self):
    self.reads: set[str] = set()
    self.checked: set[str] = set()  # Leaves read directly by validity checks (whether or not also in `reads`).
    self.where: dict[str, set[str]] = {}  # Leaf -> {'file:line (function)'} of every read and check.
    self._paths: dict[int, tuple[Any, str]] = {}  # id -> (the ConfigDict, kept alive so ids stay unique; its path).
    self._root_leaves: set[str] = set()  # Leaf paths of the tracked roots (for configs rebuilt from plain data).
    self._local = threading.local()
    self._lock = threading.Lock()
    self._active = False

  # --- Tracking ------------------------------------------------------------------------------------------------

  def path_of(self, config: Any) -> str | None:
    entry = self._paths.get(id(config))
    return entry[1] if entry is not None and entry[0] is config else None

  def track(self, config: ConfigDict) -> ConfigDict:
    """`config` (returned) and every section below it tracked as a root (paths 'model.ngf', ...)."""
    self._mirror(config, config, '')
    self._root_leaves |= set(leaves(config))
    return config

  def _register(self, config: ConfigDict, path: str) -> None:
    with self._lock:
      if self.path_of(config) is None:
        self._paths[id(config)] = (config, path)

  def _mirror(self, src: ConfigDict, dst: ConfigDict, path: str) -> None:
    """dst (a copy of src, or src itself) and its sections tracked under src's paths."""
    self._register(dst, path)
    if isinstance(dst, FrozenConfigDict) and isinstance(getattr(dst, '_configdict', None), ConfigDict):
      self._mirror(src, dst._configdict, path)  # pylint: disable=protected-access
    for key, value in list(src._fields.items()):  # pylint: disable=protected-access
      s = _resolve(value)
      d = _resolve(dst._fields.get(key))  # pylint: disable=protected-access
      if isinstance(s, ConfigDict) and isinstance(d, ConfigDict):
        self._mirror(s, d, f'{path}{key}.')

  def _adopt(self, config: ConfigDict) -> None:
    """A ConfigDict built from plain data: tracked as a root when its leaf paths are a tracked root's."""
    found = set(leaves(config))
    if found and found <= self._root_leaves:
      self._mirror(config, config, '')

  # --- Suppression (per thread) --------------------------------------------------------------------------------

  def _suppressed(self) -> bool:
    return getattr(self._local, 'depth', 0) > 0

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """Reads in this block (in this thread) do not count: the test's own look-ups, serialising code."""
    self._local.depth = getattr(self._local, 'depth', 0) + 1
    try:
      yield
    finally:
      self._local.depth -= 1

  def pausing(self, fn):
    """fn, with reads during its calls not counting (for a function that serialises fields into a key)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      with self.paused():
        return fn(*args, **kwargs)
    return wrapper

  # --- The patches ---------------------------------------------------------------------------------------------

  def _on_getitem(self, config: ConfigDict, key: Any, value: Any) -> None:
    if not self._active or self._suppressed():
      return
    if isinstance(key, str) and '.' in key and not config.allow_dotted_keys:
      return  # ConfigDict resolves 'a.b' as self['a']['b']: those inner look-ups recorded it.
    prefix = self.path_of(config)
    if prefix is None:
      return
    path = f'{prefix}{key}'
    if isinstance(value, ConfigDict):
      self._register(value, f'{path}.')
      return
    site, function = _caller()
    with self._lock:
      (self.checked if CHECK_FUNCTION.match(function) else self.reads).add(path)
      self.where.setdefault(path, set()).add(site)

  @contextlib.contextmanager
  def recording(self) -> Iterator['ReadRecorder']:
    """Patches ConfigDict / FrozenConfigDict for the block (see the module docstring); restores them after."""
    recorder = self
    saved: list[tuple[type, str, Any]] = []

    def patch(cls: type, name: str, make) -> None:
      original = cls.__dict__[name]
      saved.append((cls, name, original))
      setattr(cls, name, make(original))

    def getitem(original):
      @functools.wraps(original)
      def wrapper(self, key):
        value = original(self, key)
        recorder._on_getitem(self, key, value)  # pylint: disable=protected-access
        return value
      return wrapper

    def quiet(original):
      @functools.wraps(original)
      def wrapper(self, *args, **kwargs):
        with recorder.paused():
          return original(self, *args, **kwargs)
      return wrapper

    def copying_init(original):  # ConfigDict(x) / FrozenConfigDict(x).
      @functools.wraps(original)
      def wrapper(self, initial_dictionary=None, *args, **kwargs):
        local = recorder._local  # pylint: disable=protected-access
        outermost = not getattr(local, 'constructing', 0)
        local.constructing = getattr(local, 'constructing', 0) + 1
        try:
          with recorder.paused():
            original(self, initial_dictionary, *args, **kwargs)
        finally:
          local.constructing -= 1
        source = recorder.path_of(initial_dictionary) if isinstance(initial_dictionary, ConfigDict) else None
        if source is not None:  # A copy of a tracked config: the same paths.
          recorder._mirror(initial_dictionary, self, source)  # pylint: disable=protected-access
        elif outermost and initial_dictionary is not None and not isinstance(initial_dictionary, ConfigDict):
          recorder._adopt(self)  # pylint: disable=protected-access
      return wrapper

    def copying_method(original):  # config.copy_and_resolve_references(): the copy mirrors the original.
      @functools.wraps(original)
      def wrapper(self, *args, **kwargs):
        with recorder.paused():
          copy = original(self, *args, **kwargs)
        if recorder.path_of(self) is not None and isinstance(copy, ConfigDict):
          recorder._mirror(self, copy, recorder.path_of(self))  # pylint: disable=protected-access
        return copy
      return wrapper

    if self._active:
      raise RuntimeError('this recorder is recording already')
    try:
      patch(ConfigDict, '__getitem__', getitem)
      for cls, names in _SERIALISING.items():
        for name in names:
          if name in cls.__dict__:
            patch(cls, name, quiet)
      patch(ConfigDict, '__init__', copying_init)
      patch(FrozenConfigDict, '__init__', copying_init)
      patch(ConfigDict, 'copy_and_resolve_references', copying_method)
      self._active = True
      yield self
    finally:
      self._active = False
      for cls, name, original in reversed(saved):
        setattr(cls, name, original)
      self._paths.clear()  # Drops the strong references; the records stay.
