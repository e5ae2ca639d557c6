"""G's inference: its forward pass, jitted, for everything that generates frames with a trained G.

evaluate.py, reenact.py and the training loop (image grids, in-loop evaluations) all generate with
`make_generate_fn(generator, mesh)`: a jitted (G's variables, inputs) -> (frames y~_t, warped references y-bar_t^ref).
`inputs` is any pytree with the fields of `Inputs` (the training `data.batch.Batch` has them):

  x_drive  (B, H, W, 3(k+1))  x_{t-k:t}, oldest first
  y_ref    (B, H, W, 3) or (H, W, 3): one reference for the whole batch, broadcast on the device
  x_ref    like y_ref
  audio    (B, A)             h_t^(a)

With a mesh, G's variables are replicated over it and the inputs (all batched) and outputs split along 'data'
(headgan_jax/sharding.py); without one, jax places them on its default device.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from headgan_jax.sharding import batch_sharding, replicated

GenerateFn = Callable[[Any, Any], tuple[jax.Array, jax.Array]]


class Inputs(NamedTuple):
  """G's inputs for a batch of frames (see the module docstring for the shapes)."""
  x_drive: Any
  y_ref: Any
  x_ref: Any
  audio: Any


def generate(generator: nn.Module, variables: Any, inputs: Any) -> tuple[jax.Array, jax.Array]:
  """(frames, warped references) of G (batch statistics frozen) for `inputs`; not jitted (`make_generate_fn` is)."""
  b = inputs.x_drive.shape[0]
  ref = lambda a: jnp.broadcast_to(a, (b,) + a.shape) if a.ndim == inputs.x_drive.ndim - 1 else a  # noqa: E731
  out = generator.apply(variables, inputs.x_drive, ref(inputs.y_ref), ref(inputs.x_ref), inputs.audio)
  return out.image, out.warped_ref


def make_generate_fn(generator: nn.Module, mesh: Mesh | None = None) -> GenerateFn:
  """jitted (G's variables, inputs) -> (frames, warped references); on `mesh`: variables replicated, inputs and
  outputs sharded along its batch axis."""
  fn = functools.partial(generate, generator)
  if mesh is None:
    return jax.jit(fn)
  sharded = batch_sharding(mesh)
  return jax.jit(fn, in_shardings=(replicated(mesh), sharded), out_shardings=(sharded, sharded))
