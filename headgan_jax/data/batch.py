"""The training batch of HeadGAN, its shapes, and a synthetic source of batches for tests, benchmarks and demos.

One training example is a PAIR of consecutive frames t-1 and t of one video (self-reenactment, Section 4): all
losses of eq. 9 are taken on frame t, and frame t-1 enters only through L_F^Temp (eq. 8), which compares the warped
features h-bar^(l)_{t-1} and h-bar^(l)_t. Frame t-1 therefore needs only G's inputs (its driving volume and audio).
Both frames share the reference (y_ref, x_ref), as they do at inference. `foreground` is the target of the
authors' flow-mask loss: the union of the person's foreground in y_t and y_ref (they take it from a face-parsing
network, any class but background).

The real data pipeline (preprocessed VoxCeleb clips) is not part of this module; `synthetic_batch` makes batches of
the right shapes with learnable structure (a moving, coloured ellipse "face", which is also the "person" of the
foreground mask), deterministic in its PRNG key.
"""
from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from headgan_jax.errors import ConfigError, DataError
from headgan_jax.face3d import landmarks_image, mouth, render

CONDITIONINGS = ('face3d', 'landmarks')  # config.data.conditioning: what G sees as x (Table 1's landmarks row).


@flax.struct.dataclass
class Batch:
  """A global batch of B frame pairs (t-1, t). Images are float32 NHWC in [-1, 1].

  Attributes:
    x_drive: (B, H, W, 3(k+1)) x_{t-k:t}, the 3D-face images of frames t-k..t, oldest first, current last.
    x_drive_prev: (B, H, W, 3(k+1)) x_{t-1-k:t-1}: the same volume one frame earlier (for L_F^Temp).
    y_ref: (B, H, W, 3) the reference image of the source identity.
    x_ref: (B, H, W, 3) its 3D face.
    audio: (B, A) h_t^(a), A = config.model.audio_dim.
    audio_prev: (B, A) h_{t-1}^(a).
    y: (B, H, W, 3) the ground-truth frame y_t.
    mouth: (B, 2) int32 top-left corner (row, col) of the mouth box of frame t in y's pixels.
    foreground: (B, H, W, 1) float32 in {0, 1}: the person's foreground in y_t OR in y_ref (flow-mask target).
  """
  x_drive: jax.Array
  x_drive_prev: jax.Array
  y_ref: jax.Array
  x_ref: jax.Array
  audio: jax.Array
  audio_prev: jax.Array
  y: jax.Array
  mouth: jax.Array
  foreground: jax.Array

  @property
  def x_t(self) -> jax.Array:
    """(B, H, W, 3) x_t, the current 3D face: the last 3 channels of x_drive (not stored twice)."""
    return self.x_drive[..., -3:]

  @property
  def batch_size(self) -> int:
    return self.y.shape[0]


def batch_spec(config: ml_collections.ConfigDict, batch_size: int | None = None) -> Batch:
  """A `Batch` of jax.ShapeDtypeStruct: the shapes and dtypes a training batch must have for `config`."""
  b = config.train.batch_size if batch_size is None else batch_size
  h = w = config.image_size
  c_drive = 3 * (config.model.num_past_frames + 1)
  a = config.model.audio_dim
  f32 = jnp.float32
  s = jax.ShapeDtypeStruct
  return Batch(x_drive=s((b, h, w, c_drive), f32), x_drive_prev=s((b, h, w, c_drive), f32),
               y_ref=s((b, h, w, 3), f32), x_ref=s((b, h, w, 3), f32), audio=s((b, a), f32),
               audio_prev=s((b, a), f32), y=s((b, h, w, 3), f32), mouth=s((b, 2), jnp.int32),
               foreground=s((b, h, w, 1), f32))


def check_batch(batch: Batch, config: ml_collections.ConfigDict) -> None:
  """Raises DataError naming the field when `batch` does not have the shapes / dtypes `config` asks for."""
  spec = batch_spec(config, batch.batch_size)
  for field in dataclasses.fields(Batch):
    got, want = getattr(batch, field.name), getattr(spec, field.name)
    if tuple(got.shape) != want.shape or jnp.dtype(got.dtype) != want.dtype:
      raise DataError(f'batch field {field.name!r} has shape {tuple(got.shape)} and dtype {got.dtype}, expected '
                        f'{want.shape} {want.dtype} for config image_size={config.image_size}, '
                        f'num_past_frames={config.model.num_past_frames}, audio_dim={config.model.audio_dim}')


def mouth_box_size(config: ml_collections.ConfigDict) -> int:
  """Side in pixels of the mouth window in a frame (face3d.mouth's rule: config.disc.mouth_size at 256x256, scaled
  with the image); the window is resized to mouth_size x mouth_size for D_m."""
  return mouth.mouth_box_size(config.image_size, config.disc.mouth_size)


# --- Synthetic batches -------------------------------------------------------------------------------------------


def _ellipse_face(centre: jax.Array, radii: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
  """A stand-in 3D-face image: inside an ellipse, smooth coordinate colours in [0.05, 1]; exactly 0 outside.

  The value range is face3d.render's (every face pixel >= 0.05 per channel, background 0), so the L1 face mask
  behaves as on real data. Returns (x (H, W, 3), inside (H, W) bool); channels: u, v across the ellipse and a
  dome-shaped depth.
  """
  grid = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size * 2 - 1
  v, u = jnp.meshgrid(grid, grid, indexing='ij')
  u = (u - centre[1]) / radii[1]
  v = (v - centre[0]) / radii[0]
  r2 = u * u + v * v
  inside = r2 < 1
  depth = jnp.sqrt(jnp.clip(1 - r2, 0, 1)) * 2 - 1
  x = (jnp.clip(jnp.stack([u, v, depth], -1), -1, 1) + 1) / 2 * (1 - render.COLOUR_FLOOR) + render.COLOUR_FLOOR
  return jnp.where(inside[..., None], x, 0.0), inside


def _ellipse_landmarks(centre: jax.Array, radii: jax.Array, size: int) -> jax.Array:
  """The "landmarks" conditioning of the synthetic face (Table 1's landmarks row): 3 rings of 24 points (the
  ellipse's outline and two inner ones) drawn as `face3d.landmarks_image` draws tracked landmarks."""
  angle = jnp.arange(24, dtype=jnp.float32) * (2 * jnp.pi / 24)
  ring = jnp.asarray([1.0, 0.6, 0.3])[:, None]
  rows = centre[0] + radii[0] * ring * jnp.sin(angle)[None]
  cols = centre[1] + radii[1] * ring * jnp.cos(angle)[None]
  points = (jnp.stack([cols, rows], -1).reshape(-1, 2) + 1) / 2 * size  # (x, y) pixels
  return landmarks_image.draw_landmarks(points, size, size)


def _appearance(x: jax.Array, inside: jax.Array, colour: jax.Array, background: jax.Array, size: int) -> jax.Array:
  """A frame y of the identity (colour (3, 3) mixing, background (3,)) whose 3D face is x: smooth, learnable."""
  grid = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size * 2 - 1
  ramp = grid[:, None, None] * background[None, None, :]  # A vertical background gradient.
  face = jnp.tanh((x * 2 - 1) @ colour)
  return jnp.where(inside[..., None], face, ramp * jnp.ones((size, size, 3)))


def _example(key: jax.Array, config: ml_collections.ConfigDict) -> Batch:
  """One synthetic frame pair (unbatched): an ellipse face drifting over k+2 frames, one identity."""
  size = config.image_size
  k = config.model.num_past_frames
  n_frames = k + 2  # Frames t-1-k .. t.
  k_id, k_bg, k_c0, k_v, k_rr, k_cref, k_audio, k_da = jax.random.split(key, 8)
  colour = jax.random.normal(k_id, (3, 3)) * 0.8
  background = jax.random.uniform(k_bg, (3,), minval=-0.8, maxval=0.8)
  centre0 = jax.random.uniform(k_c0, (2,), minval=-0.2, maxval=0.2)
  velocity = jax.random.normal(k_v, (2,)) * 0.03
  radii = jax.random.uniform(k_rr, (2,), minval=0.35, maxval=0.55)
  centres = centre0[None] + velocity[None] * jnp.arange(n_frames, dtype=jnp.float32)[:, None]
  xs, insides = jax.vmap(lambda c: _ellipse_face(c, radii, size))(centres)  # (n_frames, H, W, 3)
  c_ref = jax.random.uniform(k_cref, (2,), minval=-0.25, maxval=0.25)
  x_ref, inside_ref = _ellipse_face(c_ref, radii, size)
  y_ref = _appearance(x_ref, inside_ref, colour, background, size)
  y = _appearance(xs[-1], insides[-1], colour, background, size)

  if config.data.conditioning == 'landmarks':  # The images y stay those of the 3D face; G sees the landmarks.
    xs = jax.vmap(lambda c: _ellipse_landmarks(c, radii, size))(centres)
    x_ref = _ellipse_landmarks(c_ref, radii, size)

  def volume(frames: jax.Array) -> jax.Array:  # (k+1, H, W, 3) -> (H, W, 3(k+1)), oldest first.
    return jnp.moveaxis(frames, 0, 2).reshape(size, size, 3 * (k + 1))

  audio_prev = jax.random.normal(k_audio, (config.model.audio_dim,))
  audio = audio_prev + 0.3 * jax.random.normal(k_da, (config.model.audio_dim,))
  # Mouth box: centred on the lower third of the ellipse, clipped inside the frame.
  box = mouth_box_size(config)
  mouth_centre = (centres[-1] + jnp.array([radii[0] * 0.5, 0.0]) + 1) / 2 * size
  corner = jnp.clip(jnp.round(mouth_centre - box / 2), 0, size - box).astype(jnp.int32)
  foreground = (insides[-1] | inside_ref).astype(jnp.float32)[..., None]
  return Batch(x_drive=volume(xs[1:]), x_drive_prev=volume(xs[:-1]), y_ref=y_ref, x_ref=x_ref, audio=audio,
               audio_prev=audio_prev, y=y, mouth=corner, foreground=foreground)


def synthetic_batch(key: jax.Array, config: ml_collections.ConfigDict, batch_size: int | None = None) -> Batch:
  """A deterministic synthetic `Batch` of `batch_size` (default config.train.batch_size) frame pairs from `key`.

  jit-able (config and batch_size are static). Use `jax.random.fold_in(key, step)` for a stream that a resumed
  run reproduces exactly.
  """
  if config.data.conditioning not in CONDITIONINGS:
    raise ConfigError(f'config.data.conditioning = {config.data.conditioning!r}; expected one of {CONDITIONINGS}')
  b = config.train.batch_size if batch_size is None else batch_size
  return jax.vmap(lambda k: _example(k, config))(jax.random.split(key, b))
