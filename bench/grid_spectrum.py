"""Grid artefacts, measured: the mean 2D power spectrum of G's frames against the real frames, at the upsampling periods.

  python bench/grid_spectrum.py --workdir RUN [--steps 0,500,1000] [--wait_for 5000] [--max_batches 16]
                                [--data_dir DATA] [--source headgan_demo] [--png spectrum.png] [--out spectra.jsonl]

For each checkpoint step of the train.py run in RUN (default: every whole checkpoint there; step 0 = the untrained
G of the run's config.seed, as train/baselines.py builds it), G generates the same held-out frames (split 'test',
the run's training identities, the run's test reference: train/baselines.py's `held_out_batches`, at most
`--max_batches` batches), and so do the real targets y_t. Per frame: luminance (Rec. 601 weights, [0, 1]) minus the
frame's mean, times a 2D Hann window, |FFT|^2; then the mean over frames.

R upsamples twice with a pixel shuffle (16 -> 32 -> 64 px in the demo): a sub-pixel pattern repeats every 2 px of
the last shuffle and every 4 px of the one before, and a stride-2 encoder / discriminator repeats every 2^n px. A
pattern of period P (in x, in y or in both) puts its energy on the frequencies k / P cycles per pixel, i.e. on the
FFT bins (u, v) that are multiples of N / P. Per period P (bins of period P that are not bins of P / 2), and per
direction ('x': the bins (0, v), varying along x; 'y': (u, 0); 'xy': both non-zero; 'all'):
  gen_over_real  mean power of G's frames at those bins / the real frames' power there (1 = as real as can be);
  pnr_gen        peak-to-neighbourhood ratio of G's mean spectrum: power on the bins / the mean power of the bins at
                 Chebyshev distance 2-3 from them (the Hann window spreads a line over +-1 bin; the neighbourhood
                 leaves out every peak bin of every period and its +-1 bins), ratio of sums over the bins;
  pnr_real       the same for the real frames (natural images have no lines there: ~1);
A grid shows up as pnr_gen >> pnr_real and gen_over_real >> 1 at its period. One JSON line per step (on stdout, and
appended to --out), a human table on stderr; --png writes log10 spectra (G | real | G / real, fftshifted) per step.
Exit status 2 with one line for a missing work folder / checkpoint / dataset.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from headgan_jax import config_files
from headgan_jax.errors import ConfigError, HeadGANError

LUMA = (0.299, 0.587, 0.114)  # Rec. 601.
DIRECTIONS = ('x', 'y', 'xy', 'all')


@jax.jit
def power_spectra(images: jax.Array) -> jax.Array:
  """(B, H, W) float32: |FFT|^2 of each frame's luminance (images (B, H, W, 3) in [-1, 1]) minus its mean, Hann-
  windowed, normalised by the window's energy (so white noise of variance s^2 has a flat spectrum s^2)."""
  y = jnp.tensordot((images.astype(jnp.float32) + 1) / 2, jnp.asarray(LUMA, jnp.float32), axes=[[-1], [0]])
  y = y - y.mean(axis=(1, 2), keepdims=True)
  h, w = y.shape[1:]
  window = jnp.outer(jnp.hanning(h), jnp.hanning(w)).astype(jnp.float32)
  spec = jnp.abs(jnp.fft.fft2(y * window)) ** 2
  return spec / jnp.sum(window ** 2)


def period_bins(size: int, period: int, direction: str) -> list[tuple[int, int]]:
  """FFT bins (u, v) of a square size x size spectrum where a pattern of exactly `period` px puts energy: multiples
  of size / period that are not multiples of size / (period / 2), in `direction` ('x': u = 0, 'y': v = 0, 'xy':
  both non-zero, 'all': any)."""
  if size % period:
    raise ConfigError(f'period {period} does not divide the frame size {size}')
  step = size // period
  coarse = 2 * step if period % 2 == 0 else None  # Bins of period / 2 (and below) are its multiples.
  out = []
  for u in range(0, size, step):
    for v in range(0, size, step):
      if (u, v) == (0, 0) or (coarse and u % coarse == 0 and v % coarse == 0):
        continue
      if (direction == 'x' and u) or (direction == 'y' and v) or (direction == 'xy' and not (u and v)):
        continue
      out.append((u, v))
  return out


def neighbourhoods(size: int, peaks: Sequence[tuple[int, int]], excluded: set[tuple[int, int]]) -> list[list]:
  """Per peak bin, the bins at Chebyshev distance 2 or 3 (periodic), minus `excluded` (every peak and its +-1)."""
  out = []
  for u, v in peaks:
    ring = [((u + du) % size, (v + dv) % size) for du in range(-3, 4) for dv in range(-3, 4)
            if max(abs(du), abs(dv)) >= 2]
    out.append([b for b in ring if b not in excluded])
  return out


def analyse(gen: np.ndarray, real: np.ndarray, periods: Sequence[int]) -> dict[str, Any]:
  """The metrics of the module docstring from the mean spectra `gen`, `real` ((N, N) float arrays)."""
  size = gen.shape[0]
  every = [b for p in periods for b in period_bins(size, p, 'all')]
  excluded = {((u + du) % size, (v + dv) % size) for u, v in every for du in (-1, 0, 1) for dv in (-1, 0, 1)}
  excluded |= {(du % size, dv % size) for du in range(-1, 2) for dv in range(-1, 2)}  # The DC bin's leakage.
  out: dict[str, Any] = {}
  for p in periods:
    per: dict[str, Any] = {}
    for d in DIRECTIONS:
      peaks = period_bins(size, p, d)
      if not peaks:
        continue
      rows, cols = np.asarray(peaks).T
      hood = neighbourhoods(size, peaks, excluded)
      hood_g = np.asarray([np.mean([gen[b] for b in h]) for h in hood])
      hood_r = np.asarray([np.mean([real[b] for b in h]) for h in hood])
      g, r = gen[rows, cols], real[rows, cols]
      per[d] = dict(gen_over_real=float(g.sum() / r.sum()), pnr_gen=float(g.sum() / hood_g.sum()),
                    pnr_real=float(r.sum() / hood_r.sum()), bins=len(peaks))
    out[f'period_{p}'] = per
  return out


def mean_spectra(generate, variables, batches: Iterable) -> tuple[np.ndarray, np.ndarray, int]:
  """(G's mean spectrum, the targets' mean spectrum, frames) over the real rows of `batches`."""
  sum_g = sum_r = 0.0
  frames = 0
  limit = getattr(batches, 'num_frames', None)
  for batch in batches:
    image, _ = generate(variables, batch)
    sg, sr = (np.asarray(jax.device_get(power_spectra(x)), np.float64) for x in (image, batch.y))
    keep = sg.shape[0] if limit is None else max(0, min(sg.shape[0], limit - frames))
    sum_g, sum_r, frames = sum_g + sg[:keep].sum(0), sum_r + sr[:keep].sum(0), frames + keep
  if not frames:
    raise ConfigError('no held-out frames to measure')
  return sum_g / frames, sum_r / frames, frames


def spectrum_png(path: str, gen: np.ndarray, real: np.ndarray, scale: int = 3) -> None:
  """log10 spectra, fftshifted, side by side: G | real (one colour scale) | G / real (log10, -2..2); atomic."""
  from matplotlib import cm  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  lg, lr = (np.log10(np.fft.fftshift(s) + 1e-12) for s in (gen, real))
  lo, hi = np.percentile(lr, 1), lr.max()
  norm = lambda x: np.clip((x - lo) / (hi - lo), 0, 1)  # noqa: E731
  ratio = np.clip((lg - lr + 2) / 4, 0, 1)
  gap = np.ones((gen.shape[0], 2, 4))  # A white 2-bin column between the panels.
  tiles = [cm.viridis(norm(lg)), gap, cm.viridis(norm(lr)), gap, cm.coolwarm(ratio)]
  image = (np.concatenate(tiles, axis=1)[..., :3] * 255 + 0.5).astype(np.uint8)
  image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
  tmp = f'{path}.tmp-{os.getpid()}.png'
  Image.fromarray(image).save(tmp)
  os.replace(tmp, path)


def load_run(workdir: str, data_dir: str | None, source: str | None) -> ml_collections.ConfigDict:
  """The run's saved config, with the data location overridden when given."""
  config = config_files.load(workdir)  # Its config.json.
  config.loss.use_vgg = False  # Generating needs no VGG (and no weight file).
  if data_dir:
    config.data.data_dir = data_dir
  if source:
    config.data.source = source
  return config


def eval_batches(config, mesh, max_batches: int, identities: str):
  """The fixed held-out batches (the project's evaluation pipeline; the first `max_batches`, 0 = all)."""
  from headgan_jax.data import sources  # pylint: disable=import-outside-toplevel
  spec = ml_collections.ConfigDict(dict(num_batches=max_batches, identities=identities, pad=True,
                                        reference=str(config.data.test_reference)))
  return sources.make_eval_batches(config, mesh, 'test', spec)


def measure(args: argparse.Namespace) -> int:
  from headgan_jax import sharding, workdir as checkpoints  # pylint: disable=import-outside-toplevel
  from headgan_jax.train import loop  # pylint: disable=import-outside-toplevel
  config = load_run(args.workdir, args.data_dir, args.source)
  periods = [int(p) for p in args.periods.split(',')]
  trainer = loop.Trainer.create(config)
  batches = eval_batches(config, trainer.mesh, args.max_batches, args.identities)
  done: set[int] = set()
  while True:
    wanted = ([int(s) for s in args.steps.split(',')] if args.steps
              else [0] + checkpoints.checkpoint_steps(args.workdir))
    todo = [s for s in wanted if s not in done and (s == 0 or s in checkpoints.checkpoint_steps(args.workdir))]
    for step in todo:
      if step == 0:
        variables = loop.generator_variables(trainer.init_state())
      else:
        location = checkpoints.find(args.workdir, step, step_flag='--steps')
        variables = checkpoints.restore_generator(location, config, sharding.replicated(trainer.mesh))
      gen, real, frames = mean_spectra(trainer.apply_generator, variables, batches)
      result = dict(step=step, frames=frames, workdir=os.path.abspath(args.workdir), label=args.label,
                    **analyse(gen, real, periods))
      line = json.dumps(result)
      print(line, flush=True)
      if args.out:
        with open(args.out, 'a', encoding='utf-8') as f:
          f.write(line + '\n')
      if args.png:
        stem, ext = os.path.splitext(args.png)
        spectrum_png(f'{stem}_{step}{ext or ".png"}', gen, real)
      summary = '  '.join(f"P{p}: pnr {result[f'period_{p}']['all']['pnr_gen']:.2f} (real "
                          f"{result[f'period_{p}']['all']['pnr_real']:.2f}), x{result[f'period_{p}']['all']['gen_over_real']:.2f} real"
                          for p in periods)
      print(f'step {step:5d} ({frames} frames): {summary}', file=sys.stderr, flush=True)
      done.add(step)
    if not args.wait_for or args.wait_for in done:
      return 0
    time.sleep(30)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='the work folder of a train.py run (read only)')
  parser.add_argument('--steps', default='', help='comma-separated checkpoint steps, 0 = untrained (default: all)')
  parser.add_argument('--wait_for', type=int, default=0,
                      help='keep watching the work folder for new checkpoints until this step has been measured')
  parser.add_argument('--max_batches', type=int, default=16, help='held-out batches to measure (0 = all)')
  parser.add_argument('--identities', choices=('seen', 'unseen', 'all'), default='seen')
  parser.add_argument('--periods', default='2,4,8', help='comma-separated periods in px')
  parser.add_argument('--data_dir', default='', help="override the run's config.data.data_dir")
  parser.add_argument('--source', default='', help="override the run's config.data.source")
  parser.add_argument('--label', default='', help='a label copied into every JSON line')
  parser.add_argument('--png', default='', help='write spectra to PNG_<step>.png')
  parser.add_argument('--out', default='', help='append the JSON lines to this file')
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    return measure(args)
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
