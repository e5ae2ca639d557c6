"""Start-up of a training run on this backend: initialising the train state and compiling the train step, before and
after issue 12.

  python bench/startup.py --config configs/tiny.py [--reps 2]

1. In this process, with the compilation cache off: the jitted `init_state` compiled with default options
   ('before') and with state.init_compiler_options() ('after'), alternating, `--reps` times each. Every time a new jit
   object, so nothing comes from memory: each figure is build + trace + compile + run of the init.
2. Two fresh processes sharing one empty persistent compilation cache (headgan_jax/compilation_cache.py): each
   builds the models, runs the 'after' init and compiles the train step. The first compiles and fills the cache,
   the second - a resumed training, the demo run again, a second test of the same network - loads from it.
Figures are printed for humans, then ONE JSON line.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

import jax  # noqa: E402
import numpy as np  # noqa: E402

from headgan_jax import compilation_cache, config_files, host_malloc  # noqa: E402
from headgan_jax import sharding as sharding_lib  # noqa: E402
from headgan_jax.data import batch as batch_lib  # noqa: E402
from headgan_jax.train import state as state_lib, step as step_lib  # noqa: E402


def startup_config(path: str, image_size: int = 0):
  """config_files.load(path) at `image_size` (when given), without VGG."""
  config = config_files.load(path)
  if image_size:
    config.image_size = image_size
  config.loss.use_vgg = False  # VGG's own init / weights are not part of what is measured.
  return config


def startup_once(config, which: str, compile_step: bool) -> dict:
  """Seconds to build the models and trace + compile + run a fresh jitted init ('before': default compile options,
  'after': state.init_compiler_options()); with `compile_step`, then seconds to compile the train step."""
  mesh = sharding_lib.make_mesh()
  t0 = time.perf_counter()
  models, optimizers = state_lib.make_models(config), state_lib.make_optimizers(config)
  options = state_lib.init_compiler_options() if which == 'after' else None
  init = jax.jit(lambda k: state_lib.init_state(k, config, models, optimizers),
                 out_shardings=sharding_lib.replicated(mesh), compiler_options=options)
  state = jax.block_until_ready(init(jax.random.key(config.seed)))
  out = {'init_s': round(time.perf_counter() - t0, 2)}
  if compile_step:
    batch = sharding_lib.shard_batch(batch_lib.synthetic_batch(jax.random.key(0), config), mesh)
    fn = step_lib.make_train_step(config, models, optimizers, mesh)
    t0 = time.perf_counter()
    fn.jitted.lower(state, batch, None).compile()
    out['step_compile_s'] = round(time.perf_counter() - t0, 2)
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default=str(REPO / 'configs' / 'tiny.py'))
  parser.add_argument('--image-size', type=int, default=0)
  parser.add_argument('--reps', type=int, default=2, help='cold inits of each kind in this process')
  parser.add_argument('--child-cache', default='', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  config = startup_config(args.config, args.image_size)
  if args.child_cache:  # One of the two processes of part 2.
    compilation_cache.enable(args.child_cache)
    print(json.dumps(startup_once(config, 'after', compile_step=True)))
    return 0
  cold = {'before': [], 'after': []}
  for _ in range(args.reps):
    for which in cold:
      cold[which].append(startup_once(config, which, compile_step=False)['init_s'])
      print(f'init ({which}, cold): {cold[which][-1]:.1f} s', flush=True)
  runs = []
  with tempfile.TemporaryDirectory() as cache:
    for label in ('empty cache', 'filled cache'):
      cmd = [sys.executable, __file__, '--config', args.config, '--child-cache', cache]
      if args.image_size:
        cmd += ['--image-size', str(args.image_size)]
      proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
      runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
      print(f"new process, {label}: init {runs[-1]['init_s']:.1f} s, step compile {runs[-1]['step_compile_s']:.1f} s",
            flush=True)
  medians = {k: float(np.median(v)) for k, v in cold.items()}
  print(f"init, cold: before {medians['before']:.1f} s, after {medians['after']:.1f} s "
        f"({medians['before'] / medians['after']:.2f}x); re-run with the cache: init {runs[1]['init_s']:.1f} s, "
        f"step compile {runs[1]['step_compile_s']:.1f} s (first run {runs[0]['step_compile_s']:.1f} s)")
  devices = jax.devices()
  print(json.dumps({'bench': 'startup', 'config': args.config, 'image_size': config.image_size,
                    'device_kind': devices[0].device_kind, 'platform': devices[0].platform,
                    'init_cold_s': cold, 'init_cold_median_s': medians, 'first_process': runs[0],
                    'second_process': runs[1]}))
  return 0


if __name__ == '__main__':
  host_malloc.reexec_with_tcmalloc()  # First: it may start this command again (headgan_jax/host_malloc.py).
  sys.exit(main())
