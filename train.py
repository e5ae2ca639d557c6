"""Trains HeadGAN (G, D and D_m): the command line of headgan_jax/train/loop.py.

  python train.py --config configs/tiny.py --workdir /tmp/headgan --config.train.num_steps=20

See headgan_jax/train/cli.py for the flags, config overrides, multi-host launch and exit statuses, and
headgan_jax/train/loop.py for what a run writes to its work folder.
"""
import sys

from headgan_jax import host_malloc

if __name__ == '__main__':
  host_malloc.reexec_with_tcmalloc()  # First: it may start this command again (headgan_jax/host_malloc.py).
  from headgan_jax.train import cli
  sys.exit(cli.main())
