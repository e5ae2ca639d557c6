"""Trains HeadGAN (G, D and D_m): the command line of headgan_jax/train/loop.py.

  python train.py --config configs/tiny.py --workdir /tmp/headgan --config.train.num_steps=20

See headgan_jax/commands/train.py for the flags, config overrides, multi-host launch and exit statuses, and
headgan_jax/train/loop.py for what a run writes to its work folder.
"""
import sys

from headgan_jax import commands

if __name__ == '__main__':
  sys.exit(commands.start('train'))  # tcmalloc first (headgan_jax/host_malloc.py), then the command.
