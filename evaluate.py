"""Evaluates a trained HeadGAN checkpoint (CSIM, FID, FVD, AED / APD, L1 / PSNR / SSIM; self- and cross-reenactment).

  python evaluate.py --config W/config.json --workdir W --out W/eval.json [--checkpoint STEP]

See headgan_jax/evaluate.py for the protocols and headgan_jax/commands/evaluate.py for the flags and exit statuses.
"""
import sys

from headgan_jax import commands

if __name__ == '__main__':
  sys.exit(commands.start('evaluate'))  # tcmalloc first (headgan_jax/host_malloc.py), then the command.
