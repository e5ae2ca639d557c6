"""The demo: HeadGAN trained on the demo set (the six real clips of ../shared/fixtures) on 2 CPU cores in minutes.

  python -m headgan_jax.data.build demo --image_size 64 --data_dir DATA        # once (about 2 min of CPU)
  python train.py --config configs/demo.py --workdir RUN --config.data.data_dir=DATA
  python -m headgan_jax.train.baselines --workdir RUN                           # did it learn? (4 numbers)

Every network, loss and data path of the paper's config, smaller: the sizes below were chosen by measurement so that
training, compile included, fits the README main job's budget on a 2-core machine (see README, "Demo training").
- 64x64 images (the demo set is built at 64): a step costs ~1/16 of 256x256.
- Widths / 4 for G (ngf 8: 8 -> 32 -> 128 channels; SPADE hidden 64) and / 4 for D and D_m (ndf 16, at most 128):
  the paper's widths at 64 px would still be ~50 M parameters for 587 training frames.
- No VGG19 perceptual terms (loss.use_vgg = False): torchvision's VGG19 weights cannot be downloaded here, and a
  randomly initialised VGG is no perceptual loss. With a weight file, `--config.loss.use_vgg=True
  --config.loss.vgg_weights=/path/vgg19-dcbb9e9d.pth` turns them on (the step then costs about twice as much).
- Batch 4, a fixed number of steps, and the learning rate decayed linearly to 0 over the second half (the paper's
  6 + 4 epochs, as a fraction of the run: t.epochs / t.decay_epochs below, with steps_per_epoch fixing the epoch).
"""
from __future__ import annotations

import ml_collections

from configs import paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """paper.py's config (and its ablations: configs/demo.py:ablation=no_flow) at the demo's size."""
  c = paper.get_config(arg)
  c.image_size = 64
  c.model.ngf = 8
  c.model.spade_hidden = 64
  c.disc.ndf = 16
  c.disc.max_channels = 128
  c.disc.mouth_size = 64  # The paper's: a 64 px window of 256 (16 px here), resized to 64x64 for D_m.
  c.loss.use_vgg = False

  t = c.train
  t.batch_size = 4
  t.lr_schedule = 'linear'
  t.steps_per_epoch = 60  # An epoch of the schedule is 60 steps: 6 at the full rate, then 4 decaying to 0.
  t.epochs = 6
  t.decay_epochs = 4
  t.num_steps = 0  # = (epochs + decay_epochs) * steps_per_epoch.
  t.log_every = 20
  t.checkpoint_every = 250
  t.image_every = 250
  t.image_examples = 4

  c.data.source = 'headgan_demo'
  c.data.data_dir = ''  # TFDS's default unless given: --config.data.data_dir=DATA (where the build wrote it).
  return c
