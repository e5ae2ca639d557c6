"""A PyTorch twin of our generator G = F + R, for the CPU speed comparison in `bench/train_step.py --vs-torch`.

Same architecture, same layer order, same maths as headgan_jax/nn (flow.py, render.py, blocks.py), written with
plain `torch.nn.functional` ops (conv2d, instance_norm, pixel_shuffle, grid_sample), and loaded from OUR Flax
parameters, so its output can be checked against ours before any time is measured (`load_flax_params` +
`max_output_diff` in the bench). Spectral norm is flax.linen.SpectralNorm's one power-iteration step on the
(C_out, K K C_in) matrix, with the iteration vector u kept as a buffer and updated when training, like ours.

Only for benchmarks: the project's model is the JAX one.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IN_EPS = 1e-5
SN_EPS = 1e-12


class Conv(nn.Module):
  """k x k conv, symmetric zero (or `reflect`) padding k // 2 (or `padding`), optional bias and spectral norm."""

  def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, bias: bool = True, sn: bool = False,
               padding: int | None = None, reflect: bool = False):
    super().__init__()
    self.reflect = reflect
    self.weight = nn.Parameter(torch.zeros(c_out, c_in, k, k))
    self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
    self.stride, self.padding = stride, k // 2 if padding is None else padding
    self.sn = sn
    if sn:
      self.register_buffer('u', torch.randn(1, c_out))

  def kernel(self) -> torch.Tensor:
    if not self.sn:
      return self.weight
    w = self.weight.reshape(self.weight.shape[0], -1)  # (C_out, K K C_in): rows = flax's columns.
    with torch.no_grad():
      v = F.normalize(self.u @ w, dim=1, eps=SN_EPS)
      u = F.normalize(v @ w.T, dim=1, eps=SN_EPS)
      if self.training:
        self.u.copy_(u)
    sigma = (v @ w.T @ u.T)[0, 0]
    return self.weight / torch.where(sigma != 0, sigma, torch.ones_like(sigma))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.reflect and self.padding:
      p = self.padding
      return F.conv2d(F.pad(x, (p, p, p, p), mode='reflect'), self.kernel(), self.bias, self.stride, 0)
    return F.conv2d(x, self.kernel(), self.bias, self.stride, self.padding)


def instance_norm(x: torch.Tensor) -> torch.Tensor:
  return F.instance_norm(x, eps=IN_EPS)


class AffineInstanceNorm(nn.Module):
  """Instance norm with a learnable per-channel scale and shift (blocks.instance_norm(affine=True))."""

  def __init__(self, c: int):
    super().__init__()
    self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=IN_EPS)


# config.model.blocks.spade_resize -> F.interpolate's mode (see blocks.resize_to).
TORCH_RESIZE = {'nearest_floor': 'nearest', 'nearest': 'nearest-exact', 'bilinear': 'bilinear'}


class SpadeNorm(nn.Module):
  resize = 'nearest'  # Set from the config by Generator.

  def __init__(self, c: int, c_cond: int, hidden: int):
    super().__init__()
    self.shared, self.gamma, self.beta = Conv(c_cond, hidden, 3), Conv(hidden, c, 3), Conv(hidden, c, 3)

  def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    if cond.shape[-2:] != x.shape[-2:]:
      cond = F.interpolate(cond, size=x.shape[-2:], mode=self.resize)
    actv = F.relu(self.shared(cond))
    return instance_norm(x) * (1 + self.gamma(actv)) + self.beta(actv)


class SpadeBlock(nn.Module):
  def __init__(self, c: int, c_cond: int, hidden: int, shortcut: bool = True, slope: float = 0.2):
    super().__init__()
    self.norm_0, self.norm_1 = SpadeNorm(c, c_cond, hidden), SpadeNorm(c, c_cond, hidden)
    self.conv_0, self.conv_1 = Conv(c, c, 3, bias=False, sn=True), Conv(c, c, 3, sn=True)
    self.shortcut, self.slope = shortcut, slope

  def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), self.slope))
    dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), self.slope))
    return x + dx if self.shortcut else dx


class AdaIN(nn.Module):
  def __init__(self, c: int, audio_dim: int):
    super().__init__()
    self.style = nn.Linear(audio_dim, 2 * c)

  def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    gamma, beta = self.style(a)[:, :, None, None].chunk(2, dim=1)
    return instance_norm(x) * (1 + gamma) + beta


class AdainBlock(nn.Module):
  def __init__(self, c: int, audio_dim: int, slope: float = 0.2):
    super().__init__()
    self.norm_0, self.norm_1 = AdaIN(c, audio_dim), AdaIN(c, audio_dim)
    self.conv_0, self.conv_1 = Conv(c, c, 3, bias=False, sn=True), Conv(c, c, 3, sn=True)
    self.slope = slope

  def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    dx = self.conv_0(F.leaky_relu(self.norm_0(x, a), self.slope))
    return self.conv_1(F.leaky_relu(self.norm_1(dx, a), self.slope))


class Encoder(nn.Module):
  def __init__(self, c_in: int, ngf: int, num_down: int):
    super().__init__()
    # The paper config's encoder (authors' code): spectral-norm convs without bias, reflection padding before the
    # 7x7, affine instance norms.
    widths = [ngf * 4**i for i in range(num_down + 1)]
    self.convs = nn.ModuleList([Conv(c_in, ngf, 7, bias=False, sn=True, reflect=True)] + [
        Conv(widths[i - 1], widths[i], 3, stride=2, bias=False, sn=True) for i in range(1, num_down + 1)])
    self.norms = nn.ModuleList([AffineInstanceNorm(w) for w in widths])

  def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
    feats = []
    for conv, norm in zip(self.convs, self.norms):
      x = F.relu(norm(conv(x)))
      feats.append(x)
    return feats[::-1]


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
  """Backward warp by a pixel flow (B, 2, H, W) (x, y), bilinear, border-clamped (= flow.warp)."""
  _, _, h, w = image.shape
  ys = torch.arange(h, dtype=image.dtype).view(1, h, 1)
  xs = torch.arange(w, dtype=image.dtype).view(1, 1, w)
  gx = (xs + flow[:, 0]) * (2 / (w - 1)) - 1
  gy = (ys + flow[:, 1]) * (2 / (h - 1)) - 1
  return F.grid_sample(image, torch.stack([gx, gy], -1), mode='bilinear', padding_mode='border', align_corners=True)


class Generator(nn.Module):
  """G = F + R with the config's widths (NCHW tensors). forward -> (image, warped_ref, warped_features)."""

  def __init__(self, config):
    super().__init__()
    m, b = config.model, config.model.blocks
    built = {'encoder_spectral_norm': True, 'affine_norm': True, 'padding_7x7': 'reflect',
             'spectral_norm': True, 'dead_conv_biases': False}
    for field, value in built.items():
      if b[field] != value:
        raise ValueError(f'torch twin: built for config.model.blocks.{field} = {value!r}, not {b[field]!r}')
    ngf, nd, hidden, c_drive = m.ngf, m.num_down, b.spade_hidden, 3 * (m.num_past_frames + 1)
    widths = [ngf * 4**i for i in range(nd + 1)][::-1]  # Lowest resolution first: 512, 128, 32.
    self.num_down, self.low_blocks, self.slope = nd, m.flow_low_blocks, b.lrelu_slope
    # F.
    self.f_encoder = Encoder(6, ngf, nd)
    self.f_low = nn.ModuleList([SpadeBlock(widths[0], c_drive, hidden, b.shortcut, b.lrelu_slope)
                                for _ in range(m.flow_low_blocks)])
    self.f_up = nn.ModuleList([SpadeBlock(widths[level + 1], c_drive, hidden, b.shortcut, b.lrelu_slope)
                               for level in range(nd - 1)])
    self.f_flow_head = Conv(widths[-1], 2, 7, reflect=True)
    self.f_mask_head = Conv(widths[-1], 1, 7, reflect=True)
    # R.
    self.r_encoder = Encoder(c_drive, ngf, nd)
    self.r_spade = nn.ModuleList([SpadeBlock(widths[level], widths[level], hidden, b.shortcut, b.lrelu_slope)
                                  for level in range(nd + 1)] +
                                 [SpadeBlock(widths[-1], 3, hidden, b.shortcut, b.lrelu_slope)])
    self.r_adain = nn.ModuleList([AdainBlock(widths[level], m.audio_dim, b.lrelu_slope) for level in range(nd + 1)])
    self.r_head = Conv(widths[-1], 3, 7, reflect=True)
    for module in self.modules():
      if isinstance(module, SpadeNorm):
        module.resize = TORCH_RESIZE[b.spade_resize]

  def forward(self, x_drive, y_ref, x_ref, audio):
    feats = self.f_encoder(torch.cat([y_ref, x_ref], 1))
    h = feats[0]
    for block in self.f_low:
      h = block(h, x_drive)
    for level in range(self.num_down):
      h = F.pixel_shuffle(h, 2)
      if level < self.num_down - 1:
        h = self.f_up[level](h, x_drive)
    mask = (torch.tanh(self.f_mask_head(h)) + 1) / 2
    flow = self.f_flow_head(h) * mask
    warped_ref = warp(y_ref, flow)
    flows, f = {flow.shape[-1]: flow}, flow
    while f.shape[-1] > feats[0].shape[-1]:
      f = F.avg_pool2d(f, 2) / 2
      flows[f.shape[-1]] = f
    warped = [warp(x, flows[x.shape[-1]]) for x in feats]
    h = self.r_encoder(x_drive)[0]
    for level in range(self.num_down + 1):
      if level:
        h = F.pixel_shuffle(h, 2)
      h = self.r_spade[level](h, warped[level])
      h = self.r_adain[level](h, audio)
    h = self.r_spade[-1](h, warped_ref)
    image = torch.tanh(self.r_head(F.leaky_relu(h, self.slope)))
    return image, warped_ref, warped


def _torch_name_map(model: Generator, config) -> dict[str, str]:
  """Flax path prefix ('flow_net/encoder/conv_0/conv') -> torch module path ('f_encoder.convs.0')."""
  m = config.model
  out = {}

  def block(flax_prefix, torch_prefix, adain=False):
    for n in (0, 1):
      if adain:
        out[f'{flax_prefix}/norm_{n}/style'] = f'{torch_prefix}.norm_{n}.style'
      else:
        for part in ('shared', 'gamma', 'beta'):
          out[f'{flax_prefix}/norm_{n}/{part}/conv'] = f'{torch_prefix}.norm_{n}.{part}'
      out[f'{flax_prefix}/conv_{n}/conv'] = f'{torch_prefix}.conv_{n}'

  for net, t_enc in (('flow_net', 'f_encoder'), ('render_net', 'r_encoder')):
    for i in range(m.num_down + 1):
      out[f'{net}/encoder/conv_{i}/conv/conv'] = f'{t_enc}.convs.{i}'
      out[f'{net}/encoder/conv_{i}/norm'] = f'{t_enc}.norms.{i}'
  for i in range(m.flow_low_blocks):
    block(f'flow_net/spade_low_{i}', f'f_low.{i}')
  for level in range(m.num_down - 1):
    block(f'flow_net/spade_up_{level}', f'f_up.{level}')
  out['flow_net/flow_head/conv'] = 'f_flow_head'
  out['flow_net/mask_head/conv'] = 'f_mask_head'
  for level in range(m.num_down + 2):
    block(f'render_net/spade_{level}', f'r_spade.{level}')
  for level in range(m.num_down + 1):
    block(f'render_net/adain_{level}', f'r_adain.{level}', adain=True)
  out['render_net/head/conv'] = 'r_head'
  return out


def load_flax_params(model: Generator, config, params, batch_stats) -> None:
  """Copies our G's Flax parameters (and spectral-norm vectors u) into the twin; every tensor must be matched."""
  flat_params = {path: np.array(_get(params, path)) for path in _paths(params)}
  names = _torch_name_map(model, config)
  modules = dict(model.named_modules())
  used = set()
  for flax_prefix, torch_name in names.items():
    module = modules[torch_name]
    with torch.no_grad():
      if isinstance(module, AffineInstanceNorm):
        module.weight.copy_(torch.from_numpy(flat_params[f'{flax_prefix}/scale']))
        module.bias.copy_(torch.from_numpy(flat_params[f'{flax_prefix}/bias']))
        used.update({f'{flax_prefix}/scale', f'{flax_prefix}/bias'})
        continue
      if isinstance(module, nn.Linear):
        module.weight.copy_(torch.from_numpy(flat_params[f'{flax_prefix}/kernel'].T))
        module.bias.copy_(torch.from_numpy(flat_params[f'{flax_prefix}/bias']))
        used.update({f'{flax_prefix}/kernel', f'{flax_prefix}/bias'})
        continue
      module.weight.copy_(torch.from_numpy(flat_params[f'{flax_prefix}/kernel'].transpose(3, 2, 0, 1)))
      used.add(f'{flax_prefix}/kernel')
      if module.bias is not None:
        module.bias.copy_(torch.from_numpy(flat_params[f'{flax_prefix}/bias']))
        used.add(f'{flax_prefix}/bias')
      if module.sn:
        block_conv = flax_prefix.rsplit('/', 1)[0]  # .../conv_0 (params under .../conv_0/conv, u under .../sn).
        module.u.copy_(torch.from_numpy(np.array(_get(batch_stats, f'{block_conv}/sn/conv/kernel/u'))))
  missing = set(_paths(params)) - used
  if missing:
    raise ValueError(f'torch twin: Flax parameters not loaded: {sorted(missing)[:5]} ...')


def _paths(tree, prefix='') -> list[str]:
  out = []
  for k, v in tree.items():
    path = f'{prefix}/{k}' if prefix else k
    out.extend(_paths(v, path) if isinstance(v, dict) else [path])
  return out


def _get(tree, path: str):
  """tree['a']['b']['conv/kernel/u'] for path 'a/b/conv/kernel/u' (flax stores u under a '/'-joined key)."""
  node = tree
  parts = path.split('/')
  while parts:
    for n in range(len(parts), 0, -1):
      key = '/'.join(parts[:n])
      if isinstance(node, dict) and key in node:
        node, parts = node[key], parts[n:]
        break
    else:
      raise KeyError(path)
  return np.asarray(node)
