"""The train tests' config: tiny at 32x32 with narrower SPADE and discriminators, so a step compiles fast on CPU."""
import jax
import ml_collections

from configs import tiny


def small_train_config() -> ml_collections.ConfigDict:
  c = tiny.get_config()
  c.image_size = 32
  c.model.ngf = 8
  c.model.blocks.spade_hidden = 16
  c.model.flow_low_blocks = 1
  c.disc.ndf = 4
  c.disc.max_channels = 16
  c.disc.mouth_size = 16
  # One compiled step (D update by lax.cond) instead of two: half the compile time of every test that trains.
  # test_train_step.py runs the default 'two_steps' too, against this one.
  c.train.d_update = 'traced_cond'
  return c


def loop_test_config() -> ml_collections.ConfigDict:
  """The train-loop tests' config: every network, loss and data path of HeadGAN at 16x16 with one down level and
  one-scale, two-layer discriminators (the loop's behaviour does not depend on size; compiling it does), batch 4.

  Two choices let runs whose gradient sums are ordered differently (1 vs 2 processes) be compared step after step:
  Adam's epsilon 1e-3 (paper 1e-8; see test_train_step.test_sharded_step_on_8_devices_equals_single_device_step) and
  the "w/o F" variant of Table 1. With F, the flow is ~0 at initialisation and some of F's gradients are float noise
  whose sign follows the summation order (measured, 1 vs 2 processes: step-2 |grad G| 39.05 vs 39.12, Adam moments
  up to 1e-3 apart after step 3); without F the two runs agree to 6e-8 after 3 steps."""
  c = small_train_config()
  c.image_size = 16
  c.model.num_down = 1
  c.model.blocks.spade_hidden = 8
  c.disc.num_scales = 1
  c.disc.num_layers = 2
  c.disc.mouth_size = 8
  c.model.use_flow = False
  c.train.batch_size = 4
  c.train.num_steps = 8
  c.train.adam_eps = 1e-3
  c.train.log_every = 1
  c.train.checkpoint_every = 3
  c.train.keep_checkpoints = 3
  c.train.image_every = 4
  c.train.image_examples = 2
  return c


def init_key(config: ml_collections.ConfigDict) -> jax.Array:
  """The parameter-initialisation key Trainer.create derives from config.seed when JAX_DEFAULT_PRNG_IMPL=unsafe_rbg,
  as in test_train_loop's subprocesses. The init program depends on the kind of key: test_train_loop and
  test_evaluate build the same 4-device trainer with this key, so the second loads its init from the compile cache."""
  return jax.random.split(jax.random.key(config.seed, impl='unsafe_rbg'))[0]
