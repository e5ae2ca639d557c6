"""Side-by-side timing of two ways to run the same training, in ONE process, interleaved (a shared machine's load
hits both alike):

  python bench/train_step_variants.py --config configs/tiny.py --compare shared_passes [--rounds 5]
  python bench/train_step_variants.py --config configs/tiny.py --compare d_update [--rounds 5]

--compare shared_passes: config.train.shared_passes False (G on frames t-1 and t, one VGG19 pass per image pair)
  against True (frame t-1 through F only, VGG19 once on [fake, warped, real]); the same loss and gradients
  (tests/test_train_step.py). Both update D and D_m on every step (d_every = 1), so only the G side differs.
--compare d_update: with config.train.d_every = n, one compiled step whose D update is a traced `lax.cond`
  (config.train.d_update = 'traced_cond') against two compiled steps, without / with the D update, picked on the
  host from the step number ('two_steps', the default): n - 1 without, then 1 with.
A round runs n steps of each variant (n = d_every, 1 for shared_passes; either way one D update per round); the order
of the variants alternates from round to round, and one train state is threaded through all of them. Printed: compile time, median time per round and per step, and the ratio b / a as the median over
rounds of the ratio within a round (the two run back to back, so load changes hit them alike), for wall time and
for the process's CPU time (all threads; on a shared machine the steadier measure of work, blind to lost
parallelism); then ONE JSON line.
Batches are synthetic; VGG19 runs with random weights unless the config names a file (the cost is the same).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

import jax  # noqa: E402
import numpy as np  # noqa: E402

import train_step as base  # noqa: E402  (bench/train_step.py: overrides, VGG setup)
from headgan_jax import config_files  # noqa: E402
from headgan_jax import sharding as sharding_lib  # noqa: E402
from headgan_jax.data import batch as batch_lib  # noqa: E402
from headgan_jax.errors import HeadGANError  # noqa: E402
from headgan_jax.train import state as state_lib, step as step_lib  # noqa: E402


def variants(args, config, models, optimizers, mesh, vgg_apply):
  """{name: [(TrainStep, how many calls per round), ...]} for the comparison asked for, and steps per round."""
  make = lambda cfg, **kw: step_lib.make_train_step(cfg, models, optimizers, mesh, vgg_apply, **kw)  # noqa: E731
  if args.compare == 'shared_passes':
    plain, shared = config.copy_and_resolve_references(), config.copy_and_resolve_references()
    plain.train.shared_passes, shared.train.shared_passes = False, True
    return {'straightforward': [(make(plain), 1)], 'shared_passes': [(make(shared), 1)]}, 1
  n = int(config.train.d_every)
  if n < 2:
    raise SystemExit('--compare d_update needs config.train.d_every >= 2 (use --d-every)')
  traced = config.copy_and_resolve_references()
  traced.train.d_update = 'traced_cond'
  return {'traced_cond': [(make(traced), n)],
          'two_steps': [(make(config, update_d=False), n - 1), (make(config, update_d=True), 1)]}, n


def run(args: argparse.Namespace) -> dict:
  config = base.apply_overrides(config_files.load(args.config), args)
  if args.compare == 'shared_passes':
    config.train.d_every = 1
  elif args.d_every:
    config.train.d_every = args.d_every
  mesh = sharding_lib.make_mesh(jax.devices())
  models = state_lib.make_models(config)
  optimizers = state_lib.make_optimizers(config)
  vgg_apply, vgg_params, vgg_note = base.setup_vgg(config, mesh)
  host_state = jax.device_get(step_lib.init_state_sharded(jax.random.key(config.seed), config, models, optimizers,
                                                         mesh))
  batch = sharding_lib.shard_batch(batch_lib.synthetic_batch(jax.random.key(0), config, config.train.batch_size), mesh)
  table, per_round = variants(args, config, models, optimizers, mesh, vgg_apply)

  # ONE state is threaded through every variant (they compute the same update, and the cost does not depend on the
  # values): a second copy of a paper-size state would cost 0.8 GB.
  state = jax.device_put(host_state, sharding_lib.replicated(mesh))
  del host_state
  compiled, compile_s = {}, {}
  for name, parts in table.items():
    t0 = time.perf_counter()
    compiled[name] = [(step.lower(state, batch, vgg_params).compile(), count) for step, count in parts]
    compile_s[name] = time.perf_counter() - t0

  def one_round(name):
    nonlocal state
    metrics = None
    for fn, count in compiled[name]:
      for _ in range(count):
        state, metrics = fn(state, batch, vgg_params)
    jax.block_until_ready((state, metrics))
    return metrics

  names = list(table)
  finite = True
  for name in names:  # Warm-up: the first execution allocates.
    one_round(name)
  times = {name: [] for name in names}
  cpu = {name: [] for name in names}
  for r in range(args.rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      t0, c0 = time.perf_counter(), time.process_time()
      metrics = one_round(name)
      times[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)  # All threads' CPU time: what other users' load changes least.
      finite &= all(np.isfinite(float(v)) for v in metrics.values())
  med = {name: float(np.median(t)) for name, t in times.items()}
  a, b = names
  # Each round runs both variants back to back, so their ratio within a round is what the load varies least.
  paired = [tb / ta for ta, tb in zip(times[a], times[b])]
  paired_cpu = [tb / ta for ta, tb in zip(cpu[a], cpu[b])]
  device = jax.devices()[0]
  return {
      'bench': 'train_step_variants', 'compare': args.compare, 'config': args.config,
      'image_size': config.image_size, 'batch': config.train.batch_size, 'dtype': config.runtime.compute_dtype,
      'devices': len(jax.devices()), 'device_kind': device.device_kind, 'platform': device.platform, 'vgg': vgg_note,
      'steps_per_round': per_round, 'rounds': args.rounds,
      'compile_s': {k: round(v, 2) for k, v in compile_s.items()},
      'round_ms_median': {k: round(v * 1e3, 2) for k, v in med.items()},
      'step_ms_median': {k: round(v * 1e3 / per_round, 2) for k, v in med.items()},
      'round_ms_all': {k: [round(x * 1e3, 1) for x in v] for k, v in times.items()},
      f'ratio_{b}_over_{a}': round(float(np.median(paired)), 4),
      'ratio_per_round': [round(r, 3) for r in paired],
      'cpu_round_s_median': {k: round(float(np.median(v)), 3) for k, v in cpu.items()},
      f'cpu_ratio_{b}_over_{a}': round(float(np.median(paired_cpu)), 4), 'metrics_finite': finite,
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default=str(REPO / 'configs' / 'tiny.py'), help='config file with get_config()')
  parser.add_argument('--compare', choices=('shared_passes', 'd_update'), required=True)
  parser.add_argument('--batch', type=int, default=0, help='global batch (default config.train.batch_size)')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='', help='config.runtime.compute_dtype')
  parser.add_argument('--image-size', type=int, default=0, help='override config.image_size')
  parser.add_argument('--d-every', type=int, default=0, help='override config.train.d_every (d_update only)')
  parser.add_argument('--rounds', type=int, default=5, help='timed rounds per variant (after one warm-up round)')
  args = parser.parse_args(argv)
  try:
    result = run(args)
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  a, b = list(result['step_ms_median'])
  print(f"device: {result['devices']} x {result['device_kind']} ({result['platform']}), dtype {result['dtype']}, "
        f"{result['image_size']}x{result['image_size']}, global batch {result['batch']}, VGG: {result['vgg']}")
  for name in (a, b):
    print(f"{name:>16}: compile {result['compile_s'][name]:.1f} s, round {result['round_ms_median'][name]:.1f} ms "
          f"median of {result['rounds']} ({result['steps_per_round']} steps), "
          f"{result['step_ms_median'][name]:.1f} ms per step")
  print(f"{b} / {a}: {result[f'ratio_{b}_over_{a}']:.3f} (median over rounds of the time ratio within a round; "
        f"per round: {result['ratio_per_round']}); CPU time (all threads) {result[f'cpu_ratio_{b}_over_{a}']:.3f}")
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
