"""Benchmark of the 3D-face path: 3DMM fitting and rasterisation frames/s, and our rasteriser beside OpenGL.

  python bench/face3d.py [--size 256] [--frames 50] [--repeats 5] [--no-opengl]

Measures on whatever JAX backend is active (CPU here, GPU where there is one):
  - fitting.fit_video on a T-frame clip of synthetic landmarks (the default 3DMM's landmark vertices projected at
    random poses and expressions, plus 1 px noise), frames/s after compilation;
  - rasterise at size x size for the embedded default 3DMM (batch 1 and batch 8) and for a synthetic
    100k-triangle height field (batch 1), frames/s after compilation, and the process's peak memory;
  - the same meshes drawn by OpenGL (moderngl, headless EGL context; Mesa's llvmpipe software renderer where there is
    no GPU driver) with a depth test and gl_PrimitiveID written to an integer texture, read back per frame; the
    figure reported is ours / OpenGL in seconds per frame (below 1 = ours faster), plus the share of pixels on which
    both pick the same triangle.
Figures are printed, never asserted. The last line of output is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import paper  # noqa: E402
from headgan_jax.face3d import camera, morphable, raster  # noqa: E402


def _timed(fn, repeats: int) -> tuple[float, float]:
  """(first call incl. compilation, median of `repeats` later calls) in seconds."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _xla_temp_mb(vertices, faces, size: int) -> float | None:
  """Temporary buffer bytes XLA allocates for the z-buffer pass (None where the backend does not say)."""
  try:
    compiled = raster._triangle_ids.lower(vertices, jnp.asarray(faces, jnp.int32), height=size, width=size,
                                          chunk_pixels=raster.CPU_CHUNK_PIXELS if jax.default_backend() == 'cpu'
                                          else raster.ACCELERATOR_CHUNK_PIXELS,
                                          min_window=raster.DEFAULT_MIN_WINDOW).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20
  except (AttributeError, NotImplementedError):
    return None


def _poses(num: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  yaw = rng.uniform(-0.8, 0.8, num)
  pitch = rng.uniform(-0.3, 0.3, num)
  roll = rng.uniform(-0.2, 0.2, num)
  return camera.euler_to_matrix(jnp.asarray(yaw), jnp.asarray(pitch), jnp.asarray(roll))


def default_model_frames(model, num: int, size: int) -> np.ndarray:
  """(num, N, 3) pixel-space vertices of the default 3DMM at random poses, the face filling ~80% of the image."""
  rng = np.random.default_rng(1)
  p_exp = jnp.asarray(rng.normal(0, 0.7, (num, model.exp_std.shape[0])), jnp.float32)
  p_id = jnp.asarray(rng.normal(0, 0.5, (model.id_std.shape[0],)), jnp.float32)
  shapes = morphable.identity_adaptation(model, p_id, p_exp)
  extent = float(np.ptp(np.asarray(model.mean)[:, 1]))
  cam = camera.make_camera(_poses(num), jnp.full((num, 2), size / 2.0), jnp.full((num,), 0.8 * size / extent))
  return np.asarray(camera.project(shapes, cam)), cam, p_exp


def height_field(size: int, n: int = 224) -> tuple[np.ndarray, np.ndarray]:
  """A (n+1)^2-vertex, 2 n^2-triangle height field spanning ~92% of a size x size image (n = 224: 100,352 tris)."""
  h = 0.92 * size / n
  r, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing='ij')
  x, y = 0.04 * size + c * h + 0.013, 0.04 * size + r * h + 0.029
  z = 0.08 * size * np.sin(x / (0.12 * size)) * np.cos(y / (0.1 * size))
  v = np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float32)
  idx = (r * (n + 1) + c)[:n, :n].ravel()
  faces = np.stack([np.stack([idx, idx + 1, idx + n + 2], -1), np.stack([idx, idx + n + 2, idx + n + 1], -1)], 1)
  return v, faces.reshape(-1, 3).astype(np.int32)


class OpenGLRasteriser:
  """Triangle ids by OpenGL: orthographic pixel-space vertices, depth test (larger z wins), gl_PrimitiveID + 1."""

  VERTEX = """
    #version 330
    uniform vec2 size;
    uniform vec2 zrange;
    in vec3 pos;
    void main() {
      // Pixel (x right, y down) -> NDC; larger z (towards the camera) -> smaller NDC depth, passing GL_LESS.
      gl_Position = vec4(2.0 * pos.x / size.x - 1.0, 1.0 - 2.0 * pos.y / size.y,
                         -((pos.z - zrange.x) / (zrange.y - zrange.x) * 2.0 - 1.0), 1.0);
    }"""
  FRAGMENT = """
    #version 330
    out int tri;
    void main() { tri = gl_PrimitiveID + 1; }"""

  def __init__(self, faces: np.ndarray, num_vertices: int, height: int, width: int):
    import moderngl  # Optional: only the benchmark uses it.
    self.ctx = moderngl.create_standalone_context(backend='egl')
    self.renderer = self.ctx.info['GL_RENDERER']
    self.height, self.width = height, width
    self.prog = self.ctx.program(vertex_shader=self.VERTEX, fragment_shader=self.FRAGMENT)
    self.prog['size'].value = (float(width), float(height))
    self.vbo = self.ctx.buffer(reserve=num_vertices * 12)
    ibo = self.ctx.buffer(np.ascontiguousarray(faces, np.int32).tobytes())
    self.vao = self.ctx.vertex_array(self.prog, [(self.vbo, '3f', 'pos')], index_buffer=ibo, index_element_size=4)
    self.fbo = self.ctx.framebuffer(color_attachments=[self.ctx.texture((width, height), 1, dtype='i4')],
                                    depth_attachment=self.ctx.depth_renderbuffer((width, height)))

  def __call__(self, vertices: np.ndarray) -> np.ndarray:
    """(H, W) int32 triangle ids, -1 = background, for one frame of (N, 3) pixel-space vertices."""
    import moderngl
    z = vertices[:, 2]
    self.prog['zrange'].value = (float(z.min()) - 1.0, float(z.max()) + 1.0)
    self.vbo.write(np.ascontiguousarray(vertices, np.float32).tobytes())
    self.fbo.use()
    self.fbo.clear(depth=1.0)
    self.ctx.enable(moderngl.DEPTH_TEST)
    self.vao.render(moderngl.TRIANGLES)
    data = self.fbo.read(components=1, dtype='i4')
    # GL rows start at the bottom; ours at the top.
    return np.frombuffer(data, np.int32).reshape(self.height, self.width)[::-1] - 1


def bench_raster(name: str, frames: np.ndarray, faces: np.ndarray, size: int, repeats: int, batch: int,
                 gl_ok: bool, results: dict, notes: list) -> None:
  v = jnp.asarray(frames[:batch])
  first, per_call = _timed(lambda: raster.rasterise(v, faces, size, size).triangle_id, repeats)
  fps = batch / per_call
  key = f'raster_{name}_b{batch}'
  results[f'{key}_fps'] = round(fps, 2)
  results[f'{key}_compile_s'] = round(first - per_call, 2)
  temp_mb = _xla_temp_mb(v, faces, size)
  if temp_mb is not None:
    results[f'{key}_xla_temp_mb'] = round(temp_mb, 1)
    print(f'  XLA working memory of the z-buffer pass: {temp_mb:.1f} MB (compiled memory analysis)')
  print(f'rasterise {name}: {len(faces)} triangles, batch {batch}, {size}x{size}: {per_call * 1e3:.1f} ms/call, '
        f'{fps:.1f} frames/s (first call {first:.1f} s incl. compile); peak RSS {_peak_rss_mb():.0f} MB')
  if not gl_ok or batch != 1:
    return
  try:
    gl = OpenGLRasteriser(faces, frames.shape[1], size, size)
  except Exception as e:  # noqa: BLE001 - any failure to make a context is reported, not fatal.
    notes.append(f'OpenGL context failed: {type(e).__name__}: {e}')
    print(f'OpenGL: could not create a context ({type(e).__name__}: {e}); our figures stand alone.')
    return
  frame = np.asarray(frames[0], np.float32)
  gl(frame)  # Warm up (shader compilation).
  times = []
  for _ in range(max(repeats, 3)):
    start = time.perf_counter()
    ids_gl = gl(frame)
    times.append(time.perf_counter() - start)
  gl_time = statistics.median(times)
  ours = np.asarray(raster.rasterise(frame, faces, size, size).triangle_id)
  same = float(np.mean(ours == ids_gl))
  results[f'opengl_{name}_fps'] = round(1.0 / gl_time, 2)
  results[f'ratio_ours_over_opengl_{name}'] = round(per_call / gl_time, 3)
  results[f'opengl_{name}_same_id_fraction'] = round(same, 5)
  results['opengl_renderer'] = gl.renderer
  print(f'OpenGL ({gl.renderer}) {name}: {gl_time * 1e3:.1f} ms/frame incl. upload + read-back, '
        f'{1.0 / gl_time:.1f} frames/s; ours/OpenGL time ratio {per_call / gl_time:.2f}; '
        f'same triangle id on {100 * same:.2f}% of pixels')
  gl.ctx.release()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--frames', type=int, default=50, help='frames of the fitted clip')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--no-opengl', action='store_true')
  args = parser.parse_args()
  results: dict = {'backend': jax.default_backend(), 'device': str(jax.devices()[0]), 'size': args.size}
  notes: list = []
  print(f'JAX {jax.__version__} on {jax.default_backend()} ({jax.devices()[0]})')

  model = morphable.load_default()
  frames, cam, p_exp = default_model_frames(model, max(args.frames, 8), args.size)

  # Fitting: landmarks = projected landmark vertices of the posed clip + 1 px noise.
  try:
    from headgan_jax.face3d import fitting
    config = paper.get_config()
    rng = np.random.default_rng(2)
    landmarks = frames[:args.frames, np.asarray(model.landmark_indices), :2]
    landmarks = (landmarks + rng.normal(0, 1.0, landmarks.shape)).astype(np.float32)
    first, per_call = _timed(lambda: fitting.fit_video(model, landmarks, config).p_exp, args.repeats)
    results['fit_video_fps'] = round(args.frames / per_call, 2)
    results['fit_video_compile_s'] = round(first - per_call, 2)
    fit = fitting.fit_video(model, landmarks, config)
    results['fit_median_residual_px'] = round(float(jnp.median(fit.residual_px)), 3)
    print(f'fit_video: {args.frames} frames x {landmarks.shape[1]} landmarks, {config.face3d.fit_iterations} '
          f'iterations: {per_call * 1e3:.1f} ms/clip, {args.frames / per_call:.1f} frames/s (first call {first:.1f} s); '
          f'median RMS residual {float(jnp.median(fit.residual_px)):.2f} px (1 px noise added)')
  except (ImportError, AttributeError) as e:
    notes.append(f'fitting unavailable: {e}')
    print(f'fitting: not available ({e})')

  gl_ok = not args.no_opengl
  if gl_ok:
    try:
      import moderngl  # noqa: F401
    except ImportError as e:
      gl_ok = False
      notes.append(f'moderngl not installed: {e}')
      print('OpenGL: moderngl is not installed (pip install moderngl; apt-get install libegl1 libgl1-mesa-dri)')

  faces = np.asarray(model.faces)
  bench_raster('default_3dmm', frames, faces, args.size, args.repeats, 1, gl_ok, results, notes)
  bench_raster('default_3dmm', frames, faces, args.size, args.repeats, 8, gl_ok, results, notes)
  hv, hf = height_field(args.size)
  bench_raster('heightfield_100k', hv[None], hf, args.size, args.repeats, 1, gl_ok, results, notes)
  results['peak_rss_mb'] = round(_peak_rss_mb(), 1)
  results['notes'] = notes
  print(json.dumps(results))


if __name__ == '__main__':
  main()
