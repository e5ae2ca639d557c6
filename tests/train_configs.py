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
  # One compiled step (D update by lax.cond) instead of two: half the compile time of every test that trains.
  # test_train_step.py runs the default 'two_steps' too, against this one.
  c.train.d_update = 'traced_cond'
  return c
