"""Probes of the networks by jax.eval_shape (nothing is computed): the convolutions G, D and D_m run
(`kernels.conv.record_conv_calls` applied to them), for the convolution gradient tests and `bench/conv_grad.py`.

Above the networks (it builds them), so that `headgan_jax/kernels` stays below nn and imports none of it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from headgan_jax.kernels.conv import ConvCall, record_conv_calls
from headgan_jax.nn import discriminator, generator


def networks_and_inputs(config, batch_size: int) -> dict[str, tuple[Any, tuple[jax.Array, ...]]]:
  """{'G', 'D', 'D_m'}: (the module built from `config`, example inputs of `batch_size` examples)."""
  d, d_m = discriminator.make_discriminators(config)
  s, m = config.image_size, config.disc.mouth_size
  return {
      'G': (generator.make_generator(config), generator.example_inputs(config, batch_size)),
      'D': (d, (jnp.zeros((batch_size, s, s, 6), jnp.float32),)),
      'D_m': (d_m, (jnp.zeros((batch_size, m, m, 3 + config.model.audio_dim), jnp.float32),)),
  }


def network_conv_calls(config, batch_size: int, nets: Sequence[str] = ('G', 'D', 'D_m')) -> dict[str, list[ConvCall]]:
  """The convolutions G, D and D_m (or those of `nets`) run on `batch_size` examples (shapes only: jax.eval_shape).

  The train step runs each network on 2 x the global batch (G on frames t-1 and t, D and D_m on fake and real):
  pass that number to see the train step's shapes.
  """
  modules = networks_and_inputs(config, batch_size)
  return {name: record_network(*modules[name])[0] for name in nets}


def record_network(module, inputs: Sequence[Any]) -> tuple[list[ConvCall], Any]:
  """(the convolutions `module.apply(variables, *inputs)` runs, the shapes of its variables), by jax.eval_shape.
  (Not from init alone: flax's SpectralNorm runs its layer twice at init.)"""
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))
  with record_conv_calls() as calls:
    jax.eval_shape(lambda v: module.apply(v, *inputs), variables)
  return list(calls), variables
