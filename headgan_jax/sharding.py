"""The device mesh and the two shardings of the project (bottom layer: the data pipeline, the train step and
inference all place arrays with these).

Data parallelism only: a 1-D `jax.sharding.Mesh` over the devices with axis DATA_AXIS. Batches are split along their
first axis (`batch_sharding`); parameters and train state are copied on every device (`replicated`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all devices of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a host (or single-device) batch on the mesh, split along 'data'."""
  return jax.device_put(batch, batch_sharding(mesh))
