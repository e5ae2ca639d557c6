"""headgan_voxceleb: VoxCeleb1 or VoxCeleb2 talking heads for HeadGAN, built with Apache Beam.

Reads the user's mp4 tree from --manual_dir, identity/video/clip.mp4 (VoxCeleb2's dev/mp4/... and test/mp4/...
folders, or one VoxCeleb1 tree whose identities id10270-id10309 are the official test set): train and test share no
identity. One clip -> 50-frame train records (test clips whole) of crops, landmarks, 3DMM coefficients, mouth boxes,
foreground masks and raw audio features; `report.jsonl`, `summary.txt`, `face_model.npz` and the train split's audio
statistics (metadata) beside them. Every clip's work is cached (one file, written atomically), so a build that is
killed and started again finishes without redoing or losing a clip.

  python -m headgan_jax.data.build voxceleb --manual_dir ~/voxceleb2 --image_size 256 --data_dir gs://B/tfds \\
      --beam_pipeline_options="runner=DataflowRunner,project=P,region=R,temp_location=gs://B/tmp,..."
"""
from __future__ import annotations

import json
import os

from etils import epath

# Loaded by file path (TFDS tooling, headgan_jax.data.build): the project is installed (scripts/setup.sh).
from headgan_jax.data import building, clips as clips_lib

_, _Base = building.builder_base()


class Builder(_Base):
  """HeadGAN on VoxCeleb: official identity splits, one example per 50-frame sequence (train) or clip (test)."""

  USE_BEAM = True
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put the VoxCeleb mp4 files (identity/video/clip.mp4) in --manual_dir: VoxCeleb2 as dev/mp4/... and test/mp4/...,
  or VoxCeleb1 as one tree of identities (id10270-id10309 become the test split). VoxCeleb needs a licence from its
  authors; nothing is downloaded.
  """

  def _split_generators(self, dl_manager, pipeline):
    import apache_beam as beam
    c = self.project_config
    items = building.list_voxceleb_clips(dl_manager.manual_dir)
    cache_root = self.cache_root()
    building.save_face_model(c, cache_root, epath.Path(self.data_dir))
    ProcessClip, AudioMoments, Counts = building.beam_transforms()
    out = (pipeline
           | 'ListClips' >> beam.Create([(clip, building.Parts(split)) for split, clip in items])
           | 'Spread' >> beam.Reshuffle()  # One clip per work item on a cluster, not one worker for all.
           | 'Process' >> beam.ParDo(ProcessClip(building.config_json(c), cache_root)).with_outputs(
               'train', 'test', 'report', 'counts'))
    self.info.metadata['audio_stats'] = (out.train | 'TrainRecords' >> beam.Values()
                                         | 'AudioStats' >> beam.CombineGlobally(AudioMoments()))
    self.info.metadata['counts'] = out.counts | 'Counts' >> beam.CombineGlobally(Counts())
    self.info.metadata['build'] = building.build_metadata(c)
    _ = (out.report | 'ReportLines' >> beam.Map(json.dumps, sort_keys=True)
         | 'Report' >> beam.io.WriteToText(os.fspath(epath.Path(self.data_dir) / 'report'), file_name_suffix='.jsonl',
                                           num_shards=1, shard_name_template=''))
    # Only splits with clips (a partial tree may have no test identity); TFDS refuses a split that ends up empty.
    splits = sorted({split for split, _ in items})
    return {split: self._generate_examples(getattr(out, split)) for split in splits}

  def _generate_examples(self, records):
    """The split's (key, record) PCollection, made in _split_generators (one pass over the clips feeds both
    splits, the statistics and the report)."""
    return records

  def download_and_prepare(self, *args, **kwargs):
    super().download_and_prepare(*args, **kwargs)
    out = epath.Path(self.data_dir)
    if not (out / 'summary.txt').exists():
      rows = [json.loads(line) for line in (out / 'report.jsonl').read_text().splitlines() if line.strip()]
      text = clips_lib.summary(rows, self.info.metadata.get('counts'))
      building.write_text(out / 'summary.txt', text + '\n')
      print(text)
