"""docs/learning.md's Table 1 at small scale, from what scripts/learning_eval.sh wrote for each row at one step.

  .venv/bin/python scripts/ablation_table.py STEP [--also DIR] full=DIR full_seed1=DIR no_flow=DIR no_audio=DIR ...

Rows named `full*` are seeds of the full model: their spread (max - min per metric) is the seed noise, and a cell of
another row is marked * when it lies outside the full seeds' range by more than that spread (better or worse).
`--also DIR`: evaluate.py outputs named DIR/<row>.json fill the evaluation cells that a row's eval_STEP.json lacks
(e.g. the mouth metrics, added after the rows were first evaluated).
"""
from __future__ import annotations

import os
import sys

import learning_table  # scripts/ is on sys.path when this file runs as a script.

# (column, source, protocol or identities, key, format)
COLUMNS = (
    ('self CSIM', 'eval', 'self', ('csim', 'csim'), '.3f'),
    ('self FVD', 'eval', 'self', ('fvd', 'fvd'), '.0f'),
    ('self AED', 'eval', 'self', ('aed', 'aed'), '.1f'),
    ('face L1', 'eval', 'self', ('image', 'l1_face'), '.4f'),
    ('face PSNR', 'eval', 'self', ('image', 'psnr_face'), '.2f'),
    ('face SSIM', 'eval', 'self', ('image', 'ssim_face'), '.3f'),
    ('mouth L1', 'eval', 'self', ('image', 'l1_mouth'), '.4f'),  # '-' for eval.json files written before it.
    ('cross CSIM', 'eval', 'cross', ('csim', 'csim'), '.3f'),
    ('cross AED', 'eval', 'cross', ('aed', 'aed'), '.1f'),
    ('seen: G', 'baselines', 'seen', 'trained', '.4f'),
    ('seen: F warp', 'baselines', 'seen', 'warped_reference', '.4f'),
    ('unseen: G', 'baselines', 'unseen', 'trained', '.4f'),
)


def _eval_value(evals: list, where: str, key: tuple[str, str]) -> float:
  """The first of the evaluate.py outputs `evals` that holds the metric; KeyError when none does."""
  for ev in evals:
    try:
      return float(ev['protocols'][where][key[0]]['values'][key[1]])
    except (KeyError, TypeError):
      continue
  raise KeyError(key)


def row_values(out: str, step: int, also: list[str] = ()) -> dict[str, float | None]:
  """One row's numbers: column -> value (None where the file or the metric is missing)."""
  paths = (os.path.join(out, f'eval_{step}.json'), *also)
  evals = [learning_table._load(p) for p in paths if os.path.exists(p)]  # pylint: disable=protected-access
  values = {}
  for name, source, where, key, _ in COLUMNS:
    try:
      if source == 'eval':
        values[name] = _eval_value(evals, where, key)
      else:
        b = learning_table._load(os.path.join(out, f'baselines_{where}_{step}.json'))  # pylint: disable=protected-access
        values[name] = float(b[key])
    except (KeyError, TypeError):
      values[name] = None
  return values


def table(step: int, rows: dict[str, str], also: str = '') -> str:
  values = {row: row_values(out, step, [os.path.join(also, f'{row}.json')] if also else [])
            for row, out in rows.items()}
  seeds = [r for r in rows if r.startswith('full')]
  lines = ['| row | ' + ' | '.join(c[0] for c in COLUMNS) + ' |', '|---' * (len(COLUMNS) + 1) + '|']
  for row in rows:
    cells = [row]
    for name, _, _, _, fmt in COLUMNS:
      v = values[row][name]
      if v is None:
        cells.append('-')
        continue
      cell = format(v, fmt)
      ref = [values[s][name] for s in seeds if values[s][name] is not None]
      if row not in seeds and len(ref) >= 2:
        lo, hi = min(ref), max(ref)
        spread = hi - lo
        if v > hi + spread or v < lo - spread:
          cell += '*'
      cells.append(cell)
    lines.append('| ' + ' | '.join(cells) + ' |')
  if len(seeds) >= 2:
    cells = ['seed spread']
    for name, _, _, _, fmt in COLUMNS:
      ref = [values[s][name] for s in seeds if values[s][name] is not None]
      cells.append(format(max(ref) - min(ref), fmt) if len(ref) >= 2 else '-')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


if __name__ == '__main__':
  args = sys.argv[1:]
  also_dir = ''
  if '--also' in args:
    i = args.index('--also')
    also_dir = args[i + 1]
    del args[i:i + 2]
  if len(args) < 2 or not args[0].isdigit() or not all('=' in a for a in args[1:]):
    sys.exit('usage: scripts/ablation_table.py STEP [--also DIR] ROW=OUT_DIR [ROW=OUT_DIR ...] (OUT_DIR: '
             'learning_eval.sh output)')
  pairs = dict(a.split('=', 1) for a in args[1:])
  for row, out in pairs.items():
    if not os.path.isdir(out):
      sys.exit(f'{out}: no such folder (row {row})')
  print(table(int(args[0]), pairs, also_dir))
