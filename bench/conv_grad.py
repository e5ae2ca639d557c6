"""Per-shape benchmark of HeadGAN's convolutions: forward, input gradient and weight gradient in XLA, with our
im2col weight gradient (headgan_jax/kernels/conv.py), with our oneDNN handlers (headgan_jax/kernels/onednn.py,
what conv_impl 'auto' runs on CPU) and in PyTorch (`torch.nn.functional.conv2d`, its own oneDNN build on CPU).

  python bench/conv_grad.py --config configs/paper.py [--config configs/tiny.py] [--batch 1] [--reps 3]
                            [--step-ms 12345]

For every distinct convolution shape that G, D and D_m run in a train step at global batch B (D and D_m see 2B
examples, fake and real; G's F 2B, frames t-1 and t; G's R B, frame t only, with config.train.shared_passes), it
prints the median time of each part, measured in ONE
process with the implementations interleaved (rep 1: XLA fwd, XLA dx, XLA dw, im2col dw, oneDNN fwd, dx, dw, torch
fwd, dx, dw; rep 2: ...). The im2col form computes the forward pass and the input gradient with XLA's own ops, so
only its weight gradient differs.

Share of the train step: `flop %` is the shape's forward + input gradient + weight gradient FLOPs, times the number
of such convs and how often the average step runs them (G: once each; D and D_m: forward and input gradient once in
L_G, and all three once more on the 1 in config.train.d_every steps that update them), over the average step's
FLOPs from XLA's cost analysis of the lowered train steps (without and with the D update). `est ms` is the same count times the measured times: the convolutions' share of the step's time when
compared with the step time of `bench/train_step.py` (pass it with --step-ms to get `time %`).
Figures are printed for humans, then ONE JSON line with all of them.
"""
from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from headgan_jax import config_files, host_malloc  # noqa: E402
from headgan_jax.kernels import conv  # noqa: E402
from headgan_jax.nn import probe  # noqa: E402

DN = ('NHWC', 'HWIO', 'NHWC')
PARTS = ('xla_fwd', 'xla_dx', 'xla_dw', 'ours_dw', 'onednn_fwd', 'onednn_dx', 'onednn_dw', 'torch_fwd', 'torch_dx',
         'torch_dw')
# How often a train step runs each part of a network's convs (see the module docstring).
# G: once each. D and D_m: forward and input gradient once in L_G (on fake and real together), and on the steps that
# update them (1 in config.train.d_every) forward, input and weight gradient once more.
def step_uses(config) -> dict[str, dict[str, float]]:
  k = 1.0 / int(config.train.d_every)
  d = {'fwd': 1 + k, 'dx': 1 + k, 'dw': k}
  return {'G': {'fwd': 1, 'dx': 1, 'dw': 1}, 'D': d, 'D_m': d}


def step_conv_calls(config, batch: int) -> dict[str, list[conv.ConvCall]]:
  """The convolutions of one train step at global batch `batch`: D and D_m see 2 x batch examples (fake and real),
  G's F sees 2 x batch (frames t-1 and t), R 2 x batch too, or only frame t (batch) with config.train.shared_passes."""
  calls = probe.network_conv_calls(config, 2 * batch)
  if config.train.shared_passes:
    r_calls = probe.network_conv_calls(config, batch, nets=('G',))['G']
    calls['G'] = ([c for c in calls['G'] if not c.name.startswith('render_net/')]
                  + [c for c in r_calls if c.name.startswith('render_net/')])
  return calls


def conv_flops(call: conv.ConvCall) -> float:
  """Multiply-adds x 2 of one forward pass (the input and weight gradients cost the same)."""
  return conv.forward_flops(call.input_shape, call.kernel_shape, call.strides, call.padding)


def conv_impl_auto_picks_ours(call: conv.ConvCall) -> bool:
  """Whether conv_impl 'auto' (on CPU) runs this convolution with the im2col weight gradient."""
  jaxpr = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated_auto(
      x, w, call.strides, call.padding, dimension_numbers=DN))(
          jax.ShapeDtypeStruct(call.input_shape, jnp.float32), jax.ShapeDtypeStruct(call.kernel_shape, jnp.float32))
  return 'custom_vjp_call' in str(jaxpr)


def step_flops(config, batch: int) -> float | None:
  """FLOPs of the average train step (XLA cost analysis of the lowered, not compiled, steps without and with the D
  update, weighted 1 - 1/d_every and 1/d_every; VGG off)."""
  from headgan_jax.data import batch as batch_lib  # pylint: disable=import-outside-toplevel
  from headgan_jax.train import state as state_lib, step as step_lib  # pylint: disable=import-outside-toplevel
  config = config.copy_and_resolve_references()
  config.loss.use_vgg = False
  config.train.batch_size = batch
  config.runtime.conv_impl = 'xla'  # Same FLOPs; XLA's cost analysis counts a scan's body once, not per step.
  models, optimizers = state_lib.make_models(config), state_lib.make_optimizers(config)
  state = jax.eval_shape(lambda k: state_lib.init_state(k, config, models, optimizers), jax.random.key(0))
  spec = batch_lib.batch_spec(config, batch)
  flops = {}
  for update_d in (False, True):
    fn = step_lib.train_step_fn(config, models, optimizers, update_d=update_d)
    cost = jax.jit(fn).lower(state, spec, None).cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else None
    if not cost or 'flops' not in cost:
      return None
    flops[update_d] = float(cost['flops'])
  k = 1.0 / int(config.train.d_every)
  return (1 - k) * flops[False] + k * flops[True]


def make_timers(call: conv.ConvCall) -> dict:
  """Callables (each runs one part to completion) for every entry of PARTS."""
  import torch  # pylint: disable=import-outside-toplevel
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, call.input_shape, jnp.float32)
  w = jax.random.normal(kw, call.kernel_shape, jnp.float32) / np.sqrt(np.prod(call.kernel_shape[:3]))

  def fwd(fn, x, w):
    return fn(x, w, call.strides, call.padding, dimension_numbers=DN)

  g = jax.random.normal(kg, jax.eval_shape(functools.partial(fwd, lax.conv_general_dilated), x, w).shape)

  def grad(fn, index, x, w, g):
    return jax.vjp(functools.partial(fwd, fn), x, w)[1](g)[index]

  jitted = {
      'xla_fwd': jax.jit(functools.partial(fwd, lax.conv_general_dilated)),
      'xla_dx': jax.jit(functools.partial(grad, lax.conv_general_dilated, 0)),
      'xla_dw': jax.jit(functools.partial(grad, lax.conv_general_dilated, 1)),
      'ours_dw': jax.jit(functools.partial(grad, conv.conv_general_dilated, 1)),
      'onednn_fwd': jax.jit(functools.partial(fwd, conv.conv_general_dilated_onednn)),
      'onednn_dx': jax.jit(functools.partial(grad, conv.conv_general_dilated_onednn, 0)),
      'onednn_dw': jax.jit(functools.partial(grad, conv.conv_general_dilated_onednn, 1)),
  }
  args = {'xla_fwd': (x, w), 'onednn_fwd': (x, w)}
  timers = {name: (lambda f=f, a=args.get(name, (x, w, g)): jax.block_until_ready(f(*a)))
            for name, f in jitted.items()}
  (pt, pb), (pl, pr) = call.padding
  if pt != pb or pl != pr:
    raise ValueError(f'{call}: torch conv2d needs symmetric padding')
  xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()
  wt = torch.from_numpy(np.array(w)).permute(3, 2, 0, 1).contiguous()
  gt = torch.from_numpy(np.array(g)).permute(0, 3, 1, 2).contiguous()
  stride, padding = list(call.strides), [pt, pl]

  def torch_bwd(mask):
    with torch.no_grad():
      torch.ops.aten.convolution_backward(gt, xt, wt, None, stride, padding, [1, 1], False, [0, 0], 1, mask)

  def torch_fwd():
    with torch.no_grad():
      torch.nn.functional.conv2d(xt, wt, stride=stride, padding=padding)

  timers['torch_fwd'] = torch_fwd
  timers['torch_dx'] = functools.partial(torch_bwd, [True, False, False])
  timers['torch_dw'] = functools.partial(torch_bwd, [False, True, False])
  # Check once that the three implementations agree (a benchmark of wrong numbers is worth nothing).
  ref = np.asarray(jitted['xla_dw'](x, w, g))
  ours = np.asarray(jitted['ours_dw'](x, w, g))
  onednn_dw = np.asarray(jitted['onednn_dw'](x, w, g))
  xt.requires_grad_(True)
  wt_grad = wt.clone().requires_grad_(True)
  yt = torch.nn.functional.conv2d(xt, wt_grad, stride=stride, padding=padding)
  yt.backward(gt)
  torch_dw = wt_grad.grad.permute(2, 3, 1, 0).numpy()
  xt.requires_grad_(False)
  scale = np.max(np.abs(ref))
  return timers, {name: float(np.max(np.abs(a - ref)) / scale)
                  for name, a in (('ours', ours), ('onednn', onednn_dw), ('torch', torch_dw))}


def bench_shape(call: conv.ConvCall, reps: int) -> dict:
  timers, errs = make_timers(call)
  for t in timers.values():  # Compile / warm up.
    t()
  times = {name: [] for name in timers}
  for _ in range(reps):
    for name in PARTS:
      t0 = time.perf_counter()
      timers[name]()
      times[name].append(time.perf_counter() - t0)
  out = {name: round(1e3 * float(np.median(v)), 2) for name, v in times.items()}
  out.update({f'dw_rel_err_{name}': e for name, e in errs.items()})
  return out


def run(args: argparse.Namespace) -> dict:
  results = {'bench': 'conv_grad', 'malloc': host_malloc.active(), 'batch': args.batch, 'reps': args.reps, 'devices': jax.devices()[0].device_kind,
             'platform': jax.default_backend(), 'configs': {}}
  import torch  # pylint: disable=import-outside-toplevel
  results['torch'] = torch.__version__
  results['torch_threads'] = torch.get_num_threads()
  for path, step_ms in zip(args.config, args.step_ms or [None] * len(args.config)):
    config = config_files.load(path)
    calls = step_conv_calls(config, args.batch)
    uses_by_net = step_uses(config)
    total_flops = None if args.no_step_flops else step_flops(config, args.batch)
    rows = []
    print(f'\n== {path}: {config.image_size}x{config.image_size}, train-step batch {args.batch} '
          f'(each network sees {2 * args.batch}); medians of {args.reps} interleaved reps, ms')
    print(f"{'net':4} {'n':>3} {'input':>18} {'kernel':>15} {'s':>2} | {'XLA fwd':>8} {'dx':>8} {'dw':>8} "
          f"{'ours dw':>8} | {'oneDNN fwd':>10} {'dx':>8} {'dw':>8} | {'torch fwd':>9} {'dx':>8} {'dw':>8} | "
          f"{'dw x':>5} {'step x':>6} {'flop %':>6} {'est ms XLA':>10} {'im2col':>8} {'oneDNN':>8} {'torch':>8}")
    for net in args.nets:
      uses = uses_by_net[net]
      for call, count in conv.distinct_calls(calls[net]):
        t = bench_shape(call, args.reps)
        flops = conv_flops(call) * count * (uses['fwd'] + uses['dx'] + uses['dw'])
        est_xla = count * (uses['fwd'] * t['xla_fwd'] + uses['dx'] * t['xla_dx'] + uses['dw'] * t['xla_dw'])
        est_ours = count * (uses['fwd'] * t['xla_fwd'] + uses['dx'] * t['xla_dx'] + uses['dw'] * t['ours_dw'])
        est_onednn = count * (uses['fwd'] * t['onednn_fwd'] + uses['dx'] * t['onednn_dx']
                              + uses['dw'] * t['onednn_dw'])
        est_torch = count * (uses['fwd'] * t['torch_fwd'] + uses['dx'] * t['torch_dx'] + uses['dw'] * t['torch_dw'])
        auto = conv_impl_auto_picks_ours(call)
        est_auto = est_ours if auto else est_xla  # conv_impl 'auto' without the oneDNN handlers.
        row = dict(net=net, count=count, input=call.input_shape, kernel=call.kernel_shape, strides=call.strides,
                   padding=call.padding, example=call.name, **t, flops_in_step=flops,
                   flop_share=None if not total_flops else flops / total_flops,
                   est_ms_xla=round(est_xla, 1), est_ms_ours=round(est_ours, 1), est_ms_onednn=round(est_onednn, 1),
                   est_ms_torch=round(est_torch, 1),
                   auto_uses='ours' if auto else 'xla', est_ms_auto=round(est_auto, 1))
        rows.append(row)
        share = '' if row['flop_share'] is None else f"{100 * row['flop_share']:.1f}"
        print(f"{net:4} {count:3d} {str(call.input_shape[1:]):>18} {str(call.kernel_shape):>15} "
              f"{call.strides[0]:2d} | {t['xla_fwd']:8.1f} {t['xla_dx']:8.1f} {t['xla_dw']:8.1f} {t['ours_dw']:8.1f} | "
              f"{t['onednn_fwd']:10.1f} {t['onednn_dx']:8.1f} {t['onednn_dw']:8.1f} | "
              f"{t['torch_fwd']:9.1f} {t['torch_dx']:8.1f} {t['torch_dw']:8.1f} | "
              f"{t['xla_dw'] / t['ours_dw']:5.2f} {est_xla / est_ours:6.2f} {share:>6} {est_xla:10.0f} "
              f"{est_ours:8.0f} {est_onednn:8.0f} {est_torch:8.0f}", flush=True)
    summary = {k: round(sum(r[f'est_ms_{k}'] for r in rows), 1) for k in ('xla', 'ours', 'auto', 'onednn', 'torch')}
    conv_flop_total = sum(r['flops_in_step'] for r in rows)
    print(f"convolutions of one train step (estimated from the table): XLA {summary['xla']:.0f} ms, im2col dW "
          f"everywhere {summary['ours']:.0f} ms, im2col dW by the 'auto' thresholds {summary['auto']:.0f} ms, oneDNN "
          f"(conv_impl 'auto' with the handlers built) {summary['onednn']:.0f} ms, torch {summary['torch']:.0f} ms; "
          f"oneDNN / torch {summary['onednn'] / summary['torch']:.2f}")
    if total_flops:
      print(f'they are {100 * conv_flop_total / total_flops:.1f}% of the step\'s {total_flops / 1e9:.1f} GFLOP '
            '(XLA cost analysis)')
    if step_ms:
      print(f"with the measured step of {step_ms:.0f} ms: XLA's convs {100 * summary['xla'] / step_ms:.0f}% of it")
      for r in rows:
        r['time_share'] = r['est_ms_xla'] / step_ms
    results['configs'][path] = {'image_size': config.image_size, 'rows': rows, 'est_conv_ms': summary,
                                'step_flops': total_flops, 'conv_flops': conv_flop_total, 'step_ms': step_ms}
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', action='append', help='config file(s) (default: configs/paper.py, tiny.py)')
  parser.add_argument('--batch', type=int, default=1, help='global train batch (networks see 2x this)')
  parser.add_argument('--reps', type=int, default=3, help='interleaved repetitions per shape (after a warm-up)')
  parser.add_argument('--nets', nargs='+', default=['G', 'D', 'D_m'], choices=['G', 'D', 'D_m'])
  parser.add_argument('--step-ms', type=float, action='append',
                      help='measured train step time per --config (from bench/train_step.py) for time shares')
  parser.add_argument('--no-step-flops', action='store_true', help='skip lowering the train step for its FLOPs')
  args = parser.parse_args(argv)
  args.config = args.config or [str(REPO / 'configs' / 'paper.py'), str(REPO / 'configs' / 'tiny.py')]
  if args.step_ms and len(args.step_ms) != len(args.config):
    parser.error('give one --step-ms per --config')
  result = run(args)
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  host_malloc.reexec_with_tcmalloc()  # First: it may start this command again (headgan_jax/host_malloc.py).
  sys.exit(main())
