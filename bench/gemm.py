"""Matrix-product throughput of XLA:CPU against PyTorch (oneDNN / MKL) and NumPy (OpenBLAS) on this machine.

  python bench/gemm.py [--reps 5]

The weight gradient of a convolution is one matrix product (headgan_jax/kernels/conv.py), so this bounds how close our
CPU train step can come to PyTorch's: the shapes are those of G's widest weight gradients (P^T g of the 3x3 512 ->
512 and 256 -> 512 convolutions at 64x64, two frames) and of one tap's product. Interleaved in one process, medians,
GFLOP/s. Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


import jax  # noqa: E402
import numpy as np  # noqa: E402

from headgan_jax import host_malloc  # noqa: E402

# (M, K, N, what): C (M x N) = A (M x K) B (K x N).
SHAPES = ((4608, 8192, 512, 'dW of 3x3 512->512, 2 frames at 64x64 (P^T g)'),
          (2304, 8192, 512, 'dW of 3x3 256->512, 2 frames at 64x64'),
          (512, 8192, 512, 'one tap of 3x3 512->512'),
          (8192, 4608, 512, 'forward of 3x3 512->512 as im2col'))


def _median_s(fn, reps: int) -> float:
  fn()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--reps', type=int, default=5)
  args = parser.parse_args(argv)
  import torch  # pylint: disable=import-outside-toplevel
  threads = os.cpu_count() or 1
  torch.set_num_threads(threads)
  rows = []
  print(f'{"M":>6} {"K":>6} {"N":>5}  {"XLA":>7} {"torch":>7} {"numpy":>7}  GFLOP/s   what')
  for m, k, n, what in SHAPES:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), np.float32)
    b = rng.standard_normal((k, n), np.float32)
    ja, jb = jax.device_put(a), jax.device_put(b)
    matmul = jax.jit(lambda x, y: x @ y)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    gflop = 2.0 * m * k * n / 1e9
    err = float(np.max(np.abs(np.asarray(matmul(ja, jb)) - (ta @ tb).numpy())))
    times = {'xla': [], 'torch': [], 'numpy': []}
    for _ in range(2):  # Interleaved rounds.
      times['xla'].append(_median_s(lambda: matmul(ja, jb).block_until_ready(), args.reps))
      times['torch'].append(_median_s(lambda: ta @ tb, args.reps))
      times['numpy'].append(_median_s(lambda: a @ b, args.reps))
    rate = {name: gflop / float(np.median(t)) for name, t in times.items()}
    rows.append(dict(m=m, k=k, n=n, what=what, gflops=rate, max_abs_diff_xla_torch=err))
    print(f'{m:>6} {k:>6} {n:>5}  {rate["xla"]:7.0f} {rate["torch"]:7.0f} {rate["numpy"]:7.0f}            {what}')
  ratio = float(np.median([r['gflops']['torch'] / r['gflops']['xla'] for r in rows]))
  print(f'torch / XLA throughput, median over the shapes: {ratio:.2f}')
  print(json.dumps(dict(bench='gemm', threads=threads, torch=torch.__version__, jax=jax.__version__,
                        malloc=host_malloc.active(), rows=rows, torch_over_xla=round(ratio, 3))))
  return 0


if __name__ == '__main__':
  host_malloc.reexec_with_tcmalloc()  # First: it may start this command again (headgan_jax/host_malloc.py).
  sys.exit(main())
