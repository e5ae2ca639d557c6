"""oneDNN convolutions on XLA:CPU through `jax.ffi` (issue 12): forward pass, input gradient and weight gradient.

XLA:CPU runs a convolution's weight gradient 2-6x slower than its forward pass (its GEMM is also 1.5x slower than
the one PyTorch uses, `bench/gemm.py`); oneDNN, the library behind PyTorch's CPU convolutions, has direct kernels
for all three passes. `csrc/onednn_conv.cc` wraps them as three XLA FFI handlers (NHWC input / output, HWIO kernel,
float32); `conv` is a `jax.custom_vjp` made of them, the same maths as `lax.conv_general_dilated` (sums in float32,
in another order: results agree to ~1e-5 relative, tests/test_onednn.py).

The handlers are compiled once per machine by `python -m headgan_jax.kernels.onednn build` (scripts/setup.sh; g++ and
Debian's libdnnl-dev) into $HEADGAN_JAX_ONEDNN_DIR (default ~/.cache/headgan_jax/onednn), under a name that hashes
the source and the jaxlib version, so a changed source or jaxlib simply is not found until built again. `available()`
loads and registers them (once per process); conv.py's 'auto' uses them on the CPU backend when they are there.

oneDNN runs on OpenMP threads. Their default is to spin for a while after each call, which here competes with XLA's
own threads (and PyTorch's in the benchmarks): weight gradient of 3x3 512 -> 512 at 64x64 400 ms spinning vs 280 ms
passive. `available()` therefore sets OMP_WAIT_POLICY=PASSIVE unless it is set already.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import shlex
import subprocess
import tempfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax import errors

SOURCE = pathlib.Path(__file__).with_name('csrc') / 'onednn_conv.cc'
DIR_ENV = 'HEADGAN_JAX_ONEDNN_DIR'
DEFAULT_DIR = pathlib.Path('~/.cache/headgan_jax/onednn')
TARGETS = {'forward': 'HeadganOnednnConvForward', 'input_grad': 'HeadganOnednnConvInputGrad',
           'weight_grad': 'HeadganOnednnConvWeightGrad'}
log = logging.getLogger(__name__)


class BuildError(errors.HeadGANError):
  """The oneDNN handlers could not be compiled (no compiler, no oneDNN headers / library)."""


def library_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get(DIR_ENV) or DEFAULT_DIR).expanduser()


@functools.cache
def _digest() -> str:
  import jaxlib  # pylint: disable=import-outside-toplevel
  return hashlib.sha256(SOURCE.read_bytes() + jaxlib.__version__.encode()).hexdigest()[:16]


def library_path() -> pathlib.Path:
  """Where the handlers built from this source for this jaxlib live."""
  return library_dir() / f'onednn_conv-{_digest()}.so'


def _target(name: str) -> str:
  """The FFI target name of handler `name`: it carries the source's hash, so a program compiled against other
  handlers (e.g. in the persistent compilation cache) is a different program, never a call with stale attributes."""
  return f'headgan_onednn_conv_{_digest()}_{name}'


def compile_command(output: os.PathLike) -> list[str]:
  """The compiler command line (the compiler from $CXX, default g++)."""
  cxx = shlex.split(os.environ.get('CXX') or 'g++')
  return [*cxx, '-O2', '-std=c++17', '-shared', '-fPIC', '-w', f'-I{jax.ffi.include_dir()}', os.fspath(SOURCE),
          '-o', os.fspath(output), '-ldnnl']


def build(force: bool = False) -> pathlib.Path:
  """Compiles the handlers (unless built already); the file appears whole or not at all (temp file, rename)."""
  path = library_path()
  if path.exists() and not force:
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.' + path.stem, suffix='.so.tmp')
  os.close(fd)
  command = compile_command(tmp)
  try:
    try:
      result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
      raise BuildError(f'cannot compile {SOURCE}: compiler {command[0]!r} not found (set $CXX or install g++)') from e
    if result.returncode != 0:
      hint = ('; the oneDNN headers / library are missing: install Debian\'s libdnnl-dev (scripts/setup.sh does)'
              if 'dnnl' in result.stderr else '')
      raise BuildError(f'compiling {SOURCE} failed (exit {result.returncode}){hint}:\n{shlex.join(command)}\n'
                       f'{result.stderr[-2000:]}')
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


@functools.cache
def _load() -> str | None:
  """Loads and registers the handlers; None when done, else why not (once per process)."""
  if jax.default_backend() != 'cpu':
    return f'the default backend is {jax.default_backend()}, not cpu'
  path = library_path()
  if not path.exists():
    return f'{path} is not built (run `python -m headgan_jax.kernels.onednn build`, which scripts/setup.sh does)'
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # Read by libgomp when the library below loads it.
  try:
    lib = ctypes.cdll.LoadLibrary(os.fspath(path))
  except OSError as e:
    return f'cannot load {path}: {e}'
  for name, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(_target(name), jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  return None


def unavailable_reason() -> str | None:
  """None when the oneDNN convolutions can be used in this process, else why not."""
  return _load()


def available() -> bool:
  return _load() is None


def supports(x: jax.Array, w: jax.Array, preferred_element_type=None) -> bool:
  """Whether `conv` takes these operands: float32 input and kernel with a float32 (or default) result."""
  return (x.dtype == jnp.float32 and w.dtype == jnp.float32
          and preferred_element_type in (None, jnp.float32, np.float32))


def _attrs(strides: Sequence[int], padding: Sequence[tuple[int, int]]) -> dict[str, np.int64]:
  (pt, pb), (pl, pr) = padding
  return {'stride_h': np.int64(strides[0]), 'stride_w': np.int64(strides[1]), 'pad_top': np.int64(pt),
          'pad_bottom': np.int64(pb), 'pad_left': np.int64(pl), 'pad_right': np.int64(pr)}


def _out_shape(x_shape, w_shape, strides, padding) -> tuple[int, int, int, int]:
  (pt, pb), (pl, pr) = padding
  return (x_shape[0], (x_shape[1] + pt + pb - w_shape[0]) // strides[0] + 1,
          (x_shape[2] + pl + pr - w_shape[1]) // strides[1] + 1, w_shape[3])


def _call(name: str, shape, *operands, strides, padding) -> jax.Array:
  reason = _load()
  if reason is not None:
    raise errors.ConfigError(f'the oneDNN convolution is not available: {reason}')
  return jax.ffi.ffi_call(_target(name), jax.ShapeDtypeStruct(tuple(shape), jnp.float32),
                          vmap_method='sequential')(*operands, **_attrs(strides, padding))


def forward(x: jax.Array, w: jax.Array, strides: Sequence[int], padding: Sequence[tuple[int, int]]) -> jax.Array:
  """y = x * w: x (N, H, W, C_in), w (K_h, K_w, C_in, C_out), padding ((top, bottom), (left, right)) >= 0."""
  return _call('forward', _out_shape(x.shape, w.shape, strides, padding), x, w, strides=strides, padding=padding)


def input_grad(w: jax.Array, g: jax.Array, x_shape: Sequence[int], strides: Sequence[int],
               padding: Sequence[tuple[int, int]]) -> jax.Array:
  """dL/dx (shape x_shape) from the kernel and the output gradient g."""
  return _call('input_grad', x_shape, w, g, strides=strides, padding=padding)


def weight_grad(x: jax.Array, g: jax.Array, w_shape: Sequence[int], strides: Sequence[int],
                padding: Sequence[tuple[int, int]]) -> jax.Array:
  """dL/dW (shape w_shape) from the input and the output gradient g."""
  return _call('weight_grad', w_shape, x, g, strides=strides, padding=padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """A float32 NHWC / HWIO convolution, all three passes by oneDNN."""
  return forward(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding):
  return forward(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, residuals, g):
  x, w = residuals
  return input_grad(w, g, x.shape, strides, padding), weight_grad(x, g, w.shape, strides, padding)


conv.defvjp(_conv_fwd, _conv_bwd)


if __name__ == '__main__':  # The command moved (headgan_jax/commands/kernels.py); this spelling still runs it.
  import runpy
  runpy.run_module('headgan_jax.commands.kernels', run_name='__main__', alter_sys=True)
