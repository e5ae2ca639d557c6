"""bench/export.py (issue 21, item 1): accelerator programs exported with jax.export on this CPU-only machine.

At the train tests' small size (tests/train_configs.py, 32 px, per-device batch 2) over a mesh of 8 devices, for
cuda and tpu at once, float32 and bfloat16: the two train steps and G's inference at batch 1 and 8. Each file is
read back with jax.export.deserialize and checked here independently of the script's own checks: both platforms,
an 8-device program whose batch inputs (global batch 16) are tiled 8 ways on their first axis, XLA's convolution
in it, and no custom call but XLA's own (no oneDNN, FFI handler or host callback). The checker itself must catch a
host callback and oneDNN / FFI targets.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train_configs

REPO = pathlib.Path(__file__).resolve().parents[1]
N_DEVICES = 8


def _load_bench():
  spec = importlib.util.spec_from_file_location('bench_export', REPO / 'bench' / 'export.py')
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there.
  spec.loader.exec_module(module)
  return module


bench_export = _load_bench()


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  out = tmp_path_factory.mktemp('export')
  args = bench_export.parse_args(['--config', 'train_configs.small_train_config()', '--platforms', 'cuda,tpu', '--out',
                                  str(out), '--devices', str(N_DEVICES), '--dtypes', 'float32,bfloat16',
                                  '--batches', '1,8', '--no-flops'])
  config = train_configs.small_train_config()
  config.runtime.conv_impl = 'auto'  # What a user's config says: the script must force XLA's own convolution.
  args.config_obj = config
  summary = bench_export.run(args)
  return out, summary, config


def test_summary_lists_every_program(exported):
  out, summary, config = exported
  names = sorted(e['name'] for e in summary['programs'])
  assert names == sorted(f'{n}_{d}' for n in ('train_step_d', 'train_step_no_d', 'g_inference_b1', 'g_inference_b8')
                         for d in ('fp32', 'bf16'))
  assert summary['all_checks_passed'], [e['checks'] for e in summary['programs']]
  on_disk = json.loads((out / 'summary.json').read_text())
  assert [e['name'] for e in on_disk['programs']] == [e['name'] for e in summary['programs']]
  for e in summary['programs']:
    assert e['platforms'] == ['cuda', 'tpu']
    assert e['conv_impl'] == 'xla'
    assert (out / e['file']).stat().st_size == e['bytes']
  assert summary['global_batch'] == N_DEVICES * config.train.batch_size


ALLOWED = {'Sharding', 'SPMDFullToShardShape', 'SPMDShardToFullShape'}


@pytest.mark.parametrize('dtype', ['fp32', 'bf16'])
@pytest.mark.parametrize('name', ['train_step_d', 'train_step_no_d', 'g_inference_b1', 'g_inference_b8'])
def test_program_deserializes_for_both_platforms_sharded_without_cpu_calls(exported, name, dtype):
  out, summary, config = exported
  entry = next(e for e in summary['programs'] if e['name'] == f'{name}_{dtype}')
  exp = jax.export.deserialize(bytearray((out / f'{name}_{dtype}.jaxexport').read_bytes()))
  assert tuple(exp.platforms) == ('cuda', 'tpu')
  text = exp.mlir_module()
  targets = set(re.findall(r'custom_call\s*@([\w.$\-]+)', text)) | set(re.findall(r'call_target_name = "([^"]+)"',
                                                                                 text))
  assert targets <= ALLOWED, targets
  assert not re.search(r'onednn|dnnl|callback', text, re.IGNORECASE)
  assert not exp.ordered_effects and not exp.unordered_effects
  assert 'stablehlo.convolution' in text  # XLA's own convolution (cuDNN / the TPU compiler), not a CPU path.
  expected_dtype = 'bf16' if dtype == 'bf16' else 'f32'
  assert re.search(rf'stablehlo\.convolution.*-> tensor<[0-9x]+{expected_dtype}>', text)
  size = config.image_size
  batch_inputs = {path: (shape, sharding) for path, shape, _, sharding in entry['batch_inputs']}
  if name == 'g_inference_b1':
    assert exp.nr_devices == 1
    assert batch_inputs["[1]['x_drive']"][0] == [1, size, size, 9]
    return
  assert exp.nr_devices == N_DEVICES
  assert re.search(rf'sdy\.mesh @\w+ = <\["data"={N_DEVICES}\]>', text)
  global_batch = 8 if name == 'g_inference_b8' else N_DEVICES * config.train.batch_size
  key = '[1].y' if name.startswith('train') else "[1]['y_ref']"
  assert batch_inputs[key][0] == [global_batch, size, size, 3]
  kept = set(exp.module_kept_var_idx)
  paths = [leaf[0] for leaf in entry['input_leaves']]
  n_sharded = 0
  for i, (aval, sharding) in enumerate(zip(exp.in_avals, exp.in_shardings_hlo)):
    if i not in kept:
      continue
    if paths[i] in batch_inputs:
      assert aval.shape[0] == global_batch
      assert sharding.is_tiled() and list(sharding.tile_assignment_dimensions())[:aval.ndim] == (
          [N_DEVICES] + [1] * (aval.ndim - 1)), (paths[i], sharding)
      n_sharded += 1
    else:
      assert sharding.is_replicated(), (paths[i], sharding)  # Parameters, optimiser state, VGG.
  assert n_sharded >= 4


def test_checker_catches_cpu_only_calls():
  bad = bench_export.bad_custom_calls({'Sharding', 'onednn_conv_fwd_1234', 'xla_ffi_python_cpu_callback',
                                       'my_ffi_target', 'SPMDFullToShardShape'})
  assert bad == ['my_ffi_target', 'onednn_conv_fwd_1234', 'xla_ffi_python_cpu_callback']

  # jax.export refuses both kinds itself (a second line of defence): a host callback, and an FFI target such as
  # oneDNN's, which has no compatibility guarantee.
  def with_callback(x):
    y = jax.pure_callback(lambda a: np.asarray(a) * 2, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
    return jnp.sin(y)

  spec = jax.ShapeDtypeStruct((4,), jnp.float32)
  with pytest.raises(NotImplementedError, match='callback'):
    jax.export.export(jax.jit(with_callback), platforms=('cuda', 'tpu'))(spec)

  def with_ffi(x):
    return jax.ffi.ffi_call('onednn_conv_fwd_test', jax.ShapeDtypeStruct(x.shape, x.dtype))(x)

  with pytest.raises(ValueError, match='custom calls'):
    jax.export.export(jax.jit(with_ffi), platforms=('cuda', 'tpu'))(spec)
  unchecked = jax.export.export(jax.jit(with_ffi), platforms=('cuda', 'tpu'), disabled_checks=[
      jax.export.DisabledSafetyCheck.custom_call('onednn_conv_fwd_test')])(spec)
  assert bench_export.bad_custom_calls(bench_export.custom_call_targets(unchecked.mlir_module())) == [
      'onednn_conv_fwd_test']
