"""The paper's Table 1 layout with our numbers beside the paper's HeadGAN row, and the eval.json writer."""
from __future__ import annotations

import datetime
import json
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

# Table 1 of the paper (VoxCeleb test set, self-reenactment); CSIM higher is better, the rest lower.
PAPER_TABLE1 = {
    'Wiles et al. [39]': {'csim': 0.620, 'fid': 130.2, 'fvd': 697, 'aed': 1.848},
    'Wang et al. [37]': {'csim': 0.588, 'fid': 62.8, 'fvd': 471, 'aed': 1.872},
    'Zakharov et al. [41]': {'csim': 0.625, 'fid': 92.2, 'fvd': 394, 'aed': 1.014},
    'Siarohin et al. [28]': {'csim': 0.776, 'fid': 64.9, 'fvd': 338, 'aed': 1.164},
    'HeadGAN': {'csim': 0.716, 'fid': 50.9, 'fvd': 334, 'aed': 1.125},
    'HeadGAN w/o network F': {'csim': 0.307, 'fid': 63.3, 'fvd': 473, 'aed': 1.195},
    'HeadGAN w/o audio input': {'csim': 0.687, 'fid': 55.2, 'fvd': 356, 'aed': 1.149},
    'HeadGAN w/ landmarks': {'csim': 0.699, 'fid': 55.7, 'fvd': 371, 'aed': 1.162},
}
TABLE1_COLUMNS = (('csim', 'CSIM', '{:.3f}'), ('fid', 'FID', '{:.1f}'), ('fvd', 'FVD', '{:.0f}'),
                  ('aed', 'AED', '{:.3f}'))
EXTRA_COLUMNS = (('l1', 'L1', '{:.4f}'), ('psnr', 'PSNR', '{:.2f}'), ('ssim', 'SSIM', '{:.3f}'),
                 ('l1_face', 'L1 face', '{:.4f}'), ('psnr_face', 'PSNR face', '{:.2f}'),
                 ('ssim_face', 'SSIM face', '{:.3f}'), ('l1_mouth', 'L1 mouth', '{:.4f}'),
                 ('psnr_mouth', 'PSNR mouth', '{:.2f}'), ('apd_rotation_deg', 'APD rot (deg)', '{:.2f}'),
                 ('apd_translation_px', 'APD t (px)', '{:.2f}'))


def _values(protocol_results: Mapping[str, dict]) -> dict[str, float]:
  """All metric values of one protocol, flattened over evaluators."""
  out = {}
  for res in protocol_results.values():
    out.update(res.get('values', {}))
  return out


def _cells(protocol_results: Mapping[str, dict], columns) -> list[str]:
  """Formatted values; 'skipped' where the evaluator of that name was skipped, '-' where nothing was measured."""
  vals = _values(protocol_results)
  out = []
  for key, _, fmt in columns:
    if key not in vals and protocol_results.get(key, {}).get('skipped'):
      out.append('skipped')
    else:
      out.append(_fmt(vals.get(key), fmt))
  return out


def _fmt(value, fmt: str) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '-'
  return fmt.format(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
  line = lambda r: '  '.join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
  return '\n'.join([line(header), '  '.join('-' * w for w in widths)] + [line(r) for r in rows])


def format_table1(results: Mapping[str, Mapping[str, dict]], label: str = 'ours') -> str:
  """Table 1's layout (CSIM, FID, FVD, AED) for the self-reenactment results, the paper's HeadGAN row first;
  then our extra metrics for every protocol, what was skipped and why, and the networks that produced the numbers."""
  lines = []
  header = ['Method \\ Metric'] + [name for _, name, _ in TABLE1_COLUMNS]
  rows = [['HeadGAN (paper, VoxCeleb)'] + [_fmt(PAPER_TABLE1['HeadGAN'][k], f) for k, _, f in TABLE1_COLUMNS]]
  for protocol in results:
    rows.append([f'{label} ({protocol}-reenactment)'] + _cells(results[protocol], TABLE1_COLUMNS))
  lines.append(_table(header, rows))
  extra_rows = []
  for protocol in results:
    extra_rows.append([f'{label} ({protocol})'] + _cells(results[protocol], EXTRA_COLUMNS))
  lines += ['', _table(['More metrics'] + [n for _, n, _ in EXTRA_COLUMNS], extra_rows)]
  notes = []
  for protocol, per_eval in results.items():
    for name, res in per_eval.items():
      if res.get('skipped'):
        notes.append(f'  {protocol}/{name}: skipped - {res["skipped"]}')
  networks = sorted({f'  {name}: {res["network"]}' for per_eval in results.values()
                     for name, res in per_eval.items() if res.get('network')})
  if notes:
    lines += ['', 'Skipped:'] + notes
  if networks:
    lines += ['', 'Networks:'] + networks
  lines += ['', 'CSIM higher is better, the rest lower. The paper used ArcFace, LSFM fits and VoxCeleb; numbers '
            'from other embedders, 3DMMs or data are not comparable with its row.']
  return '\n'.join(lines)


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if hasattr(x, 'item') and getattr(x, 'ndim', 1) == 0:
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None if math.isnan(x) else ('inf' if x > 0 else '-inf')
  return x


def write_eval_json(path: str | os.PathLike, results: Mapping[str, Mapping[str, dict]],
                    meta: Mapping[str, Any] | None = None) -> str:
  """Writes {'created', 'meta', 'protocols': results, 'paper_table1'} to `path` atomically (temp file + rename).

  NaN becomes null, infinities the strings 'inf' / '-inf', so the file is strict JSON.
  """
  path = os.fspath(path)
  doc = {'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
         'meta': _jsonable(dict(meta or {})), 'protocols': _jsonable(results), 'paper_table1': PAPER_TABLE1}
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.eval-', suffix='.json.tmp')
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(doc, f, indent=2, allow_nan=False)
      f.write('\n')
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path
