"""No dead config field: every leaf of configs/paper.py's config is read by the code it configures (issue 19, item 6).

test_every_paper_leaf_is_read records which config leaves are read (tests/config_reads.py: look-ups on the run's
config, its copies and its config.json; serialising a config, cache keys and validity checks do not count) while
  - train.py's command line (headgan_jax/commands/train.py, with no --workdir: config.train.workdir) builds the model and
    runs ONE training step on the demo build of conftest.py (the real input pipeline: grain, the device-side
    assembly), with an image grid, one in-loop evaluation and a checkpoint, and
  - evaluate.py (headgan_jax/evaluate.py) restores G from that checkpoint and runs both protocols on the
    test split with every evaluator of config.evals (Generator, protocol batches, the tracker for AED / APD),
on a tiny config made from configs/tiny.py (16 px; every network, loss and data path of the paper's config). It fails
naming every leaf of configs/paper.py's config that nothing read, except those on ALLOWED: leaves read only by other
commands (the dataset builders, reenact.py) or only once a weight file that is not available offline is given. Each
of those must still be read somewhere in the source tree (a token-level search, comments and docstrings left out),
so the allow-list cannot hide a dead field.

test_ablation_changes_the_first_batch_or_losses: each row of Table 1 (configs/paper.py ABLATIONS) applied to the same
tiny config must change the first batch of the demo pipeline or the first train step's losses against the full
model (same seed), and its own fields must be read; 'full' reproduces the full model's batch and losses exactly, so
that "differs" means something.

The ablation cases reuse the recorded run's trainer (the full model) when it ran in the same process.
Runs with and without pytest-xdist (`-p no:xdist`: this module supplies xdist's `worker_id` for demo_build).
"""
from __future__ import annotations

import contextlib
import io
import json
import pathlib
import sys
import tokenize

import jax
import numpy as np
import pytest

import config_reads
from configs import paper, tiny

REPO = pathlib.Path(__file__).resolve().parents[1]

# Leaves of configs/paper.py that training, in-loop evaluation and evaluate.py do not read, and who reads them. The test
# checks that each is a leaf of the config and is read somewhere under SOURCE_ROOTS. Keep it short: a leaf belongs
# here only when the command that reads it is not one the test runs, and it changes what that command does.
_BUILD = 'the dataset builders (python -m headgan_jax.data.build, datasets/headgan_*)'
_AUDIO = 'audio/features.py + audio/asr.py: h^(a) of a clip, computed by ' + _BUILD + ' and by reenact.py'
_TRACK = 'tracking/track.py Tracker: whole videos, by ' + _BUILD + ' and reenact.py (evaluate.py fits frames only)'
ALLOWED: dict[str, str] = {
    'data.cache_dir': 'data/build.py: the per-clip cache of ' + _BUILD,
    'data.manual_dir': "data/build.py: headgan_voxceleb's mp4 tree",
    'data.demo_dir': 'data/build.py, data/building.py, main_job.py: the clips of headgan_demo',
    'data.demo_test_identity': 'datasets/headgan_demo builder (the held-out identity), main_job.py',
    'data.test_fraction': 'datasets/headgan_demo builder (held-out frames of the training identities)',
    'data.min_sequence_length': 'data/building.py: cutting clips into records, by ' + _BUILD,
    'data.jpeg_quality': 'data/clips.py: crops stored as JPEG, by ' + _BUILD,
    'train.sequence_length': 'data/building.py: records of this many frames, by ' + _BUILD,
    'audio.window_half': _AUDIO,
    'audio.sample_rate': _AUDIO,
    'audio.asr_backend': _AUDIO,
    'audio.asr_model': _AUDIO + " (asr_backend 'deepspeech' only)",
    'audio.lowlevel_offset': _AUDIO + ' (the low-level window moved ahead of frame t)',
    'audio.chars_offset': _AUDIO + ' (the character stream moved ahead before the window)',
    'data.keep_short_tails': 'data/building.py: cutting clips into records, by ' + _BUILD,
    'track.chunk_frames': _TRACK + ' (streaming a long video)',
    'track.min_frames': _TRACK,
    'track.masks': _TRACK + ' (the person masks the builders store)',
    # Read once a weight file is given; none is available offline, so the test runs without them.
    'loss.vgg_weights': "nn/vgg.py vgg19_from_config when loss.use_vgg (torchvision's VGG19 file; tests/test_vgg.py)",
    'loss.vgg_sha256': "nn/vgg.py vgg19_from_config when loss.use_vgg (torchvision's VGG19 file; tests/test_vgg.py)",
    'evals.csim.arcface_model': "metrics/csim.py and evaluators/csim.py when embedder = 'arcface' (insightface .onnx)",
    'evals.fid.sha256_prefix': "metrics/evaluators/fid.py once inception_weights is set (pytorch-fid's file)",
    'evals.fid.real': "metrics/evaluators/fid.py once inception_weights is set (pytorch-fid's file)",
    'evals.fid.real_stats': "metrics/evaluators/fid.py once inception_weights is set (pytorch-fid's file)",
    'evals.fid.batch_size': "metrics/evaluators/fid.py once inception_weights is set (pytorch-fid's file)",
}

# Where allow-listed leaves must be read: the package, the TFDS builders and the top-level commands (not configs/,
# which only sets fields, nor tests/).
SOURCE_ROOTS = ('headgan_jax', 'datasets', 'train.py', 'evaluate.py', 'reenact.py')

STEPS = 1
CURRENT: dict = {}  # The config that the recorded run's config file returns.
_FULL: dict = {}  # The full model's trainer and (first batch, first losses), once made in this process.


# --- Configs -----------------------------------------------------------------------------------------------------


def small_config(ablation: str, data_config):
  """configs/tiny.py:ablation=<ablation> at 16 px, one down level, one-scale two-layer discriminators, batch 2, on
  the demo build of conftest.py (stored at 64 px, downsampled on the device): every network, loss and data path of
  the paper's config, compiled in seconds. Only sizes and the data location differ from the ablation's config."""
  c = tiny.get_config(f'ablation={ablation}')
  c.image_size = 16
  c.model.num_down = 1
  c.model.blocks.spade_hidden = 8
  c.model.flow_low_blocks = 1
  c.disc.num_scales = 1
  c.disc.num_layers = 2
  c.disc.ndf = 4
  c.disc.max_channels = 16
  c.disc.mouth_size = 8
  c.train.batch_size = 2
  # The demo build's settings (the builders read them; the pipeline must see the same dataset). Not the conditioning
  # image: the pipeline draws it (the landmarks row of Table 1 sets it).
  for field in data_config.data:
    if field != 'conditioning':
      c.data[field] = data_config.data[field]
  c.train.sequence_length = data_config.train.sequence_length
  c.data.source = 'headgan_demo'
  c.data.stored_size = 64
  c.track.fit_bucket = 16  # evaluate.py tracks clips of <= 6 frames for AED: pad the fit to 16 frames, not 64.
  return c


def recorded_run_config(data_config, workdir: pathlib.Path):
  """The full model's small config, set up for one step with everything the loop does."""
  c = small_config('full', data_config)
  t = c.train
  t.num_steps = STEPS
  t.log_every = t.checkpoint_every = t.image_every = 1
  t.workdir = str(workdir)  # train.py without --workdir: its default is this field.
  c.evals.image.every = 1  # In the loop: the image metrics on one held-out batch after the step.
  c.evals.image.num_batches = 1
  c.evals.fvd.size = 32  # evaluate.py: I3D on 32 px clips of 4 frames (the test clips have 4-6 frames).
  c.evals.fvd.clip_length = 4
  c.evals.fvd.batch_size = 2
  return c


@pytest.fixture(scope='session')
def worker_id(request):
  """pytest-xdist's own `worker_id` (the worker's name, 'master' in the main process), also when xdist is off
  (`-p no:xdist`), where conftest.py's demo_build would not find it."""
  return getattr(request.config, 'workerinput', {}).get('workerid', 'master')


# --- Recording ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def recording(recorder: config_reads.ReadRecorder):
  """recorder.recording(), with the project's two caches of config-derived functions made harmless:
  - pipeline.assemble_settings picks fields into a cache key (JSON); `assemble` then reads them from the config rebuilt
    from that JSON (tracked by the recorder as a copy). The key is not a use: its reads do not count, so a field put
    into the key that `assemble` ignores shows as dead.
  - lru_caches of the data modules (the compiled `assemble` per key) are cleared: a hit left by an earlier test in
    this process would skip `assemble`'s reads."""
  from headgan_jax.data import pipeline, sources
  for module in (pipeline, sources):
    for value in vars(module).values():
      if callable(getattr(value, 'cache_clear', None)):
        value.cache_clear()
  with pytest.MonkeyPatch.context() as patches:
    if hasattr(pipeline, 'assemble_settings'):
      patches.setattr(pipeline, 'assemble_settings', recorder.pausing(pipeline.assemble_settings))
    with recorder.recording():
      yield recorder


def _quiet(fn, *args):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = fn(*args)
  return code, out.getvalue(), err.getvalue()


def first_batch_and_losses(trainer):
  """(the first batch's fields as numpy, the first step's metrics as floats) of a fresh pipeline and a fresh state."""
  from headgan_jax.data import pipeline, sources
  iterator = sources.make_train_iterator(trainer.config, trainer.mesh)
  fields = iterator.next_fields()
  state = trainer.init_state()
  _, metrics = trainer.train_step(state, pipeline.to_batch(fields), trainer.vgg_params, step=0)
  return ({k: np.asarray(v) for k, v in fields.items()},
          {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()})


@pytest.fixture(scope='module')
def recorded(demo_build, tmp_path_factory):
  """The recorded run (see the module docstring): {'recorder', 'eval'}; its trainer is kept in _FULL."""
  from headgan_jax.commands import evaluate, train as cli
  from headgan_jax.train import loop
  folder = tmp_path_factory.mktemp('config_fields')
  workdir = folder / 'run'
  config = recorded_run_config(demo_build[0], workdir)
  config_file = folder / 'config_fields_run.py'
  config_file.write_text('import test_config_fields\n\n\ndef get_config():\n'
                         '  return test_config_fields.CURRENT["config"]\n')
  recorder = config_reads.ReadRecorder()
  recorder.track(config)
  created = {}
  create = loop.Trainer.create

  def create_on_one_device(cfg, **kwargs):  # One device: the cheapest compile; the mesh code is the same.
    created['trainer'] = create(cfg, devices=jax.devices()[:1], **kwargs)
    return created['trainer']

  CURRENT['config'] = config
  try:
    with pytest.MonkeyPatch.context() as patches, recording(recorder):
      patches.setattr(loop.Trainer, 'create', staticmethod(create_on_one_device))
      code, _, err = _quiet(cli.main, ['train.py', '--config', str(config_file), '--noprogress'])
      assert code == 0, err[-3000:]
      # evaluate.py reads WORKDIR/config.json: a new ConfigDict, which the recorder adopts as the run's config.
      code, _, err = _quiet(evaluate.main, ['--workdir', str(workdir), '--out', str(folder / 'eval.json'),
                                            '--max_clips', '3', '--max_frames', '6', '--track_size', '128',
                                            '--no_progress'])
      assert code == 0, err[-3000:]
  finally:
    CURRENT.clear()
  _FULL.setdefault('trainer', created['trainer'])
  return {'recorder': recorder, 'eval': json.loads((folder / 'eval.json').read_text())}


@pytest.fixture(scope='module')
def full_model(demo_build):
  """(trainer, (first batch, first losses)) of the full model's small config: the recorded run's trainer when it ran
  in this process (the tests run in file order), else a new one (under pytest-xdist the ablation cases may run in
  another worker; its compiled step then usually comes from the persistent compilation cache)."""
  from headgan_jax.train import loop
  if 'trainer' not in _FULL:
    _FULL['trainer'] = loop.Trainer.create(small_config('full', demo_build[0]), devices=jax.devices()[:1])
  if 'first' not in _FULL:
    _FULL['first'] = first_batch_and_losses(_FULL['trainer'])
  return _FULL['trainer'], _FULL['first']


# --- The recorder's rules (fast) -----------------------------------------------------------------------------------


def check_like_the_pipeline(config):  # A validity check: its reads go to `checked`.
  return config.data.conditioning in ('face3d', 'landmarks')


def test_recorder_counts_uses_not_serialising_checks_or_cache_keys():
  import ml_collections
  config = paper.get_config()
  recorder = config_reads.ReadRecorder()
  recorder.track(config)
  with recorder.recording():
    assert config.model.ngf == 32 and config['train']['lr'] == 2e-4 and config['disc.ndf'] == 64
    assert config.get('seed') == 0 and config.evals.fid.get('every', 1) == 0 and config.get('nope', 1) == 1
    _ = config.model  # A section is not a leaf.
    config.to_json_best_effort(), config.to_dict(), str(config), repr(config), config == config
    assert check_like_the_pipeline(config)
    with recorder.paused():
      _ = config.loss.temp
    copy = config.copy_and_resolve_references()
    assert copy.face3d.id_bound == 0.8
    frozen = ml_collections.FrozenConfigDict(config)
    hash(frozen)
    assert frozen.loss.l1 == 50.0 and frozen.as_configdict().audio.window_half == 4
    assert ml_collections.ConfigDict(config).track.nms_iou == 0.3
    rebuilt = ml_collections.ConfigDict(json.loads(config.to_json()))  # config.json: adopted, same paths.
    assert rebuilt.data.prefetch == 2
    key = ml_collections.ConfigDict({'image_size': 64, 'model': {'ngf': 1}})  # Part of the config: adopted.
    assert key.image_size == 64
    spec = ml_collections.ConfigDict({'every': 3, 'model': {'zzz': 1}})  # Not the config's shape: not tracked.
    assert spec.every == 3 and spec.model.zzz == 1
  assert recorder.reads == {'model.ngf', 'train.lr', 'disc.ndf', 'seed', 'evals.fid.every', 'face3d.id_bound',
                            'loss.l1', 'audio.window_half', 'track.nms_iou', 'data.prefetch', 'image_size'}
  assert recorder.checked == {'data.conditioning'}
  assert any('test_config_fields.py' in site for site in recorder.where['model.ngf'])
  assert config.model.blocks.lrelu_slope == 0.2  # Unpatched after the block:
  assert 'model.blocks.lrelu_slope' not in recorder.reads


def test_source_search_skips_comments_docstrings_and_assignments(tmp_path, monkeypatch):
  (tmp_path / 'pkg').mkdir()
  (tmp_path / 'pkg' / 'm.py').write_text(
      '"""config.data.in_docstring"""\n# config.data.in_comment\nc.data.assigned = 1\n'
      'x = c.data.attribute_read + c.get(\'quoted\', 0)\nmsg = f\'{c.data.attribute_in_fstring} ok\'\n'
      'raise ValueError(\'config.data.in_message is wrong\')\nif c.data.compared == 1: pass\n')
  monkeypatch.setattr(sys.modules[__name__], 'REPO', tmp_path)
  monkeypatch.setattr(sys.modules[__name__], 'SOURCE_ROOTS', ('pkg',))
  found = reads_in_source(source_tokens())
  assert {'attribute_read', 'quoted', 'compared'} <= found
  assert not {'in_docstring', 'in_comment', 'assigned', 'in_message'} & found


# --- Dead leaves -------------------------------------------------------------------------------------------------


def allowed_leaves(all_leaves) -> dict[str, str]:
  """Leaf -> reader for every ALLOWED entry; AssertionError for an entry that is not a leaf of the config."""
  unknown = sorted(set(ALLOWED) - set(all_leaves))
  assert not unknown, f'ALLOWED names leaves that configs/paper.py does not have (remove them): {unknown}'
  return dict(ALLOWED)


def source_tokens() -> list[tuple[int, str]]:
  """(type, string) of the tokens of every .py file under SOURCE_ROOTS, without comments, and with every string
  except those that are exactly an identifier ('name' in a .get('name') or spec['name']) dropped: docstrings and
  messages that mention a field do not read it."""
  out = []
  for root in SOURCE_ROOTS:
    path = REPO / root
    for file in (sorted(path.rglob('*.py')) if path.is_dir() else [path]):
      with tokenize.open(file) as f:
        for tok in tokenize.generate_tokens(f.readline):
          if tok.type == tokenize.COMMENT:
            continue
          if tok.type == tokenize.STRING:
            text = tok.string
            if not (len(text) > 2 and text[0] == text[-1] and text[0] in '\'"' and text[1:-1].isidentifier()):
              continue
          out.append((tok.type, tok.string))
  return out


def reads_in_source(tokens: list[tuple[int, str]]) -> set[str]:
  """Every field name the source reads: `.<name>` not followed by an assignment, or the string '<name>'."""
  names = set()
  for i, (kind, text) in enumerate(tokens):
    if kind == tokenize.STRING:
      names.add(text[1:-1])
    elif kind == tokenize.NAME and i and tokens[i - 1][1] == '.':
      following = tokens[i + 1][1] if i + 1 < len(tokens) else ''
      if following != '=':  # `x.name = 1` sets it; `==`, `+=`, calls and other uses read it.
        names.add(text)
  return names


@pytest.mark.slow
def test_every_paper_leaf_is_read(recorded):
  all_leaves = config_reads.leaves(paper.get_config())
  recorder = recorded['recorder']
  allowed = allowed_leaves(all_leaves)
  in_source = reads_in_source(source_tokens())
  not_in_source = sorted(leaf for leaf in allowed if leaf.rsplit('.', 1)[-1] not in in_source)
  assert not not_in_source, (f'allow-listed leaves that no code under {", ".join(SOURCE_ROOTS)} reads (dead: delete '
                             f'them from configs/paper.py, or wire them in): {not_in_source}')
  dead = sorted(leaf for leaf in all_leaves if leaf not in recorder.reads and leaf not in allowed)

  def why(leaf):
    if leaf in recorder.checked:
      return f'{leaf}  (only validity checks read it: {", ".join(sorted(recorder.where[leaf]))})'
    return leaf

  assert not dead, ('leaves of configs/paper.py that neither training (model, train step, input pipeline, in-loop '
                    'evaluation) nor evaluate.py read, and that no command on ALLOWED reads: wire each in, or delete '
                    'it:\n  ' + '\n  '.join(why(leaf) for leaf in dead))
  assert recorded['eval']['meta']['checkpoint_step'] == STEPS  # The run did what it claims.


# --- Ablations ---------------------------------------------------------------------------------------------------


def differs(a: dict, b: dict, rtol: float = 1e-4, atol: float = 1e-6) -> list[str]:
  """The keys whose values differ beyond float noise (or in shape)."""
  out = []
  for k in sorted(set(a) | set(b)):
    x, y = np.asarray(a.get(k, np.nan)), np.asarray(b.get(k, np.nan))
    if x.shape != y.shape or not np.allclose(x, y, rtol=rtol, atol=atol):
      out.append(k)
  return out


NOT_LOSSES = ('lr', 'd_updated')  # Metrics of the step that are not losses (the same for every row).


@pytest.mark.slow
@pytest.mark.parametrize('ablation', list(paper.ABLATIONS))
def test_ablation_changes_the_first_batch_or_losses(full_model, demo_build, ablation):
  from headgan_jax.train import loop
  full_trainer, (full_batch, full_losses) = full_model
  config = small_config(ablation, demo_build[0])
  changed = paper.ABLATIONS[ablation]
  base = config_reads.leaves(small_config('full', demo_build[0]))
  differing = {k for k, v in config_reads.leaves(config).items() if base.get(k) != v} - {'variant'}
  assert differing == set(changed), (differing, changed)  # The ablation's fields, and nothing else.

  if ablation == 'full':  # Same seed: the same batch and the same losses again, exactly.
    batch, losses = first_batch_and_losses(full_trainer)
    assert not differs(batch, full_batch, 0, 0) and not differs(losses, full_losses, 0, 0)
    return

  recorder = config_reads.ReadRecorder()
  recorder.track(config)
  with recording(recorder):
    trainer = loop.Trainer.create(config, devices=jax.devices()[:1])
    batch, losses = first_batch_and_losses(trainer)
  for path in changed:  # The ablation's own fields are read (by the model, the step or the pipeline).
    assert path in recorder.reads, (f'ablation={ablation}: config.{path} is never read'
                                    + (' (only by validity checks)' if path in recorder.checked else ''))
  assert all(np.isfinite(v) for v in losses.values()), losses
  batch_changed = differs(batch, full_batch)
  loss_changed = [k for k in differs(losses, full_losses) if k not in NOT_LOSSES]
  assert batch_changed or loss_changed, (
      f'ablation={ablation} ({changed}) trains exactly what the full model trains: the first batch and the first '
      f'step\'s losses equal the full model\'s ({full_losses})')
