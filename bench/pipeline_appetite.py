"""The input pipeline against an accelerator's appetite (issue 21, item 5): host CPU cost per training example.

  python bench/pipeline_appetite.py --data_dir DIR [--dataset headgan_demo] [--image_size 256] \
      [--config configs/paper.py] [--examples 240] [--threads 1,2] [--num_workers 0,1,2] [--worker_threads 1]
      [--h100-rate 130]

Measures, on a built dataset (`python -m headgan_jax.data.build demo --image_size 256 --data_dir DIR`), the HOST side
of the training pipeline, i.e. what `data.pipeline.host_dataset` does per example (grain, numpy):
  shuffle grain's per-epoch index shuffle of the record index (`MapDataset.shuffle`): its cost depends on the split's
          size alone and is an artefact of small splits (milliseconds per element on a split of a few records,
          microseconds on 10^5: also timed, and used for the figure at scale);
  read    `source[i]`: the ArrayRecord read and the decoding of the whole record (all its frames' JPEG / PNG
          bytes, coefficients, landmarks, audio), as the pipeline reads one record per example (`records.FastSource`,
          float lists read as bytes; read_tfds: TFDS's own `source[i]` of the same records, for comparison);
  decode  the 4 images an example uses: JPEG crops y_t and y_ref, PNG masks of t and ref (no crop happens on the
          host: crops are stored at the build's size);
  audio   the audio window h_t, h_{t-1} (2 x 300) normalised with the dataset's statistics;
  rest    the target / reference draw and the coefficient and landmark rows of frames t-1-k..t and ref;
  batch   grain's stacking of examples into the per-process batch,
as CPU milliseconds per example on one thread (thread CPU time). The on-device part (`pipeline.assemble`: x_t of
k + 3 frames rendered from the coefficients, images scaled, mouth boxes) is EXCLUDED: it runs on the accelerator
(bench/pipeline.py times it on this CPU; bench/gpu_check.sh on a GPU).

Then the whole host dataset (batched by --batch, the per-process batch) is timed with in-process grain threads
(`grain.ReadOptions(num_threads=T)`, --threads) and as `TrainIterator` reads it with config.data.num_workers = W
(--num_workers: `pipeline.host_batches`, W = 0 in-process, W > 0 grain worker PROCESSES via `mp_prefetch`, each
reading process with --worker_threads threads): examples/s of wall time, and examples per CPU-second of all the
processes together (this one + its workers, psutil), which is the figure per host core, and the start-up (the first
2 batches: spawn + imports of the workers). The worker runs also check that they hand out the same batches as the
in-process pipeline (grain's determinism). Cores one H100 needs = --h100-rate (docs/accelerators.md section 3:
paper.py at 256 px, bf16 at 40 % of the dense peak: ~130 samples/s) / examples per core-second of the worker runs,
with the index shuffle of a split of SCALE_RECORDS records in place of this split's. The read is also timed in parts (ArrayRecord read,
tf.Example parse, float / int lists -> numpy), with the figure it would give if the numeric features (landmarks,
audio, coefficients) were stored as raw bytes (TFDS Tensor encoding 'bytes': `np.frombuffer`).

Run it under the project's CPU lock: the figures are only meaningful when nothing else runs. Prints figures, ends
with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import grain  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from headgan_jax import config_files  # noqa: E402
from headgan_jax.errors import HeadGANError  # noqa: E402

# A split of VoxCeleb2's size in records (~1 M utterances cut into 50-frame sequences is more still): grain's
# index shuffle costs milliseconds per element on a split of a few records and microseconds on a large one.
SCALE_RECORDS = 100_000


def _thread_ms(fn, items) -> tuple[float, list]:
  """Thread CPU milliseconds per item of [fn(x) for x in items], and the results."""
  t = time.thread_time()
  out = [fn(x) for x in items]
  return 1e3 * (time.thread_time() - t) / len(items), out


def stage_costs(src, config, audio_stats, n: int, batch: int, seed: int = 0) -> dict:
  """CPU ms per example of each host stage, one thread (see the module docstring)."""
  from headgan_jax.audio import stats as stats_lib
  from headgan_jax.data import clips as clips_lib, pipeline
  sampler = pipeline.SampleExample.from_config(config, audio_stats)
  idx = [int(i) for i in np.random.default_rng(seed).integers(len(src), size=n)]
  src[idx[0]]  # Opens the file (not timed).
  read_ms, records = _thread_ms(lambda i: src[i], idx)
  tfds = getattr(src, 'source', None)  # records.FastSource: TFDS's own decoding of the same records, for comparison.
  tfds_read_ms = _thread_ms(lambda i: tfds[i], idx)[0] if tfds is not None else read_ms
  items = list(enumerate(zip(idx, records)))
  example_ms, examples = _thread_ms(lambda jr: sampler(jr[1], np.random.default_rng([seed, jr[0]])), items)

  def decode_four(jr):
    r, t = jr[1][1], int(examples[jr[0]]['t'])
    return [clips_lib.decode_image(b) for b in (r['frames'][t], r['masks'][t], r['ref_frames'][0],
                                                r['ref_masks'][0])]

  decode_ms, _ = _thread_ms(decode_four, items)
  audio_ms, _ = _thread_ms(lambda jr: stats_lib.normalise(
      np.asarray(jr[1][1]['audio'][[1, 0]], np.float32), audio_stats, str(config.audio.standardise)), items)
  groups = [examples[i:i + batch] for i in range(0, len(examples) - batch + 1, batch)]
  batch_ms, _ = _thread_ms(lambda g: {f: np.stack([e[f] for e in g]) for f in g[0]}, groups)
  batch_ms /= batch
  shuffle_ms = {n_records: _thread_ms(lambda i, d=grain.MapDataset.range(n_records).seed(seed).shuffle(): d[i],
                                      range(min(n, 200)))[0] for n_records in (len(src), SCALE_RECORDS)}
  rec = records[0]
  return dict(shuffle=shuffle_ms[len(src)], shuffle_at_scale=shuffle_ms[SCALE_RECORDS], read=read_ms,
              read_tfds=tfds_read_ms,
              decode=decode_ms, audio=audio_ms, rest=max(0.0, example_ms - decode_ms - audio_ms),
              batch=batch_ms, total=shuffle_ms[len(src)] + read_ms + example_ms + batch_ms,
              record_frames=len(rec['frames']), record_ref_frames=len(rec['ref_frames']),
              record_image_bytes=int(sum(len(b) for k in ('frames', 'masks', 'ref_frames', 'ref_masks')
                                         for b in rec[k])),
              example_host_bytes=int(sum(np.asarray(v).nbytes for k, v in examples[0].items()
                                         if k in pipeline.HOST_FIELDS)))


def read_breakdown(dataset_path: str, n: int, seed: int = 0) -> dict | None:
  """CPU ms per record of what `source[i]` does, in parts: the ArrayRecord read, the tf.Example parse, the
  conversion of its float / int lists to numpy (TFDS's Tensor features with encoding 'none', the builders' choice),
  and the same numbers taken from raw bytes instead (`np.frombuffer`: Tensor features with encoding 'bytes'). None
  when the files cannot be read this way (TFDS internals)."""
  import glob
  try:
    from array_record.python import array_record_module
    from tensorflow_datasets.proto import tf_example_pb2
  except ImportError:
    return None
  paths = sorted(glob.glob(os.path.join(dataset_path, '*-train.array_record-*')))
  if not paths:
    return None
  reader = array_record_module.ArrayRecordReader(paths[0], 'readahead_buffer_size:0')
  idx = [int(i) for i in np.random.default_rng(seed).integers(reader.num_records(), size=n)]
  read_ms, raws = _thread_ms(lambda i: reader.read([i])[0], idx)
  parse_ms, examples = _thread_ms(tf_example_pb2.Example.FromString, raws)

  def lists(ex):
    out = {}
    for k, f in ex.features.feature.items():
      kind = f.WhichOneof('kind')
      if kind == 'float_list':
        out[k] = np.array(f.float_list.value, np.float32)
      elif kind == 'int64_list':
        out[k] = np.array(f.int64_list.value, np.int64)
    return out

  lists_ms, arrays = _thread_ms(lists, examples)
  blobs = [{k: (a.tobytes(), a.dtype) for k, a in arr.items()} for arr in arrays]
  bytes_ms, _ = _thread_ms(lambda b: {k: np.frombuffer(raw, dt) for k, (raw, dt) in b.items()}, blobs)
  reader.close()
  return dict(array_record_read=read_ms, proto_parse=parse_ms, numeric_lists_to_numpy=lists_ms,
              numeric_from_bytes=bytes_ms, numeric_values=int(sum(a.size for a in arrays[0].values())),
              record_bytes=len(raws[0]))


def _cpu_seconds(proc: psutil.Process) -> float:
  """User + system CPU seconds of this process and every live child (grain's workers)."""
  total = 0.0
  for p in [proc] + proc.children(recursive=True):
    try:
      c = p.cpu_times()
      total += c.user + c.system
    except psutil.NoSuchProcess:
      pass
  return total


def time_iterator(it, batches: int, batch: int, warmup: int) -> dict:
  """Examples/s (wall) and examples per CPU-second of all processes over `batches` batches after `warmup`."""
  proc = psutil.Process()
  t = time.perf_counter()
  first = [next(it) for _ in range(warmup)]
  c0, t0 = _cpu_seconds(proc), time.perf_counter()
  for _ in range(batches):
    next(it)
  wall, cpu = time.perf_counter() - t0, _cpu_seconds(proc) - c0
  n = batches * batch
  return dict(examples_per_s=n / wall, examples_per_cpu_s=n / cpu, cpu_ms_per_example=1e3 * cpu / n,
              first=first[0], warmup_s=t0 - t)


def same_batch(a: dict, b: dict) -> bool:
  return a.keys() == b.keys() and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def run(args) -> dict:
  from headgan_jax.data import pipeline
  config = config_files.load(args.config)
  config.image_size = args.image_size
  config.data.data_dir = args.data_dir
  config.data.source = args.dataset
  ds = pipeline.open_dataset(config)
  src = ds.split('train')
  k = int(config.model.num_past_frames)
  print(f'{ds.path}: {len(src)} train records, crops {ds.stored_size} px, k = {k}, per-process batch {args.batch}')

  costs = stage_costs(src, config, ds.audio_stats, args.examples, args.batch)
  print('host CPU ms per example, one thread: ' + ', '.join(
      f'{s} {costs[s]:.2f}' for s in ('shuffle', 'read', 'read_tfds', 'decode', 'audio', 'rest', 'batch', 'total')) +
      f'  (records of {costs["record_frames"]} + {costs["record_ref_frames"]} reference frames, '
      f'{costs["record_image_bytes"] / 2**20:.2f} MiB of image bytes read per example)')

  parts = read_breakdown(ds.path, args.examples)
  if parts:
    print(f'read, in parts (CPU ms per record of {parts["record_bytes"] / 2**20:.2f} MiB): ArrayRecord '
          f'{parts["array_record_read"]:.2f}, tf.Example parse {parts["proto_parse"]:.2f}, '
          f'{parts["numeric_values"]} numbers from float / int lists to numpy {parts["numeric_lists_to_numpy"]:.2f} '
          f'(from raw bytes instead: {parts["numeric_from_bytes"]:.3f})')
  batches = max(2, args.examples // args.batch)
  runs = {}
  base = None
  for threads in args.threads:
    host = pipeline.host_dataset(src, config, 0, 1, args.batch, ds.audio_stats)
    it = iter(host.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4)))
    r = time_iterator(it, batches, args.batch, warmup=2)
    base = base or r.pop('first')
    r.pop('first', None)
    r.pop('warmup_s')
    runs[f'threads_{threads}'] = r
  for workers in args.num_workers:
    # TrainIterator's own reader (config.data.num_workers = workers), each reading process with
    # --worker_threads grain threads.
    host = pipeline.host_dataset(src, config, 0, 1, args.batch, ds.audio_stats)
    t = time.perf_counter()
    it = pipeline.host_batches(host, 0, args.worker_threads, workers, prefetch=2)
    r = time_iterator(it, batches, args.batch, warmup=2)  # Warm-up includes the workers' start (spawn + imports).
    first = r.pop('first')
    base = base or first
    r['same_batches_as_in_process'] = same_batch(first, base)
    r['start_s'] = r.pop('warmup_s')
    runs[f'num_workers_{workers}'] = r
    it.close()
    print(f'  (num_workers {workers}: {time.perf_counter() - t:.1f} s with start-up)')
  for name, r in runs.items():
    print(f'{name:10s}: {r["examples_per_s"]:7.1f} examples/s wall, {r["examples_per_cpu_s"]:7.1f} examples per '
          f'CPU-second ({r["cpu_ms_per_example"]:.2f} CPU ms per example, all processes)')

  per_core = {name: r['examples_per_cpu_s'] for name, r in runs.items()}
  worker_rates = [v for n, v in per_core.items() if n.startswith('num_workers_') and n != 'num_workers_0']
  measured = min(worker_rates) if worker_rates else min(per_core.values())
  # The same pipeline on a split of SCALE_RECORDS records: only grain's index shuffle depends on the split's size.
  at_scale = 1e3 / (1e3 / measured - costs['shuffle'] + costs['shuffle_at_scale'])
  cores = args.h100_rate / at_scale
  # What storing the numeric features as bytes would still save: records.FastSource already reads the float lists
  # as bytes (read_tfds - read of it), the rest is the int lists.
  saved = 0.0 if not parts else max(0.0, parts['numeric_lists_to_numpy'] - parts['numeric_from_bytes'] - (
      costs['read_tfds'] - costs['read']))
  as_bytes = 1e3 / (1e3 / at_scale - saved)  # Numeric features stored as bytes (Tensor encoding 'bytes').
  print(f'{measured:.1f} examples per core-second measured ('
        f'{"worker processes, IPC included" if worker_rates else "in-process threads"}); {at_scale:.1f} on a '
        f'split of {SCALE_RECORDS} records (index shuffle {costs["shuffle"]:.2f} -> {costs["shuffle_at_scale"]:.3f} ms)')
  print(f'one H100 at {args.h100_rate:.0f} samples/s needs {cores:.2f} host cores for this pipeline; 8 per host: '
        f'{8 * cores:.1f} cores')
  if parts:
    print(f'with the numeric features stored as bytes: {as_bytes:.1f} examples per core-second at scale '
          f'({args.h100_rate / as_bytes:.2f} cores per H100, {8 * args.h100_rate / as_bytes:.1f} per 8)')
  round_all = lambda d: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}  # noqa: E731
  return dict(bench='pipeline_appetite', dataset=args.dataset, dataset_path=ds.path, image_size=ds.stored_size,
              k=k, batch=args.batch, train_records=len(src), examples=args.examples,
              device_render='excluded (x_t is rendered on the accelerator: pipeline.assemble)',
              host_cpu_ms_per_example=round_all(costs), runs={n: round_all(r) for n, r in runs.items()},
              examples_per_core_s_measured=round(measured, 2), examples_per_core_s_at_scale=round(at_scale, 2),
              scale_records=SCALE_RECORDS, h100_samples_per_s=args.h100_rate,
              read_parts_cpu_ms=None if not parts else round_all(parts),
              examples_per_core_s_numeric_as_bytes=round(as_bytes, 2) if parts else None,
              host_cores_per_h100_numeric_as_bytes=round(args.h100_rate / as_bytes, 3) if parts else None,
              host_cores_per_h100=round(cores, 3), host_cores_per_8_h100=round(8 * cores, 2),
              host_cpus_here=os.cpu_count(), date=time.strftime('%Y-%m-%d %H:%M'))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data_dir', required=True, help='TFDS data dir of a built dataset')
  parser.add_argument('--dataset', default='headgan_demo', choices=('headgan_demo', 'headgan_voxceleb'))
  parser.add_argument('--image_size', type=int, default=256, help='crop size the dataset was built at')
  parser.add_argument('--config', default=str(REPO / 'configs' / 'paper.py'), help='FILE[:ARG]')
  parser.add_argument('--batch', type=int, default=6, help='per-process batch (paper: 6 per device)')
  parser.add_argument('--examples', type=int, default=240, help='examples per measurement')
  parser.add_argument('--threads', default='1,2', help="in-process grain read threads to time ('' for none)")
  parser.add_argument('--num_workers', '--workers', default='0,1,2',
                      help="config.data.num_workers values to time through pipeline.host_batches, TrainIterator's "
                      "reader (0 = in-process; '' for none)")
  parser.add_argument('--worker_threads', type=int, default=1,
                      help='grain read threads of each reading process in the --num_workers runs '
                      '(config.data.num_threads)')
  parser.add_argument('--h100-rate', type=float, default=130.0,
                      help='samples/s of one H100 (docs/accelerators.md section 3: bf16 at 40 %% of peak)')
  args = parser.parse_args(argv)
  args.threads = [int(x) for x in args.threads.split(',') if x.strip()]
  args.num_workers = [int(x) for x in args.num_workers.split(',') if x.strip()]
  if not args.threads and not args.num_workers:
    parser.error('nothing to time: --threads and --num_workers are both empty')
  try:
    result = run(args)
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
