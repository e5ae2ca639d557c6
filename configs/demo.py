"""The demo: HeadGAN trained on the demo set (39 real clips of ../shared/fixtures) on 2 CPU cores in minutes.

  python -m headgan_jax.data.build demo --image_size 64 --data_dir DATA        # once (~1.5 min on 2 cores)
  python train.py --config configs/demo.py --workdir RUN --config.data.data_dir=DATA
  python -m headgan_jax.train.baselines --workdir RUN                           # did it learn? (4 numbers)

Every network, loss and data path of the paper's config, smaller, sized by measurement (README, "Demo training")
so that the README's main job (build, train, evaluate, reenact; setup included) stays within 20 minutes on a fresh
2-core machine. Measured on a fresh clone (2026-12-03, 250 steps then): the main job's train stage took 201 s, i.e.
~1.5 min of start-up (init + compiling both D-update variants of the step + the pipeline's assembly) and ~0.45 s a
step; 750 steps -> ~7 min of training.
- 64x64 images (the demo set is built at 64): a step costs ~1/16 of 256x256.
- Widths / 4: G ngf 8 (8 -> 32 -> 128 channels; SPADE hidden 64), D and D_m ndf 16 (at most 128 channels). The
  paper's widths would be 50 M parameters of G for 1700 training frames.
- No VGG19 perceptual terms (loss.use_vgg = False): torchvision's VGG19 weights cannot be downloaded here, and a
  randomly initialised VGG is no perceptual loss. With a weight file, `--config.loss.use_vgg=True
  --config.loss.vgg_weights=/path/vgg19-dcbb9e9d.pth` turns them on (the step then costs more).
- Batch 4 and 750 steps (3000 examples, ~1.8 passes over the 1700 training frames: 34 people x one 50-frame
  sequence, the first 63 frames of each clip cut 50 / 13; building.DEMO_HELD_OUT's 4 people are test only and one
  clip is rejected by the tracker's crop rule); the paper's schedule shape: 6 "epochs" (of 75 steps) at the full
  rate, then 4 with the rate decaying linearly to 0. 750, not the 250 of before 2026-12-03 (issue 20): the
  5,000-step run of docs/learning.md gains most of its held-out face L1 in its first 1,000-2,000 steps, and the
  grid of R's pixel shuffles is at its worst near 250 steps (docs/grid_artefacts.md); 750 is what the main job's
  20-minute budget affords.
- The mouth window is the paper's share of the frame (64 of 256: 16 px here), resized to 64x64 for D_m.
"""
from __future__ import annotations

import ml_collections

from configs import paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """paper.py's config (and its ablations: configs/demo.py:ablation=no_flow) at the demo's size."""
  c = paper.get_config(arg)
  c.image_size = 64
  c.model.ngf = 8
  c.model.blocks.spade_hidden = 64
  c.disc.ndf = 16
  c.disc.max_channels = 128
  c.disc.mouth_size = 64  # The paper's: a 64 px window of 256 (16 px here), resized to 64x64 for D_m.
  c.loss.use_vgg = False

  t = c.train
  t.batch_size = 4
  t.lr_schedule = 'linear'
  t.steps_per_epoch = 75  # An epoch of the schedule is 75 steps: 6 at the full rate, then 4 decaying to 0.
  t.epochs = 6
  t.decay_epochs = 4
  t.num_steps = 0  # = (epochs + decay_epochs) * steps_per_epoch.
  t.log_every = 20
  t.checkpoint_every = 150
  t.image_every = 150
  t.image_examples = 4

  c.data.source = 'headgan_demo'
  c.data.num_workers = 0  # Examples read in the training process: the demo runs on small CPU machines.
  c.data.data_dir = ''  # TFDS's default unless given: --config.data.data_dir=DATA (where the build wrote it).
  return c
