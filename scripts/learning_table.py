"""docs/learning.md's tables from the files scripts/learning_eval.sh writes (eval_STEP.json, baselines_*_STEP.json),
and a strip of G's output over training from its grids (grid_STEP.png: columns x_t | reference | warped reference |
generated | target): reference | generated at each step | target.

  .venv/bin/python scripts/learning_table.py OUT_DIR [--strip docs/learning_strip.png]
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys


def _steps(out: str) -> list[int]:
  return sorted({int(m.group(1)) for p in glob.glob(os.path.join(out, '*_*.json'))
                 if (m := re.search(r'_(\d+)\.json$', p))})


def _load(path: str) -> dict | None:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def _value(ev: dict | None, protocol: str, evaluator: str, key: str, fmt: str) -> str:
  try:
    return format(ev['protocols'][protocol][evaluator]['values'][key], fmt)
  except (KeyError, TypeError):
    return '-'


def tables(out: str) -> str:
  rows_b, rows_e = [], []
  for step in _steps(out):
    cells = [str(step)]
    for ids in ('seen', 'unseen'):
      b = _load(os.path.join(out, f'baselines_{ids}_{step}.json'))
      names = ('trained', 'warped_reference', 'copy_reference', 'untrained')
      cells += [f"{b[n]:.4f}" if b else '-' for n in names]
    rows_b.append('| ' + ' | '.join(cells) + ' |')
    ev = _load(os.path.join(out, f'eval_{step}.json'))
    cells = [str(step)]
    for key, fmt in (('l1_face', '.4f'), ('psnr_face', '.2f'), ('ssim_face', '.3f'), ('l1', '.4f'),
                     ('psnr', '.2f'), ('ssim', '.3f')):
      cells.append(_value(ev, 'self', 'image', key, fmt))
    for protocol in ('self', 'cross'):
      cells += [_value(ev, protocol, 'csim', 'csim', '.3f'), _value(ev, protocol, 'fvd', 'fvd', '.0f'),
                _value(ev, protocol, 'aed', 'aed', '.1f')]
    rows_e.append('| ' + ' | '.join(cells) + ' |')
  head_b = ('| step | seen: G | seen: F warp | seen: copy ref | seen: untrained | unseen: G | unseen: F warp | '
            'unseen: copy ref | unseen: untrained |\n|---' * 1 + '|---' * 8 + '|')
  head_e = ('| step | face L1 | face PSNR | face SSIM | L1 | PSNR | SSIM | self CSIM | self FVD | self AED | '
            'cross CSIM | cross FVD | cross AED |\n|---' + '|---' * 12 + '|')
  return '\n'.join([head_b, *rows_b, '', head_e, *rows_e])


def strip(out: str, path: str, columns: int = 5) -> list[int]:
  """Writes reference | generated at every step with a grid | target (one row per grid row); returns the steps."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  steps = [s for s in _steps(out) if os.path.exists(os.path.join(out, f'grid_{s}.png'))]
  if not steps:
    raise SystemExit(f'{out}: no grid_STEP.png')
  grids = [np.asarray(Image.open(os.path.join(out, f'grid_{s}.png')).convert('RGB')) for s in steps]
  tile = grids[0].shape[1] // columns
  col = lambda g, c: g[:, c * tile:(c + 1) * tile]  # noqa: E731
  image = np.concatenate([col(grids[0], 1)] + [col(g, 3) for g in grids] + [col(grids[-1], 4)], axis=1)
  Image.fromarray(image).save(path, optimize=True)
  return steps


if __name__ == '__main__':
  args = sys.argv[1:]
  if not args or not os.path.isdir(args[0]) or (len(args) not in (1, 3)) or (len(args) == 3 and args[1] != '--strip'):
    sys.exit('usage: scripts/learning_table.py OUT_DIR [--strip PNG] (OUT_DIR: what scripts/learning_eval.sh wrote)')
  print(tables(args[0]))
  if len(args) == 3:
    print(f'{args[2]}: reference | steps {strip(args[0], args[2])} | target')
