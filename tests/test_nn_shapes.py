"""G (F + R), D and D_m: Tables 2 and 3 row by row at 256 (shapes only), outputs and gradients at the tiny config."""
import pathlib

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from configs import paper, tiny
from headgan_jax import errors
from headgan_jax.commands import summary as summary_command
from headgan_jax.nn import blocks, discriminator, generator, summary
from headgan_jax.nn import flow as flow_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
# Cheap XLA CPU compiles: the default optimisation level spends most of a test's time compiling the RNG of init.
FAST = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def _fast_jit(fn, **kw):
  return jax.jit(fn, compiler_options=FAST, **kw)


@pytest.fixture(scope='module')
def paper_records():
  cfg = paper.get_config()
  g, v, inputs = summary.generator_variables(cfg)
  return cfg, v, summary.layer_shapes(g, v, *inputs)


def _rows(records, prefix, names):
  """Output shapes (batch dropped) of the listed rows, in call order."""
  wanted = {f'{prefix}/{n}' for n in names}
  got = [(p, tuple(s[0].shape[1:])) for p, _, s in records if p in wanted]
  assert [p for p, _ in got] == [f'{prefix}/{n}' for n in names], 'rows missing or out of order'
  return [s for _, s in got]


def test_flow_network_matches_table_2(paper_records):
  _, v, records = paper_records
  names = ['encoder/conv_0', 'encoder/conv_1', 'encoder/conv_2', 'spade_low_0', 'spade_low_1', 'spade_low_2',
           'shuffle_0', 'spade_up_0', 'shuffle_1', 'flow_head', 'mask_head']
  table_2 = [(256, 256, 32), (128, 128, 128), (64, 64, 512), (64, 64, 512), (64, 64, 512), (64, 64, 512),
             (128, 128, 128), (128, 128, 128), (256, 256, 32),
             (256, 256, 2), (256, 256, 1)]  # 7x7 convs: the table's 2 flow channels + the authors' mask.
  assert _rows(records, 'flow_net', names) == table_2
  p = v['params']['flow_net']
  assert p['encoder']['conv_0']['conv']['conv']['kernel'].shape == (7, 7, 6, 32)  # input (y_ref, x_ref): 6 ch.
  assert p['encoder']['conv_1']['conv']['conv']['kernel'].shape == (3, 3, 32, 128)
  assert p['encoder']['conv_2']['conv']['conv']['kernel'].shape == (3, 3, 128, 512)
  assert p['flow_head']['conv']['kernel'].shape == (7, 7, 32, 2)
  assert p['mask_head']['conv']['kernel'].shape == (7, 7, 32, 1)
  # Encoder convs: spectral norm, no bias, then an affine instance norm (the authors' 'spectralinstance').
  assert set(p['encoder']['conv_0']['conv']['conv']) == {'kernel'}
  assert p['encoder']['conv_0']['norm']['scale'].shape == (32,) and p['encoder']['conv_2']['norm']['bias'].shape == (512,)
  assert 'conv/kernel/sigma' in v['batch_stats']['flow_net']['encoder']['conv_1']['conv']['sn']
  # Every SPADE block of F is modulated by x_{t-k:t} (9 channels).
  for blk in ('spade_low_0', 'spade_low_1', 'spade_low_2', 'spade_up_0'):
    assert p[blk]['norm_0']['shared']['conv']['kernel'].shape[2] == 9
  (flow_net,) = [s for path, _, s in records if path == 'flow_net']
  assert [tuple(x.shape) for x in flow_net] == [(1, 256, 256, 2), (1, 256, 256, 1), (1, 64, 64, 512),
                                                (1, 128, 128, 128), (1, 256, 256, 32)]


def test_rendering_network_matches_table_3(paper_records):
  _, v, records = paper_records
  names = ['encoder/conv_0', 'encoder/conv_1', 'encoder/conv_2', 'spade_0', 'adain_0', 'shuffle_0', 'spade_1',
           'adain_1', 'shuffle_1', 'spade_2', 'adain_2', 'spade_3', 'head']
  table_3 = [(256, 256, 32), (128, 128, 128), (64, 64, 512), (64, 64, 512), (64, 64, 512), (128, 128, 128),
             (128, 128, 128), (128, 128, 128), (256, 256, 32), (256, 256, 32), (256, 256, 32), (256, 256, 32),
             (256, 256, 3)]
  assert _rows(records, 'render_net', names) == table_3
  p = v['params']['render_net']
  assert p['encoder']['conv_0']['conv']['conv']['kernel'].shape == (7, 7, 9, 32)  # x_{t-k:t}, k = 2.
  assert p['head']['conv']['kernel'].shape == (7, 7, 32, 3)
  # SPADE conditions: h-bar^(1) (512 ch), h-bar^(2) (128), h-bar^(3) (32), y-bar^ref (3); AdaIN: 300-d audio.
  for blk, cin in (('spade_0', 512), ('spade_1', 128), ('spade_2', 32), ('spade_3', 3)):
    assert p[blk]['norm_0']['shared']['conv']['kernel'].shape[2] == cin
    assert p[blk]['norm_1']['shared']['conv']['kernel'].shape[2] == cin
  for blk, c in (('adain_0', 512), ('adain_1', 128), ('adain_2', 32)):
    assert p[blk]['norm_0']['style']['kernel'].shape == (300, 2 * c)


def test_generator_output_structure_paper_size():
  cfg = paper.get_config()
  g, v, inputs = summary.generator_variables(cfg, batch_size=2)
  out = jax.eval_shape(lambda v: g.apply(v, *inputs), v)
  assert isinstance(out, generator.GeneratorOutput)
  assert out.image.shape == (2, 256, 256, 3) and out.warped_ref.shape == (2, 256, 256, 3)
  assert [x.shape for x in out.warped_features] == [(2, 64, 64, 512), (2, 128, 128, 128), (2, 256, 256, 32)]
  assert out.flow.shape == (2, 256, 256, 2) and out.mask.shape == (2, 256, 256, 1)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(out))
  assert set(v) == {'params', 'batch_stats'}


def test_bfloat16_compute_keeps_float32_params():
  cfg = tiny.get_config()
  cfg.runtime.compute_dtype = 'bfloat16'
  g, v, inputs = summary.generator_variables(cfg)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(v))
  records = summary.layer_shapes(g, v, *inputs)
  by_path = {p: s for p, _, s in records}
  assert by_path['render_net/spade_0'][0].dtype == jnp.bfloat16
  assert by_path['flow_net/spade_low_0'][0].dtype == jnp.bfloat16
  out = jax.eval_shape(lambda v: g.apply(v, *inputs), v)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(out))


def test_ablation_variants_structure():
  cfg = tiny.get_config()
  cfg.model.use_flow = False
  g, v, inputs = summary.generator_variables(cfg)
  assert 'flow_net' not in v['params'] and 'reference_encoder' in v['params']
  out = jax.eval_shape(lambda v: g.apply(v, *inputs), v)
  assert [x.shape for x in out.warped_features] == [(1, 16, 16, 64), (1, 32, 32, 16), (1, 64, 64, 4)]
  assert out.flow.shape == (1, 64, 64, 2)
  counts = summary.parameter_counts(cfg)
  full = summary.parameter_counts(tiny.get_config())
  assert counts['R'] == full['R'] and counts['F'] < full['F']


def test_generator_rejects_bad_config_and_inputs():
  cfg = tiny.get_config()
  cfg.model.blocks.spade_resize = 'bicubic'
  with pytest.raises(errors.ConfigError, match='spade_resize'):
    generator.make_generator(cfg)
  cfg = tiny.get_config()
  cfg.runtime.compute_dtype = 'float16'
  with pytest.raises(errors.ConfigError, match='compute_dtype'):
    generator.make_generator(cfg)
  cfg = tiny.get_config()
  g = generator.make_generator(cfg)
  x_drive, y_ref, x_ref, audio = generator.example_inputs(cfg)
  with pytest.raises(errors.DataError, match='num_past_frames'):
    jax.eval_shape(lambda: g.init(jax.random.key(0), x_drive[..., :6], y_ref, x_ref, audio))
  with pytest.raises(errors.DataError, match='audio_dim'):
    jax.eval_shape(lambda: g.init(jax.random.key(0), x_drive, y_ref, x_ref, audio[:, :84]))


def _dead_biases(cfg) -> dict[str, int]:
  """Biases the authors' code has and ours leaves out by default, per module: conv_0 of every SPADE block (its width)
  and of every AdaIN block; each feeds a parameter-free instance norm (see nn/blocks.py)."""
  m = cfg.model
  widths = [m.ngf * 4**i for i in range(m.num_down, -1, -1)]  # 512, 128, 32 at the paper size.
  return {'F SPADE blocks': m.flow_low_blocks * widths[0] + sum(widths[1:-1]),
          'R SPADE blocks': sum(widths) + widths[-1], 'R AdaIN blocks': sum(widths)}


def test_parameter_counts_match_the_authors_table():
  """Per module, ours = the authors' count (nn/summary.py's table, from their code) minus the dead biases; with
  config.model.blocks.dead_conv_biases the two agree exactly, 51,750,502 for G."""
  theirs = summary.AUTHORS_PARAMETER_COUNTS
  g_rows = [k for k in theirs if k[0] in 'FR']
  assert sum(theirs[k] for k in g_rows) == theirs['G'] == 51_750_502
  cfg = paper.get_config()
  ours = summary.module_parameter_counts(cfg)
  dead = _dead_biases(cfg)
  assert dead == {'F SPADE blocks': 1664, 'R SPADE blocks': 704, 'R AdaIN blocks': 672}
  dead['G'] = sum(dead.values())
  for name, count in theirs.items():
    assert ours[name] == count - dead.get(name, 0), name
  assert set(summary.DIFFERENCES) == set(dead)  # Every difference is explained, and only those.
  cfg.model.blocks.dead_conv_biases = True
  assert summary.module_parameter_counts(cfg) == theirs
  # D: the authors' formula, 4x4 convs, first and last with a bias, the middle ones spectral + affine instance norm.
  d = cfg.disc

  def one_scale(cin):
    n, nf = 16 * cin * d.ndf + d.ndf, d.ndf
    for _ in range(1, d.num_layers):
      nxt = min(nf * 2, d.max_channels)
      n, nf = n + 16 * nf * nxt + 2 * nxt, nxt
    return n + 16 * nf + 1

  assert theirs['D'] == d.num_scales * one_scale(6) and theirs['D_m'] == d.num_scales * one_scale(303)
  cfg.disc.affine_norm = False
  assert summary.parameter_counts(cfg)['D'] == theirs['D'] - 2 * 2 * (128 + 256 + 512)


def test_without_audio_as_the_authors_build_it():
  """"w/o audio": no AdaIN parameters anywhere, and D_m kept, on the 3-channel mouth crop."""
  cfg = tiny.get_config()
  cfg.model.use_audio = False
  _, v, _ = summary.generator_variables(cfg)
  paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(v['params'])]
  assert paths and not [p for p in paths if 'adain' in p]
  (_, _, _), (_, v_m, x_m) = summary.discriminator_variables(cfg)
  assert x_m.shape[-1] == 3 and discriminator.mouth_disc_channels(cfg) == 3
  assert v_m['params']['scale_0']['conv_0']['conv']['kernel'].shape[2] == 3
  full = summary.module_parameter_counts(tiny.get_config())
  ablated = summary.module_parameter_counts(cfg)
  assert ablated['R AdaIN blocks'] == 0 and ablated['G'] == full['G'] - full['R AdaIN blocks']
  assert ablated['D_m'] == full['D_m'] - cfg.disc.num_scales * 16 * cfg.model.audio_dim * cfg.disc.ndf
  mouth = jnp.zeros((1, 8, 8, 3))
  assert discriminator.mouth_disc_input(mouth, None) is mouth


def test_conv_impl_reaches_every_convolution(monkeypatch):
  """config.runtime.conv_impl picks the primitive of EVERY conv of G, D and D_m: a probe implementation is called
  once per conv kernel in an apply."""
  calls = []
  real = blocks.conv_function

  def probe(impl):
    if impl != 'probe':
      return real(impl)

    def conv(*args, **kw):
      calls.append(1)
      return jax.lax.conv_general_dilated(*args, **kw)
    return conv

  monkeypatch.setattr(blocks, 'conv_function', probe)
  cfg = tiny.get_config()
  cfg.runtime.conv_impl = 'probe'
  g, v_g, inputs = summary.generator_variables(cfg)
  (d, v_d, x_d), (d_m, v_m, x_m) = summary.discriminator_variables(cfg)
  for module, variables, args in ((g, v_g, inputs), (d, v_d, (x_d,)), (d_m, v_m, (x_m,))):
    kernels = [x for k, x in jax.tree_util.tree_leaves_with_path(variables['params'])
               if k[-1].key == 'kernel' and x.ndim == 4]
    calls.clear()
    jax.eval_shape(lambda v: module.apply(v, *args), variables)  # pylint: disable=cell-var-from-loop
    assert len(calls) == len(kernels) > 0


def test_flow_mask_gradient_reaches_only_f():
  """The flow-mask L1 trains F's mask (and what feeds it), nothing of R; it is 0 when m equals the foreground."""
  from headgan_jax.train import losses  # pylint: disable=import-outside-toplevel
  cfg = tiny.get_config()
  cfg.image_size = 32
  g = generator.make_generator(cfg)
  rng = np.random.default_rng(3)
  x_drive, y_ref, x_ref = (jnp.asarray(rng.uniform(-1, 1, (1, 32, 32, c)), jnp.float32) for c in (9, 3, 3))
  audio = jnp.zeros((1, 300), jnp.float32)
  v = _random_variables(g, rng, x_drive, y_ref, x_ref, audio)
  foreground = jnp.asarray(rng.uniform(size=(1, 32, 32, 1)) > 0.5, jnp.float32)

  def loss(params):
    w = g.apply({'params': params, 'batch_stats': v['batch_stats']}, x_drive, y_ref, x_ref, method='warp')
    return losses.flow_mask_l1(w.mask, foreground), w.mask

  (value, mask), grads = _fast_jit(jax.value_and_grad(loss, has_aux=True))(v['params'])
  grads, mask = jax.device_get((grads, mask))
  assert float(value) > 0
  norm = lambda tree: sum(float(np.abs(x).sum()) for x in jax.tree.leaves(tree))  # noqa: E731
  assert norm(grads['render_net']) == 0
  f = grads['flow_net']
  assert norm(f['mask_head']) > 0 and norm(f['encoder']) > 0 and norm(f['spade_low_0']) > 0
  assert norm(f['flow_head']) == 0  # The flow itself does not enter the mask.
  assert float(losses.flow_mask_l1(jnp.asarray(mask), jnp.asarray(mask))) == 0


def test_summary_cli_runs(capsys):
  assert summary_command.main(['--config', str(REPO / 'configs' / 'tiny.py'), '--depth', '2']) == 0
  text = capsys.readouterr().out
  assert 'render_net/spade_3' in text and 'parameter counts' in text and 'D_m' in text
  assert "no comparison with the authors' parameter counts" in text and 'model.ngf = 4' in text
  assert 'F SPADE blocks' in summary.format_comparison(paper.get_config())


def test_discriminators_output_structure():
  cfg = tiny.get_config()
  d, d_m = discriminator.make_discriminators(cfg)
  rng = np.random.default_rng(0)
  x = discriminator.image_disc_input(jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32),
                                     jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32))
  m = discriminator.mouth_disc_input(jnp.asarray(rng.normal(size=(2, 32, 32, 3)), jnp.float32),
                                     jnp.asarray(rng.normal(size=(2, 300)), jnp.float32))
  assert x.shape == (2, 64, 64, 6) and m.shape == (2, 32, 32, 303)
  np.testing.assert_array_equal(np.asarray(m[:, 5, 7, 3:]), np.asarray(m[:, 0, 0, 3:]))

  def expected(size):
    """SPADE's NLayerDiscriminator sizes: 4x4 kernels, padding 2; stride 2, 2, 2, then 1, 1."""
    shapes, nf = [], cfg.disc.ndf
    for n in range(cfg.disc.num_layers + 1):
      stride = 2 if n < cfg.disc.num_layers - 1 else 1
      size = (size + 4 - 4) // stride + 1
      c = 1 if n == cfg.disc.num_layers else nf
      shapes.append((2, size, size, c))
      nf = min(nf * 2, cfg.disc.max_channels)
    return shapes

  for net, inp in ((d, x), (d_m, m)):
    v = jax.eval_shape(lambda: net.init(jax.random.key(0), inp))
    outs = jax.eval_shape(lambda v: net.apply(v, inp), v)
    assert len(outs) == cfg.disc.num_scales
    size = inp.shape[1]
    for s, feats in enumerate(outs):
      assert [f.shape for f in feats] == expected(size), f'scale {s}'
      assert all(f.dtype == jnp.float32 for f in feats)
      size = (size + 1) // 2  # 3x3 stride-2 pool with padding 1.
  assert [c for c in (f.shape[-1] for f in outs[0])] == [8, 16, 32, 64, 1]


def test_discriminator_computes_and_updates_stats():
  cfg = tiny.get_config()
  d, _ = discriminator.make_discriminators(cfg)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 6)), jnp.float32)

  def run(key, x):
    v = d.init(key, x)
    outs, st = d.apply(v, x, update_stats=True, mutable=['batch_stats'])
    return v, outs, st

  v, outs, st = _fast_jit(run)(jax.random.key(0, impl='rbg'), x)
  outs2 = _fast_jit(d.apply)(v, -x)
  v, outs, st, outs2 = jax.device_get((v, outs, st, outs2))
  assert all(np.isfinite(f).all() for f in jax.tree.leaves(outs))
  # Different inputs give different logits on every scale.
  assert all(np.abs(a[-1] - b[-1]).max() > 0 for a, b in zip(outs, outs2))
  moved = [bool((a != b).any()) for (k, a), b in zip(jax.tree_util.tree_leaves_with_path(st['batch_stats']),
                                                     jax.tree.leaves(v['batch_stats'])) if k[-1].key.endswith('/u')]
  assert len(moved) == cfg.disc.num_scales * (cfg.disc.num_layers - 1) and all(moved)


def test_discriminator_pool_matches_pytorch():
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(1).normal(size=(1, 7, 6, 2)).astype(np.float32)
  want = torch.nn.functional.avg_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), 3, stride=2, padding=1,
                                        count_include_pad=False).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(discriminator.downsample_input(jnp.asarray(x))), want, rtol=1e-5)


def _random_variables(module, rng, *args):
  """Variables of init's structure drawn with numpy: compiling init's ~150 random initialisers costs more CPU time
  than a whole test here; init itself is exercised by the discriminator and block tests."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))
  return jax.tree_util.tree_map_with_path(
      lambda k, x: np.ones(x.shape, np.float32) if k[-1].key.endswith('/sigma')
      else rng.normal(0, 0.1, x.shape).astype(np.float32), shapes)


def test_ablations_without_flow_and_audio():
  cfg = tiny.get_config()
  cfg.model.use_flow = False
  cfg.model.use_audio = False
  g = generator.make_generator(cfg)
  rng = np.random.default_rng(1)
  s = cfg.image_size
  args = [jnp.asarray(rng.uniform(-1, 1, (1, s, s, c)), jnp.float32) for c in (9, 3, 3)]
  audio = jnp.asarray(rng.normal(size=(1, 300)), jnp.float32)
  v = _random_variables(g, rng, *args, audio)
  apply = _fast_jit(g.apply)
  o1, o2 = jax.device_get((apply(v, *args, audio), apply(v, *args, 3 * audio + 1)))
  np.testing.assert_array_equal(o1.image, o2.image)  # w/o audio: the audio is not used.
  np.testing.assert_array_equal(o1.warped_ref, np.asarray(args[1]))  # w/o F: y_ref itself, unwarped.
  assert not o1.flow.any() and (o1.mask == 1).all()
  enc = flow_lib.Encoder(cfg.model.ngf, cfg.model.num_down, blocks.block_settings(cfg))
  feats = _fast_jit(enc.apply)({'params': v['params']['reference_encoder'],
                                'batch_stats': v['batch_stats']['reference_encoder']}, jnp.concatenate(args[1:], -1))
  for a, b in zip(o1.warped_features, jax.device_get(feats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_generator_parameter():
  cfg = tiny.get_config()
  g = generator.make_generator(cfg)
  rng = np.random.default_rng(0)
  s = cfg.image_size
  x_drive = jnp.asarray(rng.uniform(-1, 1, (2, s, s, 9)), jnp.float32)
  y_ref = jnp.asarray(rng.uniform(-1, 1, (2, s, s, 3)), jnp.float32)
  x_ref = jnp.asarray(rng.uniform(-1, 1, (2, s, s, 3)), jnp.float32)
  audio = jnp.asarray(rng.normal(size=(2, 300)), jnp.float32)
  target = jnp.asarray(rng.uniform(-1, 1, (2, s, s, 3)), jnp.float32)
  v = _random_variables(g, rng, x_drive, y_ref, x_ref, audio)

  def loss_fn(params, stats):
    out, new = g.apply({'params': params, 'batch_stats': stats}, x_drive, y_ref, x_ref, audio,
                       update_stats=True, mutable=['batch_stats'])
    return jnp.mean(jnp.abs(out.image - target)), (new['batch_stats'], out)

  (loss, (stats, out)), grads = _fast_jit(jax.value_and_grad(loss_fn, has_aux=True))(v['params'], v['batch_stats'])
  grads, stats, old_stats, out = jax.device_get((grads, stats, v['batch_stats'], out))  # numpy: no eager compiles.
  assert np.isfinite(float(loss))
  dead = [jax.tree_util.keystr(k) for k, x in jax.tree_util.tree_leaves_with_path(grads)
          if not np.isfinite(x).all() or not np.any(x != 0)]
  assert not dead, f'zero or non-finite gradient: {dead}'
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(stats))
  # Every power iteration advanced (u moved); sigma is the estimate of each kernel's largest singular value.
  moved = [bool((a != b).any()) for (k, a), b in zip(jax.tree_util.tree_leaves_with_path(stats),
                                                     jax.tree.leaves(old_stats)) if k[-1].key.endswith('/u')]
  assert moved and all(moved), 'update_stats=True must advance every power iteration'
  assert all(float(x) > 0 for k, x in jax.tree_util.tree_leaves_with_path(stats) if k[-1].key.endswith('/sigma'))
  assert np.abs(out.image).max() <= 1.0
  assert out.mask.min() >= 0.0 and out.mask.max() <= 1.0
