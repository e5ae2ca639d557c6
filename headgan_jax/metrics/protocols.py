"""Evaluation protocols of the paper (Sec. 4.2-4.3) as functions of arrays, for evaluate.py and the training loop.

- Self-reenactment: the reference is the first frame of a test clip, every frame of the same clip drives the
  generator, and the clip itself is the ground truth (the paper's comparison with FOMM). All metrics apply.
- Cross-identity reenactment: the reference comes from one test identity, the driving clip from another. There is
  no ground truth: CSIM is taken against the reference, AED / APD against the driver, FID / FVD against the real
  driving frames; L1 / PSNR / SSIM do not apply (the image evaluator says so in the results).

Each `*_batch` function builds the evaluators' batch dict from arrays (the data plumbing - reading the test split,
tracking, running the generator - is the caller's); `run` streams batches through the evaluators.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from headgan_jax.errors import MetricInputError
from headgan_jax.metrics import evaluators as ev_lib

PROTOCOLS = ('self', 'cross')


def self_reenactment_batch(video, generated, *, face_mask=None, mouth_mask=None, exp_generated=None, exp_driving=None,
                           camera_generated=None, camera_driving=None) -> dict[str, Any]:
  """Batch of the self-reenactment protocol.

  Args:
    video: (B, T, H, W, 3) real test clips: frame 0 is the reference, every frame drives and is the ground truth.
    generated: (B, T, H, W, 3) the generator's frames for those drivers, with video[:, 0] as reference.
    face_mask: optional (B, T, H, W) face region (from the 3D-face images x_t) for the masked image metrics.
    mouth_mask: optional (B, T, H, W) mouth box of each frame (face3d.mouth.box_mask) for the mouth image metrics.
    exp_*, camera_*: tracked expression coefficients (B, T, K) and cameras of generated and driving frames.
  """
  video = np.asarray(video) if not hasattr(video, 'shape') else video
  batch = {'generated': generated, 'target': video, 'driving': video, 'reference': video[:, 0],
           'face_mask': face_mask, 'mouth_mask': mouth_mask, 'exp_generated': exp_generated,
           'exp_driving': exp_driving, 'camera_generated': camera_generated, 'camera_driving': camera_driving}
  ev_lib.check_batch(batch)
  return batch


def cross_reenactment_batch(reference, driving, generated, *, exp_generated=None, exp_driving=None,
                            camera_generated=None, camera_driving=None) -> dict[str, Any]:
  """Batch of the cross-identity protocol: reference (B, H, W, 3) of one identity, driving (B, T, H, W, 3) clips of
  another, generated (B, T, H, W, 3). No ground truth."""
  batch = {'generated': generated, 'target': None, 'driving': driving, 'reference': reference,
           'face_mask': None, 'mouth_mask': None, 'exp_generated': exp_generated, 'exp_driving': exp_driving,
           'camera_generated': camera_generated, 'camera_driving': camera_driving}
  ev_lib.check_batch(batch)
  return batch


def cross_pairs(identities: Sequence[str], seed: int = 0) -> list[tuple[int, int]]:
  """(reference clip, driving clip) index pairs for cross-identity reenactment: every clip drives once, with the
  reference from a clip of another identity, chosen at random (seeded) among them.

  Raises MetricInputError when fewer than two identities are given.
  """
  ids = np.asarray(list(identities))
  if len(set(ids.tolist())) < 2:
    raise MetricInputError(f'cross-identity reenactment needs clips of at least 2 identities, got {sorted(set(ids))}')
  rng = np.random.default_rng(seed)
  pairs = []
  for d in range(len(ids)):
    others = np.flatnonzero(ids != ids[d])
    pairs.append((int(rng.choice(others)), d))
  return pairs


def run(evaluators: Mapping[str, ev_lib.Evaluator], batches: Iterable[Mapping[str, Any]],
        progress: Any = None) -> dict[str, dict]:
  """Streams every batch through every evaluator; returns `evaluators.results(...)`.

  `progress`, when given, is called with the number of clips of each batch (e.g. a tqdm bar's update).
  """
  for batch in batches:
    for ev in evaluators.values():
      ev.update(batch)
    if progress is not None:
      progress(int(np.shape(batch['generated'])[0]))
  return ev_lib.results(evaluators)


def evaluate(evals_cfg, protocol_batches: Mapping[str, Iterable[Mapping[str, Any]]],
             progress: Any = None) -> dict[str, dict]:
  """{protocol: results} with fresh evaluators from `config.evals` for each protocol (self, cross)."""
  out = {}
  for protocol, batches in protocol_batches.items():
    if protocol not in PROTOCOLS:
      raise MetricInputError(f'unknown protocol {protocol!r}; known: {PROTOCOLS}')
    out[protocol] = run(ev_lib.from_config(evals_cfg), batches, progress)
  return out
