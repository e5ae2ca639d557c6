"""headgan-train / train.py, training HeadGAN (headgan_jax/train/loop.py): flags, the config (with overrides),
multi-host start-up, exit statuses.

  python train.py --config configs/tiny.py --workdir /tmp/headgan                    # synthetic data, 100 steps
  python train.py --config configs/tiny.py --workdir /tmp/headgan --config.train.num_steps=20
  python train.py --config configs/paper.py:ablation=no_flow --workdir gs://bucket/run --config.train.batch_size=12

Any config field can be overridden with --config.<field>=<value> (ml_collections config_flags). A config file may
take an argument after ':' (configs/paper.py: ablation=full|no_flow|no_audio|landmarks, Table 1's rows).

Several hosts: start the same command on every host.
  --multihost                          jax.distributed.initialize() finds its peers itself: Cloud TPU pod slices,
                                       SLURM (srun), Open MPI (mpirun), Kubernetes JobSets.
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I
                                       anywhere else (e.g. GPU machines started by hand or by another scheduler).

Exit status: 0 finished; 2 bad configuration or input, a NaN / inf loss, no whole checkpoint to resume from,
another live run training in the same work folder (one message naming it: pid, host, start time; no traceback), or a
write that failed for lack of space (one message naming the folder, the cause and the checkpoint to resume from);
128 + signal number (143 SIGTERM, 130 SIGINT) when a signal stopped it after writing a checkpoint: run the same
command again to resume.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from absl import flags

from headgan_jax import commands, compilation_cache, config_files
from headgan_jax.commands import parsing
from headgan_jax.errors import ConfigError, HeadGANError


def _config_argument(argv: list[str]) -> str | None:
  """The value of --config in argv (either '--config X' or '--config=X'), or None."""
  for i, arg in enumerate(argv):
    for prefix in ('--config=', '-config='):
      if arg.startswith(prefix):
        return arg[len(prefix):]
    if arg in ('--config', '-config') and i + 1 < len(argv):
      return argv[i + 1]
  return None


def parse(argv: list[str]):
  """(config with overrides applied, flag values) from argv (argv[0] is the program). The config comes from
  config_files.load (a file path.py[:arg] or a saved config.json) and its --config.<field>=<value> overrides from
  config_files.override (ml_collections config_flags), as for every other command."""
  fv = flags.FlagValues()
  flags.DEFINE_string('config', None, 'config file path.py[:arg] (the argument after ":" goes to its get_config), or '
                      'a saved config.json; --config.<field>=<value> overrides a field', flag_values=fv)
  flags.DEFINE_string('workdir', '', 'work folder: config.json, checkpoints/, tensorboard/ (default '
                      'config.train.workdir)', flag_values=fv)
  flags.DEFINE_bool('progress', True, 'progress bar on the console', flag_values=fv)
  flags.DEFINE_bool('multihost', False, 'jax.distributed.initialize() with the cluster found automatically '
                    '(TPU pod slice, SLURM, Open MPI, Kubernetes)', flag_values=fv)
  flags.DEFINE_string('coordinator_address', '', 'HOST:PORT of process 0, for a multi-host run started by hand',
                      flag_values=fv)
  flags.DEFINE_integer('num_processes', 0, 'processes in a multi-host run started by hand', flag_values=fv)
  flags.DEFINE_integer('process_id', -1, 'this process in a multi-host run started by hand', flag_values=fv)
  if any(a in ('-h', '--help', '-help', '--helpfull') for a in argv[1:]):
    print(__doc__ + '\nFlags:\n' + parsing.help_text(fv), file=sys.stderr)
    raise SystemExit(0)
  spec = _config_argument(argv)
  if spec is None:
    raise ConfigError('--config is required, e.g. --config configs/tiny.py')
  overrides, argv = config_files.split_overrides(argv)
  config = config_files.override(config_files.load(spec), overrides, spec)
  try:
    rest = fv(argv)
  except flags.Error as e:
    raise ConfigError(str(e).splitlines()[0]) from e
  if len(rest) > 1:
    raise ConfigError(f'unexpected arguments {rest[1:]}')
  return config, fv


def initialize_distributed(fv) -> None:
  """jax.distributed.initialize() when the flags ask for several hosts; a no-op otherwise."""
  manual = bool(fv.coordinator_address)
  if not (fv.multihost or manual):
    return
  import jax  # pylint: disable=import-outside-toplevel
  if manual:
    if fv.num_processes < 1 or not 0 <= fv.process_id < fv.num_processes:
      raise ConfigError(f'--coordinator_address needs --num_processes >= 1 and 0 <= --process_id < num_processes '
                        f'(got {fv.num_processes} and {fv.process_id})')
    jax.distributed.initialize(fv.coordinator_address, fv.num_processes, fv.process_id)
  else:
    jax.distributed.initialize()


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  try:
    config, fv = parse(argv)
    initialize_distributed(fv)
    import jax  # pylint: disable=import-outside-toplevel
    if jax.process_count() == 1:
      # ~/.cache/headgan-jax/xla or $HEADGAN_JAX_COMPILATION_CACHE ('off': none). Single-process runs only: on
      # XLA:CPU, two processes whose train step came from the cache hung in their first cross-process collective
      # (tests/test_train_loop.py's two-process run; with the cache off it finishes in a minute).
      compilation_cache.enable()
    from headgan_jax.train import loop  # pylint: disable=import-outside-toplevel
    workdir = fv.workdir or config.train.workdir
    loop.refuse_if_busy(workdir)  # At once, before anything is built; Trainer.run holds the lock itself.
    trainer = loop.Trainer.create(config)
    start = time.perf_counter()
    result = trainer.run(workdir, progress=fv.progress)
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if jax.process_index() == 0:
    where = os.path.join(workdir, loop.CHECKPOINT_DIR)
    if result.stopped_by:
      print(f'stopped by {result.stopped_by} at step {result.step}; checkpoint in {where}. Run the same command to '
            'resume.', file=sys.stderr)
    else:
      print(f'done: step {result.step} in {time.perf_counter() - start:.1f} s, checkpoints in {where}, TensorBoard '
            f'logs in {os.path.join(workdir, loop.TENSORBOARD_DIR)}')
  if result.stopped_by:
    return 128 + int(signal.Signals[result.stopped_by])
  return 0


if __name__ == '__main__':
  sys.exit(commands.start('train'))
