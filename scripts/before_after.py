"""The README's before / after picture of the main job, from two of its grid.png files (reenact.py's grid: one row per
frame, columns reference | driving | x_t | generated): reference | driving | x_t | generated before | generated after,
each tile scaled up `--scale` times (nearest neighbour, so that the pixels stay visible).

  .venv/bin/python scripts/before_after.py BEFORE/grid.png AFTER/grid.png docs/main_job_before_after.png
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image

COLUMNS = 4  # reenact.py's grid: reference | driving | x_t | generated.


def tiles(path: str) -> np.ndarray:
  """grid.png -> (rows, columns, size, size, 3)."""
  image = np.asarray(Image.open(path).convert('RGB'))
  size = image.shape[1] // COLUMNS
  rows = image.shape[0] // size
  if image.shape != (rows * size, COLUMNS * size, 3):
    raise SystemExit(f'{path}: {image.shape[1]}x{image.shape[0]} is not a grid of {COLUMNS} square columns')
  return image.reshape(rows, size, COLUMNS, size, 3).transpose(0, 2, 1, 3, 4)


def before_after(before: np.ndarray, after: np.ndarray, scale: int) -> np.ndarray:
  if before.shape != after.shape:
    raise SystemExit(f'the grids differ in shape: {before.shape} vs {after.shape}')
  rows = [np.concatenate([*a[:3], b[3], a[3]], axis=1) for b, a in zip(before, after)]
  image = np.concatenate(rows, axis=0)
  return image.repeat(scale, axis=0).repeat(scale, axis=1)


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('before')
  ap.add_argument('after')
  ap.add_argument('out')
  ap.add_argument('--scale', type=int, default=2)
  args = ap.parse_args(argv)
  Image.fromarray(before_after(tiles(args.before), tiles(args.after), args.scale)).save(args.out, optimize=True)
  print(f'wrote {args.out}: reference | driving | x_t | before | after')
  return 0


if __name__ == '__main__':
  sys.exit(main())
