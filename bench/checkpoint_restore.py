"""Restoring a checkpoint for evaluation: G alone (workdir.py, what evaluate.py does now) vs the whole
train state through a Trainer (what evaluate.py did before: Trainer.create, then G, D, D_m and the three Adam
states read back), on a checkpoint this script writes (the config's fresh state saved as step 1).

  python bench/checkpoint_restore.py [--config configs/tiny.py] [--repeats 5]

Both paths run in this one process, interleaved, --repeats times each (after one untimed round of each); the
figures are medians in seconds and their ratio. Prints figures, ends with one JSON line. On a shared machine
timings are noisy: compare figures from one run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np



def write_checkpoint(config, workdir: str) -> None:
  """WORKDIR/config.json and checkpoint 1 holding the config's fresh train state (the loop's layout)."""
  import jax
  import orbax.checkpoint as ocp
  from headgan_jax.train import loop
  trainer = loop.Trainer.create(config, devices=jax.devices()[:1])
  loop.save_or_check_config(config, workdir)
  with trainer.checkpoint_manager(workdir) as manager:
    manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(trainer.init_state()),
                                            data=ocp.args.JsonSave({'process_count': 1, 'iterator_states': [{}]})))
    manager.wait_until_finished()


def whole_state(config, workdir: str):
  """evaluate.py's restore before workdir.py: a Trainer for the config, the whole state read back."""
  import jax
  from headgan_jax.train import loop
  eval_config = config.copy_and_resolve_references()
  eval_config.loss.use_vgg = False
  eval_config.train.steps_per_epoch = eval_config.train.steps_per_epoch or 1
  trainer = loop.Trainer.create(eval_config, devices=jax.devices()[:1])
  state, _ = trainer.restore(workdir)
  return jax.block_until_ready(state)


def g_alone(config, workdir: str):
  import jax
  from headgan_jax import evaluate
  return jax.block_until_ready(evaluate.restore_generator(config, workdir, None).variables)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--config', default='configs/tiny.py')
  ap.add_argument('--repeats', type=int, default=5)
  args = ap.parse_args(argv)
  import jax
  from headgan_jax import config_files
  config = config_files.load(args.config)
  with tempfile.TemporaryDirectory() as tmp:
    write_checkpoint(config, tmp)
    whole, g = whole_state(config, tmp), g_alone(config, tmp)  # Untimed: imports and first traces.
    nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))  # noqa: E731
    sizes = {'whole_state_mb': nbytes(whole) / 2**20, 'g_alone_mb': nbytes(g) / 2**20}
    times: dict[str, list[float]] = {'whole_state_s': [], 'g_alone_s': []}
    for _ in range(args.repeats):
      for name, fn in (('whole_state_s', whole_state), ('g_alone_s', g_alone)):
        start = time.perf_counter()
        fn(config, tmp)
        times[name].append(time.perf_counter() - start)
  med = {k: float(np.median(v)) for k, v in times.items()}
  result = {'config': args.config, 'repeats': args.repeats, **{k: round(v, 3) for k, v in med.items()},
            'ratio_whole_over_g': round(med['whole_state_s'] / med['g_alone_s'], 2),
            **{k: round(v, 2) for k, v in sizes.items()}}
  print(f"restore for evaluation ({args.config}, median of {args.repeats}, one process):\n"
        f"  whole train state through a Trainer (before): {med['whole_state_s']:.3f} s "
        f"({sizes['whole_state_mb']:.2f} MB)\n"
        f"  G alone, workdir.py (now):                    {med['g_alone_s']:.3f} s ({sizes['g_alone_mb']:.2f} MB)\n"
        f"  ratio: {result['ratio_whole_over_g']:.2f}x")
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
