"""Did the model learn? The face L1 of a trained run against the untrained model and two trivial baselines.

  python -m headgan_jax.train.baselines --workdir RUN [--identities seen|unseen|all] [--grid docs/grid.png]

On the held-out frames of the run's data source (split 'test'; by default only the identities that the training
split has, i.e. self-reenactment on frames never trained on), with every frame's reference = the run's
config.data.test_reference ('middle': the middle of the held-out part's pose-sorted reference set, the authors' test
reference; `--reference first` takes the held-out record's first frame, `--reference clip_start` the first frame of
the whole clip, which for a training identity of the demo lies in the train split), four numbers, each the mean absolute difference to the ground truth y_t over the face pixels
(the 3D face x_t's mask of the L1 loss, eq. 6; images in [-1, 1]):

  trained           G's output y~_t with the checkpoint's parameters (latest, or --step)
  untrained         G's output with the initial parameters of the same run (config.seed)
  copy_reference    y_ref itself: a model that ignores the driving 3D face
  warped_reference  the trained flow network F's warped reference alone (what R adds is the rest)

A model that learned beats all three. `--grid` writes an image of held-out frames, one row per clip
(x_t | reference | warped reference | generated | target).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from headgan_jax import config_files
from headgan_jax import sharding as sharding_lib
from headgan_jax import workdir as workdir_lib
from headgan_jax.data import batch as batch_lib
from headgan_jax.errors import ConfigError
from headgan_jax.train import losses

BASELINES = ('trained', 'untrained', 'copy_reference', 'warped_reference')


@jax.jit
def _face_sums(images: jax.Array, batch: batch_lib.Batch, threshold: float) -> jax.Array:
  """(B, len(images) + 1): per example, the sums of |image - y| over face pixels and channels of each of `images`,
  and (last) the face-pixel count x 3."""
  mask = losses.face_mask(batch.x_t, threshold)
  sums = [jnp.sum(jnp.abs(im.astype(jnp.float32) - batch.y) * mask, axis=(1, 2, 3)) for im in images]
  return jnp.stack(sums + [3.0 * jnp.sum(mask, axis=(1, 2, 3))], axis=1)


def face_l1(trainer, trained: Any, untrained: Any, batches) -> dict[str, float]:
  """The four face L1 numbers of BASELINES over `batches` (global Batches; of a padded EvalBatches, the first
  `batches.num_frames` rows only), plus 'frames'. `trained`, `untrained`: G's variables."""
  threshold = float(trainer.config.loss.face_mask_threshold)
  rows = []
  for batch in batches:
    image, warped = trainer.apply_generator(trained, batch)
    image0, _ = trainer.apply_generator(untrained, batch)
    rows.append(np.asarray(jax.device_get(_face_sums((image, image0, batch.y_ref, warped), batch, threshold))))
  if not rows:
    raise ConfigError('no held-out batches to evaluate')
  rows = np.concatenate(rows)[:getattr(batches, 'num_frames', None)]
  total = rows.sum(axis=0)
  out = {name: float(total[i] / total[-1]) for i, name in enumerate(BASELINES)}
  out['frames'] = len(rows)
  return out


def held_out_batches(config: ml_collections.ConfigDict, mesh, identities: str = 'seen', split: str = 'test',
                     reference: str | None = None):
  """Every held-out frame of `split` of config.data.source for `identities` (the last batch padded); reference
  (None = config.data.test_reference): see `data.pipeline.test_reference`."""
  from headgan_jax.data import sources  # pylint: disable=import-outside-toplevel
  spec = ml_collections.ConfigDict(dict(num_batches=0, identities=identities, pad=True,
                                        reference=reference or str(config.data.test_reference)))
  return sources.make_eval_batches(config, mesh, split, spec)


def grid(trainer, variables: Any, batches, rows: int = 5) -> np.ndarray:
  """(H, W, 3) uint8: one held-out frame per clip (the middle one), x_t | reference | warped | generated | target."""
  from headgan_jax.train import loop  # pylint: disable=import-outside-toplevel
  items = getattr(batches, 'items', None)
  out = []
  for b, batch in enumerate(batches):
    image, warped = trainer.apply_generator(variables, batch)
    host = [np.asarray(jax.device_get(x)) for x in (batch.x_t, batch.y_ref, warped, image, batch.y)]
    for r in range(batch.batch_size):
      out.append((items[b * batch.batch_size + r][0] if items else b, [h[r] for h in host]))
  by_clip: dict[Any, list] = {}
  for clip, cols in out:
    by_clip.setdefault(clip, []).append(cols)
  chosen = [frames[len(frames) // 2] for frames in list(by_clip.values())[:rows]]
  to01 = [lambda x: x] + [lambda x: (x + 1) / 2] * 4
  columns = [np.stack([f(c[i]) for c in chosen]) for i, f in enumerate(to01)]
  return loop.image_grid(columns)


def write_png(path: str, image: np.ndarray, scale: int = 2) -> None:
  """`image` (H, W, 3) uint8 enlarged `scale` times (nearest), written atomically."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  big = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
  tmp = f'{path}.tmp-{os.getpid()}.png'
  Image.fromarray(big).save(tmp)
  os.replace(tmp, path)


def evaluate_workdir(workdir: str, step: int | None = None, identities: str = 'seen',
                     grid_path: str | None = None, reference: str | None = None) -> dict[str, Any]:
  """The numbers of `face_l1` for the checkpoint `step` (default the latest) of the run in `workdir`."""
  from headgan_jax.train import loop  # pylint: disable=import-outside-toplevel
  location = workdir_lib.find(workdir, step, step_flag='--step')
  config = config_files.load(location.workdir)  # Its config.json.
  config.loss.use_vgg = False  # Generating needs no VGG (and no weight file).
  trainer = loop.Trainer.create(config)  # For the untrained G of the same run (its init) and G on the mesh.
  trained = workdir_lib.restore_generator(location, config, sharding_lib.replicated(trainer.mesh))
  batches = held_out_batches(config, trainer.mesh, identities, reference=reference)
  result = face_l1(trainer, trained, loop.generator_variables(trainer.init_state()), batches)
  result.update(step=location.step, identities=identities, reference=reference or str(config.data.test_reference),
                source=config.data.source)
  if grid_path:
    write_png(grid_path, grid(trainer, trained, batches))
  return result


if __name__ == '__main__':  # The command moved (headgan_jax/commands/baselines.py); this spelling still runs it.
  import runpy
  runpy.run_module('headgan_jax.commands.baselines', run_name='__main__', alter_sys=True)
