"""The train tests' config: tiny at 32x32 with narrower SPADE and discriminators, so a step compiles fast on CPU."""
import ml_collections

from configs import tiny


def small_train_config() -> ml_collections.ConfigDict:
  c = tiny.get_config()
  c.image_size = 32
  c.model.ngf = 8
  c.model.spade_hidden = 16
  c.model.flow_low_blocks = 1
  c.disc.ndf = 4
  c.disc.max_channels = 16
  c.disc.mouth_size = 16
  return c


def loop_test_config() -> ml_collections.ConfigDict:
  """The train-loop tests' config: every network, loss and data path of HeadGAN at 16x16 with one down level and
  one-scale, two-layer discriminators (the loop's behaviour does not depend on size; compiling it does), batch 4."""
  c = small_train_config()
  c.image_size = 16
  c.model.num_down = 1
  c.model.spade_hidden = 8
  c.disc.num_scales = 1
  c.disc.num_layers = 2
  c.disc.mouth_size = 8
  c.train.batch_size = 4
  c.train.num_steps = 8
  c.train.log_every = 2
  c.train.checkpoint_every = 3
  c.train.keep_checkpoints = 3
  c.train.image_every = 4
  c.train.image_examples = 2
  return c
