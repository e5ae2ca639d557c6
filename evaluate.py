"""Evaluates a trained HeadGAN checkpoint (CSIM, FID, FVD, AED / APD, L1 / PSNR / SSIM; self- and cross-reenactment).

  python evaluate.py --config W/config.json --workdir W --out W/eval.json [--checkpoint STEP]

See headgan_jax/evaluate.py for the protocols, flags and exit statuses.
"""
import sys

from headgan_jax import host_malloc

if __name__ == '__main__':
  host_malloc.reexec_with_tcmalloc()  # First: it may start this command again (headgan_jax/host_malloc.py).
  from headgan_jax import evaluate
  sys.exit(evaluate.main())
