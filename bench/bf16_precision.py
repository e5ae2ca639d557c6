"""Where bfloat16 compute is measurably wrong in HeadGAN: each candidate float32 island, measured (issue 21, item 4).

  python bench/bf16_precision.py [--image ../shared/fixtures/reference.png]

For each piece it compares, on a real photo (the fixture face image, resized) and on G's own activations, the
float32 computation with the same computation in bfloat16 (bf16: 8 significant bits, relative rounding 2^-9 =
0.2 %), and prints one JSON line per measurement. `floor` is the error of rounding the float32 RESULT to bf16 once
(the least any bf16 computation of it can have); a piece whose bf16 error is far above its floor is one that
must stay float32. docs/accelerators.md ("4. bfloat16") has the figures and what was decided from them.

  warp         grid coordinates (y + w_y, x + w_x) in bf16; the flow (F's head output) rounded to bf16; the
               warped image rounded (floor). Error in 8-bit grey levels (x 127.5 for images in [-1, 1]).
  warp_grad    d/d(features) of a warp whose flow contracts 4:1: the gather (so the backward scatter-add) in
               bf16, as the warp was before it became float32 throughout, vs in float32 (`nn.flow.warp` now).
  temp         L_F^Temp between two warps of the same features by flows 1e-2 ... 1e-5 px apart (F at
               initialisation): warped features rounded to bf16 vs kept float32.
  norm         instance-norm output on the activations that feed G's norms (the train tests' G at 256 px on the
               photo): bf16 input with float32 statistics vs statistics in bf16; relative RMS error.
  spectral     sigma of spectral norm after n power iterations with bf16-input matmuls (a TPU's DEFAULT
               precision for float32) and with u, v and sigma in bf16, vs float32.
  losses       L1, hinge, feature matching and the VGG L1 with their arithmetic in bf16 vs float32, and with the
               network before them (D, VGG19) computing in bf16.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np


from headgan_jax.nn import blocks, flow as flow_lib  # noqa: E402

BF16 = jnp.bfloat16
LEVELS = 127.5  # 8-bit grey levels per unit of an image in [-1, 1].


def _bf(x: jax.Array) -> jax.Array:
  """Rounded to bf16 and back: what a bf16 array holds."""
  return jnp.asarray(x).astype(BF16).astype(jnp.float32)


def _rel(err: jax.Array, ref: jax.Array) -> float:
  return float(jnp.linalg.norm(err.ravel()) / jnp.linalg.norm(ref.ravel()))


def _emit(**row) -> None:
  print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)


def load_photo(path: str, size: int) -> jax.Array:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(path) as im:
    im = im.convert('RGB').resize((size, size), Image.BICUBIC)
    return jnp.asarray(np.asarray(im, np.float32)[None] / 127.5 - 1.0)


def head_motion_flow(size: int, key: jax.Array) -> jax.Array:
  """A flow (1, S, S, 2) in pixels like a head's motion between two frames: rotation 4 deg and 5 % zoom about the
  centre, a shift of (6, -4) px at 256 px, and a smooth random field of ~2 px (all scaled with the size)."""
  s = size / 256
  ys, xs = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32), indexing='ij')
  c = (size - 1) / 2
  a, z = jnp.deg2rad(4.0), 1.05
  dy, dx = ys - c, xs - c
  fy = (z * (jnp.cos(a) * dy - jnp.sin(a) * dx) - dy) - 4 * s
  fx = (z * (jnp.sin(a) * dy + jnp.cos(a) * dx) - dx) + 6 * s
  coarse = jax.random.normal(key, (1, 8, 8, 2)) * 2 * s
  smooth = jax.image.resize(coarse, (1, size, size, 2), 'cubic')
  return jnp.stack([fx, fy], -1)[None] + smooth


def measure_warp(photo_path: str) -> None:
  for size in (32, 64, 256, 512):
    image = load_photo(photo_path, size)
    f = head_motion_flow(size, jax.random.key(0))
    ref = flow_lib.warp(image, f)
    ys = jnp.arange(size, dtype=jnp.float32)[None, :, None]
    xs = jnp.arange(size, dtype=jnp.float32)[None, None, :]
    variants = {
        'grid_bf16': flow_lib.bilinear_sample(image, _bf(ys + f[..., 1]), _bf(xs + f[..., 0])),
        'flow_bf16': flow_lib.warp(image, _bf(f)),
        'floor': _bf(ref),
    }
    moved = float(jnp.mean(jnp.abs(ref - image)) * LEVELS)
    for name, out in variants.items():
      err = jnp.abs(out - ref) * LEVELS
      _emit(piece='warp', size=size, variant=name, mean_levels=float(err.mean()), max_levels=float(err.max()),
            rel=_rel(out - ref, ref - image), warp_moves_levels=moved)


def _warp_gather_in_dtype(image: jax.Array, flow: jax.Array) -> jax.Array:
  """`flow_lib.warp` as it was before the warp became float32 throughout: pixels gathered in image's dtype (so the
  backward pass scatter-adds in it), float32 weights, the result in image's dtype."""
  b, h, w, c = image.shape
  sy = jnp.clip(jnp.arange(h, dtype=jnp.float32)[None, :, None] + flow[..., 1], 0.0, h - 1.0)
  sx = jnp.clip(jnp.arange(w, dtype=jnp.float32)[None, None, :] + flow[..., 0], 0.0, w - 1.0)
  y0f, x0f = jnp.floor(sy), jnp.floor(sx)
  wy, wx = (sy - y0f)[..., None], (sx - x0f)[..., None]
  y0, x0 = y0f.astype(jnp.int32), x0f.astype(jnp.int32)
  y1, x1 = jnp.minimum(y0 + 1, h - 1), jnp.minimum(x0 + 1, w - 1)
  flat = image.reshape(b, h * w, c)
  gather = lambda yi, xi: jax.vmap(lambda f, i: f[i])(flat, (yi * w + xi).reshape(b, -1)).reshape(  # noqa: E731
      b, h, w, c).astype(jnp.float32)
  out = ((1 - wy) * (1 - wx) * gather(y0, x0) + (1 - wy) * wx * gather(y0, x1)
         + wy * (1 - wx) * gather(y1, x0) + wy * wx * gather(y1, x1))
  return out.astype(image.dtype)


def measure_warp_grad() -> None:
  """Gradient of <cotangent, warp(features)> w.r.t. the features for a flow that samples a quarter of the image
  (zoom 4x: every source pixel receives ~16 contributions): bf16 features with the gather (and so the backward
  scatter-add) in bf16, and in float32 (`flow_lib.warp`), vs float32 features."""
  size, c = 64, 32
  feats = jax.random.normal(jax.random.key(1), (1, size, size, c))
  ys, xs = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32), indexing='ij')
  f = jnp.stack([(xs * 0.25 + size * 0.375) - xs, (ys * 0.25 + size * 0.375) - ys], -1)[None]
  cot = jax.random.normal(jax.random.key(2), (1, size, size, c))

  def grad(warp_fn, x):
    return jax.grad(lambda x: jnp.sum(warp_fn(x, f).astype(jnp.float32) * cot))(x).astype(jnp.float32)

  ref = grad(flow_lib.warp, feats)
  for name, g in (('scatter_add_bf16', grad(_warp_gather_in_dtype, feats.astype(BF16))),
                  ('scatter_add_f32', grad(flow_lib.warp, feats.astype(BF16))), ('floor', _bf(ref))):
    _emit(piece='warp_grad', variant=name, rel=_rel(g - ref, ref))


def measure_temp() -> None:
  """L_F^Temp at initialisation: the same features warped by two flows `delta` px apart (F's flow is ~0 and differs
  between frames t-1 and t only slightly): the true term is tiny, and bf16 rounding of the outputs is not."""
  size, c = 64, 32
  feats = _bf(jax.nn.relu(jax.random.normal(jax.random.key(3), (1, size, size, c))))  # What a bf16 encoder gives.
  f1 = 1e-3 * jax.random.normal(jax.random.key(4), (1, size, size, 2))
  for delta in (1e-2, 1e-3, 1e-4, 1e-5):
    f2 = f1 + delta * jax.random.normal(jax.random.key(5), (1, size, size, 2))
    w1, w2 = flow_lib.warp(feats, f1), flow_lib.warp(feats, f2)
    ref = float(jnp.mean(jnp.abs(w1 - w2)))
    out_bf16 = float(jnp.mean(jnp.abs(_bf(w1) - _bf(w2))))
    _emit(piece='temp', variant='warped_features_bf16', flow_delta_px=delta, value=out_bf16, value_f32=ref,
          rel=abs(out_bf16 - ref) / ref)


def _train_configs():
  """tests/train_configs.py (the train tests' small configs), loaded by path: tests/ is not a package."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location('train_configs', pathlib.Path(__file__).resolve().parents[1] / 'tests' /
                                                'train_configs.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def norm_inputs(photo_path: str, size: int = 256) -> dict[str, jax.Array]:
  """The float32 activations that feed G's instance norms (the train tests' G, initialised, on the photo): the
  outputs of the encoder convs and of the SPADE / AdaIN blocks' conv_0, and the inputs of the SPADE blocks."""
  train_configs = _train_configs()
  from headgan_jax.nn import generator  # pylint: disable=import-outside-toplevel
  config = train_configs.small_train_config()
  config.image_size, config.runtime.conv_impl = size, 'xla'
  g = generator.make_generator(config)
  photo = load_photo(photo_path, size)
  x_drive = jnp.concatenate([photo] * 3, -1) * 0.5
  audio = jax.random.normal(jax.random.key(0), (1, config.model.audio_dim))
  variables = g.init(jax.random.key(0), x_drive, photo, photo * 0.5, audio)
  keep = lambda mdl, _: isinstance(mdl, (blocks.Conv, blocks.SpadeNorm, blocks.AdaIN))  # noqa: E731
  _, state = g.apply(variables, x_drive, photo, photo * 0.5, audio, capture_intermediates=keep,
                     mutable=['intermediates'])
  out = {}
  for path, v in jax.tree_util.tree_flatten_with_path(state['intermediates'])[0]:
    name = jax.tree_util.keystr(path)
    if ('encoder' in name and name.endswith("['conv']['__call__'][0]")) or "['conv_0']['__call__']" in name:
      out[name] = v
  return out


def measure_norm(photo_path: str) -> None:
  ref_norm = blocks.instance_norm(jnp.float32)
  bf16_stats = lambda x: jax.nn.standardize(x, axis=(1, 2), epsilon=blocks.IN_EPSILON)  # noqa: E731
  rows = []
  for name, x in norm_inputs(photo_path).items():
    ref = ref_norm.apply({}, x)
    mean, std = jnp.mean(x, axis=(1, 2)), jnp.std(x, axis=(1, 2))
    ratio = float(jnp.median(jnp.abs(mean) / (std + 1e-12)))
    current = blocks.instance_norm(BF16).apply({}, x.astype(BF16)).astype(jnp.float32)
    # Statistics in bf16: flax's one-pass E[x^2] - E[x]^2 with bf16 sums (force_float32_reductions=False).
    import flax.linen as fnn  # pylint: disable=import-outside-toplevel
    in_bf16 = fnn.InstanceNorm(epsilon=blocks.IN_EPSILON, use_bias=False, use_scale=False, dtype=BF16,
                               force_float32_reductions=False)
    stats_bf16 = in_bf16.apply({}, x.astype(BF16)).astype(jnp.float32)
    two_pass_bf16 = bf16_stats(x.astype(BF16)).astype(jnp.float32)
    rows.append((name, ratio, _rel(current - ref, ref), _rel(stats_bf16 - ref, ref),
                 _rel(two_pass_bf16 - ref, ref), _rel(_bf(ref) - ref, ref)))
  for name, ratio, cur, sb, tp, fl in rows:
    _emit(piece='norm', layer=name.replace("['__call__'][0]", ''), mean_over_std=ratio, f32_stats=cur,
          bf16_stats_one_pass=sb, bf16_stats_two_pass=tp, floor=fl)
  a = np.asarray([r[2:] for r in rows])
  _emit(piece='norm', layer='median over layers', f32_stats=float(np.median(a[:, 0])),
        bf16_stats_one_pass=float(np.median(a[:, 1])), bf16_stats_two_pass=float(np.median(a[:, 2])),
        floor=float(np.median(a[:, 3])))
  _emit(piece='norm', layer='worst layer', f32_stats=float(a[:, 0].max()), bf16_stats_one_pass=float(a[:, 1].max()),
        bf16_stats_two_pass=float(a[:, 2].max()), floor=float(a[:, 3].max()))


def power_iteration(w: jax.Array, u: jax.Array, steps: int, mode: str) -> list[float]:
  """flax.linen.SpectralNorm's update (one iteration per training step) for `steps` steps; sigma after each.
  mode: 'f32'; 'bf16_matmul' (inputs rounded to bf16, float32 accumulation: a TPU's DEFAULT precision for a
  float32 matmul); 'bf16' (u, v, sigma and the matmuls in bf16)."""
  def mm(a, b):
    if mode == 'f32':
      return jnp.matmul(a, b, precision='highest')
    out = jnp.matmul(a.astype(BF16), b.astype(BF16), preferred_element_type=jnp.float32)
    return out if mode == 'bf16_matmul' else out.astype(BF16)
  normalise = lambda x: x * jax.lax.rsqrt(jnp.sum(x.astype(jnp.float32) ** 2) + 1e-12).astype(x.dtype)  # noqa
  sigmas = []
  for _ in range(steps):
    v = normalise(mm(u, w.T))
    u = normalise(mm(v, w))
    sigmas.append(float(mm(mm(v, w), u.T)[0, 0]))
  return sigmas


def measure_spectral() -> None:
  key = jax.random.key(7)
  k1, k2, k3, k4 = jax.random.split(key, 4)
  # A SPADE conv_0 kernel at paper width (3x3x512x512 -> 4608 x 512) at init (Xavier normal, gain 0.02), and a
  # matrix with a trained-looking spectrum (sigma_2 / sigma_1 = 0.95: slow power iteration).
  w_init = blocks.xavier_normal(0.02)(k1, (3, 3, 512, 512)).reshape(-1, 512)
  q1, _ = jnp.linalg.qr(jax.random.normal(k2, (4608, 512)))
  q2, _ = jnp.linalg.qr(jax.random.normal(k3, (512, 512)))
  w_trained = (q1 * (0.95 ** jnp.arange(512) * 0.3)) @ q2.T
  for name, w in (('init_4608x512', w_init), ('decaying_spectrum', w_trained)):
    u = jax.random.normal(k4, (1, 512))
    true = float(np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)[0])
    runs = {m: power_iteration(w, u, 100, m) for m in ('f32', 'bf16_matmul', 'bf16')}
    for n in (1, 10, 100):
      ref = runs['f32'][n - 1]
      _emit(piece='spectral', matrix=name, iterations=n, sigma_true=true, f32_vs_true=abs(ref - true) / true,
            bf16_matmul_vs_f32=abs(runs['bf16_matmul'][n - 1] - ref) / ref,
            bf16_vs_f32=abs(runs['bf16'][n - 1] - ref) / ref)


def measure_losses(photo_path: str) -> None:
  from headgan_jax.nn import discriminator, vgg as vgg_lib  # pylint: disable=import-outside-toplevel
  from headgan_jax.train import losses  # pylint: disable=import-outside-toplevel
  size = 128
  target = load_photo(photo_path, size)
  # A generated frame late in training: the target, 1 px shifted and with some noise (L1 ~ 0.02-0.03).
  fake = jnp.clip(jnp.roll(target, 1, axis=2) + 0.02 * jax.random.normal(jax.random.key(8), target.shape), -1, 1)

  def l1_bf16(a, b):  # The whole term in bf16: operands, difference, and a bf16 result.
    return jnp.mean(jnp.abs(a.astype(BF16) - b.astype(BF16))).astype(jnp.float32)

  ref = losses._mean_abs_diff(fake, target)  # pylint: disable=protected-access
  g_ref = jax.grad(lambda a: losses._mean_abs_diff(a, target))(fake)  # pylint: disable=protected-access
  g_bf = jax.grad(lambda a: l1_bf16(a, target))(fake)
  _emit(piece='losses', term='l1', value_f32=float(ref), bf16_rel=abs(float(l1_bf16(fake, target)) - float(ref)) /
        float(ref), grad_sign_flips=float(jnp.mean(jnp.sign(g_ref) != jnp.sign(g_bf))))
  logits = 0.5 + jax.random.normal(jax.random.key(9), (4, 35, 35, 1))
  h_ref = float(losses.hinge_d(logits, -logits))
  h_bf = float(jnp.mean(jax.nn.relu(1 - logits.astype(BF16))) + jnp.mean(jax.nn.relu(1 - logits.astype(BF16))))
  _emit(piece='losses', term='hinge_d', value_f32=h_ref, bf16_rel=abs(h_bf - h_ref) / h_ref)
  # D (the train tests' widths) on (x_t, real) and (x_t, fake): feature matching in f32 from D in f32 / in bf16.
  train_configs = _train_configs()
  config = train_configs.small_train_config()
  config.image_size, config.runtime.conv_impl = size, 'xla'
  d_f32, _ = discriminator.make_discriminators(config)
  config.runtime.compute_dtype = 'bfloat16'
  d_bf16, _ = discriminator.make_discriminators(config)
  x = jnp.concatenate([discriminator.image_disc_input(target, fake), discriminator.image_disc_input(target, target)])
  dv = d_f32.init(jax.random.key(10), x)
  fm = lambda out: losses.feature_matching([[f[1:] for f in s] for s in out],  # noqa: E731
                                           [[f[:1] for f in s] for s in out])
  fm_ref, fm_bf = float(fm(d_f32.apply(dv, x))), float(fm(d_bf16.apply(dv, x)))
  _emit(piece='losses', term='feature_matching (D in bf16)', value_f32=fm_ref, bf16_rel=abs(fm_bf - fm_ref) / fm_ref)
  # VGG19 (He-initialised: the real weights are not on this machine) in f32 and bf16 compute; loss in f32.
  vgg32, vgg16 = vgg_lib.VGG19(dtype=jnp.float32), vgg_lib.VGG19(dtype=BF16)
  vp = vgg32.init(jax.random.key(11), target)
  vp = jax.tree.map(lambda p: p if p.ndim == 1 else p * np.sqrt(2.0) / jnp.std(p) / np.sqrt(p.shape[0] * p.shape[1] *
                                                                                          p.shape[2]), vp)
  weights = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
  term = lambda m, a: losses.vgg_l1(lambda z: m.apply(vp, z), a, target, weights)  # noqa: E731
  v_ref, gv_ref = jax.value_and_grad(lambda a: term(vgg32, a))(fake)
  v_bf, gv_bf = jax.value_and_grad(lambda a: term(vgg16, a))(fake)
  cos = float(jnp.sum(gv_ref * gv_bf) / jnp.linalg.norm(gv_ref) / jnp.linalg.norm(gv_bf))
  _emit(piece='losses', term='vgg_l1 (VGG in bf16)', value_f32=float(v_ref),
        bf16_rel=abs(float(v_bf) - float(v_ref)) / float(v_ref), grad_rel=_rel(gv_bf - gv_ref, gv_ref), grad_cos=cos)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  here = pathlib.Path(__file__).resolve().parents[1]
  parser.add_argument('--image', default=str(here.parent / 'shared' / 'fixtures' / 'reference.png'))
  parser.add_argument('--pieces', default='warp,warp_grad,temp,norm,spectral,losses')
  args = parser.parse_args(argv)
  if not pathlib.Path(args.image).is_file():
    print(f'bf16_precision: --image {args.image} is not a file', file=sys.stderr)
    return 2
  pieces = {'warp': lambda: measure_warp(args.image), 'warp_grad': measure_warp_grad, 'temp': measure_temp,
            'norm': lambda: measure_norm(args.image), 'spectral': measure_spectral,
            'losses': lambda: measure_losses(args.image)}
  for name in args.pieces.split(','):
    if name not in pieces:
      print(f'bf16_precision: --pieces {name!r} is not one of {sorted(pieces)}', file=sys.stderr)
      return 2
    pieces[name]()
  return 0


if __name__ == '__main__':
  sys.exit(main())
