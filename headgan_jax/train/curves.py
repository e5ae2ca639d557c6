"""Loss curves of a run as a picture: TensorBoard's event files (train/<term>) exported to one PNG.

  python -m headgan_jax.train.curves --workdir RUN --out docs/learning_curves.png [--smooth 25]

A resumed run writes a new event file beside the old one and repeats the steps after its last checkpoint: the
newest file's value wins for a repeated step, so the curve is the one the finished run would have drawn.
"""
from __future__ import annotations

import numpy as np

from headgan_jax import files

# The panels: (title, tags). Each tag is drawn raw (faint) and smoothed.
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ('reconstruction L1 (eq. 6): G and F', ('train/g_l1', 'train/f_l1')),
    ('feature matching (eq. 4): image and mouth D', ('train/g_fm', 'train/gm_fm')),
    ('G adversarial (eq. 3): image and mouth D', ('train/g_adv', 'train/gm_adv')),
    ('D total (eq. 2 + mouth)', ('train/d_total',)),
    ('D on real / fake (hinge terms)', ('train/d_real', 'train/d_fake')),
    ('G total (eq. 8)', ('train/g_total',)),
    ('F temporal / mask terms', ('train/f_temp', 'train/f_mask')),
    ('learning rate', ('train/lr',)),
)


def series(points: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) sorted by step, one value per step: the LAST one read wins (event files are read oldest first,
  so a resumed run's repeated steps take the resumed values)."""
  latest: dict[int, float] = {}
  for step, value in points:
    latest[int(step)] = float(value)
  steps = np.asarray(sorted(latest), dtype=np.int64)
  return steps, np.asarray([latest[s] for s in steps], dtype=np.float64)


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
  """Centred moving average over `window` points (made odd, at most the data's length; shorter at the ends, never
  padded with zeros)."""
  window = min(window, len(values))
  window -= 1 - window % 2  # an odd window stays centred
  if window <= 1:
    return values.astype(np.float64)
  kernel = np.ones(window)
  sums = np.convolve(values, kernel, mode='same')
  counts = np.convolve(np.ones_like(values), kernel, mode='same')
  return sums / counts


def plot(scalars: dict[str, list[tuple[int, float]]], out: str, smooth: int = 25, title: str = '') -> list[str]:
  """Writes the panels that have data to `out` (PNG, atomically); returns the tags drawn."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  panels = [(name, [t for t in tags if t in scalars]) for name, tags in PANELS]
  panels = [(name, tags) for name, tags in panels if tags]
  if not panels:
    raise ValueError('no train/* scalars to plot (is it a train.py run\'s tensorboard folder?)')
  cols = 2
  rows = (len(panels) + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(11, 2.6 * rows), squeeze=False)
  drawn = []
  for ax, (name, tags) in zip(axes.flat, panels):
    for i, tag in enumerate(tags):
      steps, values = series(scalars[tag])
      colour = f'C{i}'
      ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.7)
      ax.plot(steps, smoothed(values, smooth), color=colour, linewidth=1.6, label=tag.split('/', 1)[-1])
      drawn.append(tag)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel('step', fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis('off')
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  import io  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=90)
  plt.close(fig)
  files.write_atomic(out, buf.getvalue())
  return drawn


if __name__ == '__main__':  # The command moved (headgan_jax/commands/curves.py); this spelling still runs it.
  import runpy
  runpy.run_module('headgan_jax.commands.curves', run_name='__main__', alter_sys=True)
