"""A tiny configuration for tests: 64x64 images, channel widths / 8, small discriminators."""
import ml_collections

from configs import paper


def get_config() -> ml_collections.ConfigDict:
  c = paper.get_config()
  c.image_size = 64
  c.model.ngf = 4  # 4 -> 16 -> 64 channels.
  c.model.spade_hidden = 32
  c.disc.ndf = 8
  c.disc.max_channels = 64
  c.disc.mouth_size = 32
  c.train.batch_size = 2
  c.train.steps_per_epoch = 10
  c.train.log_every = 1
  c.train.checkpoint_every = 5
  c.loss.use_vgg = False
  return c
