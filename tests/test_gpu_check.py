"""bench/gpu_check.sh (issue 21, item 6): the one-shot GPU check, in its CPU smoke mode.

No GPU here: the smoke mode runs the same sections (each in its own process) at a tiny size on the CPU. The test
checks the one JSON line it prints (the train step's figures: both compiled variants timed, FLOPs, finite losses; an
exported program deserialized and called) and runs G's inference section in this process. The GPU-only parts are
checked from their inputs: the peak FLOP/s table picks the right entry per device and dtype, and a GPU program whose
convolutions are not XLA's (or hold a CPU custom call) is reported as an error.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys
import types

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load():
  spec = importlib.util.spec_from_file_location('bench_gpu_check', REPO / 'bench' / 'gpu_check.py')
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module


gpu_check = _load()


def test_smoke_prints_one_json_line():
  """The script as a user runs it (two sections, each in its own process): one JSON line with the train step's
  figures and an exported program deserialized and called."""
  proc = subprocess.run(['bash', str(REPO / 'bench' / 'gpu_check.sh'), '--smoke', '--sections', 'train_float32,exported',
                         '--exported', 'g_inference_b1_fp32', '--budget-s', '300'],
                        capture_output=True, text=True, timeout=400, cwd='/')
  lines = proc.stdout.strip().splitlines()
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(lines) == 1, proc.stdout[-2000:]
  out = json.loads(lines[0])
  assert out['bench'] == 'gpu_check' and out['smoke'] is True and out['ok'] is True
  assert out['sections_run'] == ['train_float32', 'exported'] and out['skipped'] == {} and out['errors'] == {}
  assert out['platform'] == 'cpu' and out['jax'] and out['per_device_batch'] == 2 and out['image_size'] == 16

  train = out['train_float32']
  assert train['dtype'] == 'float32' and train['devices'] == 1 and train['steps_timed'] == 2
  assert set(train['step_ms_median']) == {'d', 'no_d'}  # Both compiled steps ('two_steps', d_every 2) ran.
  assert train['samples_per_s'] > 0 and train['step_ms_mean'] > 0 and train['compile_s'] > 0
  assert train['metrics_finite'] is True
  by_variant = train['flops_per_step_by_variant']
  assert by_variant['d'] > by_variant['no_d'] > 0  # The D update adds D's and D_m's backward passes.
  assert train['flops_per_sample'] == pytest.approx((by_variant['d'] + by_variant['no_d']) / 2 / 2)
  assert train['mfu'] is None and train['xla_conv_on_gpu'] is None  # No peak FLOP/s and no GPU on a CPU.
  assert train['xla_memory_analysis']['d']['temp'] > 0 and train['host_max_rss_bytes'] > 0

  exported = out['exported']
  assert exported['platforms'] == ['cpu'] and exported['devices'] == 1
  [program] = exported['programs']
  assert program['name'] == 'g_inference_b1_fp32' and program['called'] is True and program['outputs_finite']
  assert program['nr_devices'] == 1 and program['bad_custom_calls'] == [] and program['call_ms'] > 0


def test_inference_section_at_smoke_size():
  """The inference section in this process (bf16: the float32 code path is the same): batch 1 and the big batch,
  finite frames."""
  args = gpu_check.parse_args(['--smoke', '--big-batch', '2', '--inference-calls', '1', '--inference-dtypes',
                                'bfloat16'])
  out = gpu_check.section_inference(args)
  assert set(out) >= {'bfloat16', 'image_size', 'peak_bytes_in_use'} and 'float32' not in out
  for dtype in ('bfloat16',):
    for b in (1, 2):
      entry = out[dtype][f'b{b}']
      assert entry['frames_per_s'] > 0 and entry['latency_ms_median'] > 0 and entry['output_finite'] is True
      assert entry['output_shape'] == [b, 16, 16, 3] and entry['flops_per_frame'] > 0


def test_peak_flops_per_device_and_dtype():
  gpu = lambda kind: types.SimpleNamespace(platform='gpu', device_kind=kind)  # noqa: E731
  assert gpu_check.peak_flops(gpu('NVIDIA H100 80GB HBM3'), 'bfloat16') == (989.4e12, 'H100 bf16 dense')
  assert gpu_check.peak_flops(gpu('NVIDIA H100 80GB HBM3'), 'float32') == (494.7e12, 'H100 TF32 dense')
  assert gpu_check.peak_flops(gpu('NVIDIA H100 PCIe'), 'bfloat16')[0] == 756e12
  assert gpu_check.peak_flops(gpu('NVIDIA H200'), 'bfloat16')[0] == 989.4e12
  assert gpu_check.peak_flops(gpu('Tesla T4'), 'bfloat16') == (None, None)
  assert gpu_check.peak_flops(types.SimpleNamespace(platform='cpu', device_kind='cpu'), 'float32') == (None, None)


def test_a_gpu_program_without_xla_convolutions_is_an_error():
  assert gpu_check.gpu_conv_problem({'xla_conv_on_gpu': None, 'cpu_only_custom_calls': ['x_onednn']}) is None
  assert gpu_check.gpu_conv_problem({'xla_conv_on_gpu': True, 'cpu_only_custom_calls': []}) is None
  assert 'not XLA' in gpu_check.gpu_conv_problem({'xla_conv_on_gpu': False, 'conv_impl_auto_resolves_to': 'im2col'})
  assert 'onednn' in gpu_check.gpu_conv_problem({'xla_conv_on_gpu': True,
                                                 'cpu_only_custom_calls': ['headgan_onednn_conv_forward']})
  assert gpu_check.cpu_only(['__cudnn$convForward', 'headgan_onednn_conv_x']) == ['headgan_onednn_conv_x']


def test_bad_arguments_are_refused():
  for argv in (['--sections', 'train_float32,bogus'], ['--exported', 'train_step_d_fp16'], ['--devices', '0'],
               ['--inference-dtypes', 'float16']):
    with pytest.raises(SystemExit) as e:
      gpu_check.parse_args(argv)
    assert e.value.code == 2
