"""Inputs as people have them (issue 22, item 4): phone photos and phone videos, odd image modes and sizes, variable
frame rates, damaged streams, audio at any rate and with several streams, odd paths, an output folder that does not
exist. Every odd input is built here from the two fixtures (../shared/fixtures/reference.png, driving.mp4) with PIL,
PyAV and numpy. Each is read as meant to be seen, or refused with one line naming the file (docs/reliability.md).
"""
import shutil
import struct
import zlib
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from headgan_jax import errors, reenact
from headgan_jax.commands import reenact as reenact_command
from headgan_jax.audio import io as audio_io
from headgan_jax.tracking import facemesh as fm
from headgan_jax.tracking import video as video_lib


@pytest.fixture(scope='module')
def reference(fixtures_dir) -> np.ndarray:
  return np.asarray(Image.open(fixtures_dir / 'reference.png').convert('RGB'))


@pytest.fixture(scope='module')
def mesh():
  if fm._missing_files(fm.default_models_dir()):
    pytest.skip('MediaPipe model files not fetched (run scripts/setup.sh)')
  return fm.FaceMesh(fm.FaceMeshSettings())


def assert_upright_face(mesh, image: np.ndarray) -> np.ndarray:
  """The face detector finds a face in image, upright: both eyes above the nose, the nose above the mouth, the right
  eye (the detector's keypoint 0, on the image's left) left of the left eye. Returns its box."""
  det = mesh.detect(np.ascontiguousarray(image)[None])
  assert det.count[0] >= 1, 'no face found'
  right_eye, left_eye, nose, mouth = det.keypoints[0, 0, :4]
  assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1], det.keypoints[0, 0, :4]
  assert right_eye[0] < left_eye[0], det.keypoints[0, 0, :4]
  return det.boxes[0, 0]


def diff(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) if a.shape == b.shape else np.inf


# ----------------------------------------------------------------------------------------------------------------
# Still images.

# EXIF orientation o: the stored pixels are these numpy operations of the upright picture (EXIF 2.3, tag 0x0112:
# 6 = "0th row is the visual right-hand side": the camera was turned clockwise; shown by turning the pixels clockwise).
STORED = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],
    3: lambda u: u[::-1, ::-1],
    4: lambda u: u[::-1],
    5: lambda u: u.transpose(1, 0, 2),
    6: lambda u: np.rot90(u, 1),
    7: lambda u: np.rot90(u, 2).transpose(1, 0, 2),
    8: lambda u: np.rot90(u, -1),
}


def save_with_orientation(path, upright: np.ndarray, orientation: int, quality: int = 95) -> None:
  im = Image.fromarray(np.ascontiguousarray(STORED[orientation](upright)))
  exif = Image.Exif()
  exif[0x0112] = orientation
  im.save(path, quality=quality, exif=exif)


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientations_are_shown_upright(reference, tmp_path, orientation):
  upright = np.asarray(Image.fromarray(reference).resize((128, 96), Image.LANCZOS))  # Not square: no transposition.
  path = tmp_path / f'photo-{orientation}.jpg'
  save_with_orientation(path, upright, orientation)
  notes = []
  got = video_lib.read_image(path, notes)
  assert got.shape == (96, 128, 3)
  assert diff(got, upright) < 4, diff(got, upright)
  # And not one of the other seven readings (each is far off).
  assert all(diff(STORED[o](got), upright) > 20 for o in STORED if o != 1 and STORED[o](upright).shape == got.shape
             and diff(STORED[o](upright), upright) > 20)
  assert (orientation == 1) == (not any('EXIF orientation' in n for n in notes))


def test_a_phone_photo_gives_an_upright_face(reference, tmp_path, mesh):
  """A portrait phone photo: stored sideways (camera turned clockwise: EXIF orientation 6), 3:4."""
  canvas = np.full((520, 390, 3), 200, np.uint8)
  canvas[67:67 + 386, 2:2 + 386] = reference
  path = tmp_path / 'IMG_0001.JPG'
  save_with_orientation(path, canvas, 6)
  stored = np.asarray(Image.open(path))
  assert stored.shape == (390, 520, 3)
  with pytest.raises(AssertionError):  # Used as stored, the face lies on its side.
    assert_upright_face(mesh, stored)
  got = video_lib.read_image(path)
  assert got.shape == (520, 390, 3)
  box = assert_upright_face(mesh, got)
  np.testing.assert_allclose(box, assert_upright_face(mesh, canvas), atol=8)


def test_a_16_bit_greyscale_png_face_is_found(reference, tmp_path, mesh):
  grey8 = np.asarray(Image.fromarray(reference).convert('L'))
  path = tmp_path / 'grey16.png'
  Image.fromarray(grey8.astype(np.uint16) * 257).save(path)
  assert Image.open(path).mode == 'I;16'
  notes = []
  got = video_lib.read_image(path, notes)
  assert got.shape == reference.shape and np.array_equal(got[..., 0], grey8) and np.array_equal(got[..., 0], got[..., 2])
  assert any('16-bit' in n for n in notes)
  assert_upright_face(mesh, got)


def _modes(reference: np.ndarray):
  """(name, PIL image to save, suffix, expected RGB) for each image kind."""
  im = Image.fromarray(reference)
  grey = np.repeat(np.asarray(im.convert('L'))[..., None], 3, -1)
  alpha = np.full(reference.shape[:2], 255, np.uint8)
  alpha[:, :100] = 0  # A transparent band on the left, shown over white.
  over_white = reference.copy()
  over_white[:, :100] = 255
  rgba = Image.fromarray(np.dstack([reference, alpha]), 'RGBA')
  la = Image.fromarray(np.dstack([grey[..., 0], alpha]), 'LA')
  grey_white = grey.copy()
  grey_white[:, :100] = 255
  palette = im.quantize(256)
  pal_t = palette.copy()
  pal_arr = np.asarray(pal_t).copy()
  pal_arr[:, :100] = 0
  pal_t = Image.fromarray(pal_arr, 'P')
  pal_t.putpalette(palette.getpalette())
  pal_t.info['transparency'] = 0
  pal_t_expected = np.asarray(pal_t.convert('RGB')).copy()
  pal_t_expected[pal_arr == 0] = 255
  return [
      ('grey', im.convert('L'), '.png', grey, 0),
      ('rgba', rgba, '.png', over_white, 0),
      ('la', la, '.png', grey_white, 0),
      ('palette', palette, '.png', np.asarray(palette.convert('RGB')), 0),
      ('palette-transparent', pal_t, '.png', pal_t_expected, 0),
      ('bilevel', im.convert('1'), '.png', np.asarray(im.convert('1').convert('RGB')), 0),
      ('cmyk', im.convert('CMYK'), '.jpg', reference, 6),
      ('webp', im, '.webp', reference, 6),
      ('tiff', im, '.tiff', reference, 0),
      ('lab-tiff', im.convert('LAB'), '.tif', reference, 1),
      ('grey-16-bit-in-I', Image.fromarray(grey[..., 0].astype(np.int32) * 257, 'I'), '.tif', grey, 0),
  ]


@pytest.mark.parametrize('kind', ['grey', 'rgba', 'la', 'palette', 'palette-transparent', 'bilevel', 'cmyk', 'webp',
                                  'tiff', 'lab-tiff', 'grey-16-bit-in-I'])
def test_image_modes_are_read_as_8_bit_rgb(reference, tmp_path, kind):
  name, im, suffix, expected, tol = next(m for m in _modes(reference) if m[0] == kind)
  path = tmp_path / f'{name}{suffix}'
  im.save(path, **({'quality': 95} if suffix == '.jpg' else {}))
  got = video_lib.read_image(path)
  assert got.dtype == np.uint8 and got.shape == reference.shape
  assert diff(got, expected) <= tol + 0.5, diff(got, expected)


def test_a_cmyk_jpeg_face_is_found(reference, tmp_path, mesh):
  path = tmp_path / 'print.jpg'
  Image.fromarray(reference).convert('CMYK').save(path, quality=90)
  assert Image.open(path).mode == 'CMYK'
  assert_upright_face(mesh, video_lib.read_image(path))


def test_a_very_large_photo_is_read_bounded_and_its_face_found(reference, tmp_path, mesh):
  """8000x6000 (48 megapixels): read at video.MAX_IMAGE_SIDE on its long side, said in a note."""
  canvas = np.full((300, 400, 3), 180, np.uint8)
  canvas[:, 7:7 + 386][:300] = reference[43:343]
  path = tmp_path / 'huge.jpg'
  Image.fromarray(canvas).resize((8000, 6000), Image.BILINEAR).save(path, quality=80)
  notes = []
  got = video_lib.read_image(path, notes)
  side = video_lib.MAX_IMAGE_SIDE
  assert got.shape == (side * 3 // 4, side, 3)
  assert any('8000x6000' in n and f'{side}x{side * 3 // 4}' in n for n in notes), notes
  assert_upright_face(mesh, got)


def _png_header_only(path, width: int, height: int) -> None:
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
                   + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))


def test_bad_and_oversized_images_are_refused_in_one_line(reference, tmp_path):
  cases = {}
  bomb = tmp_path / 'bomb.png'
  _png_header_only(bomb, 40000, 40000)  # 1.6 gigapixels by its header, 100 bytes on disk.
  cases[bomb] = 'too large'
  truncated = tmp_path / 'cut.jpg'
  Image.fromarray(reference).save(truncated, quality=90)
  truncated.write_bytes(truncated.read_bytes()[:2000])
  cases[truncated] = 'not a readable image'
  text = tmp_path / 'notes.png'
  text.write_text('not an image\n')
  cases[text] = 'not a readable image'
  folder = tmp_path / 'photos.png'
  folder.mkdir()
  cases[folder] = 'is a folder'
  tiny = tmp_path / 'dot.png'
  Image.new('RGB', (1, 1)).save(tiny)
  cases[tiny] = 'too small'
  for path, why in cases.items():
    with pytest.raises(errors.VideoError) as e:
      video_lib.read_image(path)
    message = str(e.value)
    assert str(path) in message and why in message and '\n' not in message, message


def test_a_tiny_64px_reference_is_used_and_said_to_be_small(reference, tmp_path, mesh):
  path = tmp_path / 'thumb.png'
  Image.fromarray(reference).resize((64, 64), Image.LANCZOS).save(path)
  got = video_lib.read_image(path)
  assert got.shape == (64, 64, 3)
  assert_upright_face(mesh, got)  # Found; reenact.py adds a note that the result will be blurry (face < S / 2 px).


# ----------------------------------------------------------------------------------------------------------------
# Videos.

def write_video(path, frames, fps=10, rotation=None, pix_fmt='yuv420p', pts=None, codec_options=None,
                audio=None, audio_rate=16000):
  """frames (T, H, W, 3) uint8 -> H.264 .mp4 with an optional display rotation (degrees CCW, hflip) and pts."""
  with av.open(str(path), 'w') as out:
    st = out.add_stream('libx264', rate=fps)
    st.width, st.height, st.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
    st.options = codec_options or {'qp': '4', 'preset': 'ultrafast'}
    if pts is not None:
      st.codec_context.time_base = Fraction(1, fps)
    if rotation is not None:
      st.set_display_rotation(rotation[0], hflip=rotation[1])
    astream = None
    if audio is not None:
      astream = out.add_stream('aac', rate=audio_rate)
      astream.layout = 'mono'
    for i, image in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format='rgb24')
      frame.pts = i if pts is None else pts[i]
      if pts is not None:
        frame.time_base = Fraction(1, fps)
      for p in st.encode(frame):
        out.mux(p)
    for p in st.encode():
      out.mux(p)
    if astream is not None:
      n = astream.codec_context.frame_size or 1024
      for i in range(0, len(audio), n):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, i:i + n], np.float32), format='fltp',
                                        layout='mono')
        af.sample_rate, af.pts = audio_rate, i
        for p in astream.encode(af):
          out.mux(p)
      for p in astream.encode():
        out.mux(p)
  return path


def pattern(h=48, w=64, n=3) -> np.ndarray:
  """Blocks of distinct colours: any rotation or mirroring of it differs a lot."""
  rng = np.random.default_rng(0)
  blocks = rng.integers(0, 256, (h // 16, w // 16, 3)).astype(np.uint8)
  one = np.kron(blocks, np.ones((16, 16, 1), np.uint8))
  return np.stack([one] * n)


@pytest.mark.parametrize('degrees', [0, 90, 180, -90])
@pytest.mark.parametrize('hflip', [False, True], ids=['', 'mirrored'])
def test_rotated_videos_are_read_upright(tmp_path, degrees, hflip):
  """All 8 display matrices (a rotation, then a mirror, as PyAV's set_display_rotation documents them)."""
  stored = pattern()
  path = write_video(tmp_path / 'phone.mp4', stored, rotation=(degrees, hflip))
  expected = np.rot90(stored, degrees // 90, axes=(1, 2))
  expected = expected[:, :, ::-1] if hflip else expected
  info = video_lib.video_info(path)
  got = np.concatenate(list(video_lib.iter_frames(path)))
  assert (info.num_frames, info.height, info.width) == got.shape[:3] == expected.shape[:3]
  assert diff(got, expected) < 4, diff(got, expected)
  assert bool(info.notes) == (degrees != 0 or hflip), info.notes


def test_a_portrait_phone_video_1080x1920_is_upright_with_its_face(reference, tmp_path, mesh):
  """Stored 1920x1080 with rotation -90 (turn clockwise to show it), as phones record portrait video."""
  upright = np.full((1920, 1080, 3), 120, np.uint8)
  upright[500:500 + 772, 154:154 + 772] = np.asarray(Image.fromarray(reference).resize((772, 772)))
  stored = np.rot90(upright, 1)[None]
  path = write_video(tmp_path / 'VID_0001.mp4', np.concatenate([stored] * 2), rotation=(-90, False),
                     codec_options={'crf': '28', 'preset': 'ultrafast'})
  info = video_lib.video_info(path)
  assert (info.width, info.height, info.num_frames) == (1080, 1920, 2)
  assert any('clockwise' in n for n in info.notes), info.notes
  frames = next(video_lib.iter_frames(path))
  assert frames.shape == (2, 1920, 1080, 3)
  assert_upright_face(mesh, frames[0])


def test_odd_frame_sizes_are_read_whole(tmp_path):
  frames = np.zeros((3, 49, 65, 3), np.uint8)
  frames[:, :, 32:] = 255
  path = write_video(tmp_path / 'odd.mp4', frames, pix_fmt='yuv444p')
  info = video_lib.video_info(path)
  got = np.concatenate(list(video_lib.iter_frames(path)))
  assert (info.height, info.width) == (49, 65) and got.shape == (3, 49, 65, 3)
  assert diff(got, frames) < 4


def test_variable_frame_rate_is_read_on_a_constant_time_line(tmp_path):
  """30 frames at 30 fps, then 15 at 15 fps: frame t of the result is what shows at t / 30 s (where the sound is)."""
  pts = list(range(30)) + list(range(31, 60, 2))
  frames = np.stack([np.full((32, 32, 3), 4 * i, np.uint8) for i in range(len(pts))])
  path = write_video(tmp_path / 'vfr.mp4', frames, fps=30, pts=pts)
  info = video_lib.video_info(path)
  assert info.fps == pytest.approx(30) and info.num_frames == 60
  assert any('variable frame rate' in n for n in info.notes), info.notes
  got = np.concatenate(list(video_lib.iter_frames(path, chunk_size=7)))
  assert len(got) == 60
  shown = np.searchsorted(pts, np.arange(60), side='right') - 1  # The latest frame at each slot's time.
  np.testing.assert_allclose(got[:, 16, 16, 0], 4 * shown, atol=3)
  report = video_lib.decode_report(path)
  assert report.undecodable == 0 and report.repeated == 15 and report.message() is None


def test_an_uneven_but_steady_rate_keeps_its_frames(tmp_path):
  """Frame times like 1, 1, 2, 1, 1, 2 ... (22 fps content on a 30 fps clock, the demo clip talk-01): a constant rate
  puts every frame within one interval of its time, so every frame is kept once, at the average rate."""
  pts = np.cumsum([0] + [2 if i % 3 == 2 else 1 for i in range(29)]).tolist()
  frames = np.stack([np.full((32, 32, 3), 8 * i, np.uint8) for i in range(len(pts))])
  path = write_video(tmp_path / 'steady.mp4', frames, fps=30, pts=pts)
  info = video_lib.video_info(path)
  assert info.num_frames == 30 and not info.notes
  got = np.concatenate(list(video_lib.iter_frames(path)))
  np.testing.assert_allclose(got[:, 16, 16, 0], 8 * np.arange(30), atol=3)


def damage(src, dst, fractions=(0.3, 0.5, 0.7), length=3000) -> None:
  data = bytearray(src.read_bytes())
  rng = np.random.default_rng(0)
  for f in fractions:
    i = int(len(data) * f)
    data[i:i + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
  dst.write_bytes(bytes(data))


def test_frames_damaged_mid_stream_are_counted_and_the_rest_decoded(fixtures_dir, tmp_path):
  path = tmp_path / 'damaged.mp4'
  damage(fixtures_dir / 'driving.mp4', path)
  info = video_lib.video_info(path)
  assert info.num_frames == 150
  frames = np.concatenate(list(video_lib.iter_frames(path)))
  assert frames.shape == (150, 346, 346, 3)
  report = video_lib.decode_report(path)
  assert 0 < report.undecodable < 20 and report.repeated == report.undecodable
  message = report.message()
  assert message.startswith(f'{path}: {report.undecodable} of 150 frames could not be decoded') and '\n' not in message
  # The frames around a hole are real frames: a repeated frame equals its predecessor.
  same = [i for i in range(1, 150) if np.array_equal(frames[i], frames[i - 1])]
  assert len(same) >= report.undecodable
  # Its sound: what decodes, in step (damaged packets become silence of their length).
  notes = []
  wave = audio_io.load_audio(str(path), 16000, notes)
  clean = audio_io.load_audio(str(fixtures_dir / 'driving.mp4'), 16000)
  assert abs(len(wave) - len(clean)) < 16000 * 0.05


def test_a_video_that_decodes_nothing_is_refused_in_one_line(fixtures_dir, tmp_path):
  path = tmp_path / 'ruined.mp4'
  data = bytearray((fixtures_dir / 'driving.mp4').read_bytes())
  start, end = data.find(b'mdat') + 4, data.find(b'moov') - 4
  data[start:end] = np.random.default_rng(1).integers(0, 256, end - start, dtype=np.uint8).tobytes()
  path.write_bytes(bytes(data))
  with pytest.raises(errors.VideoError) as e:
    list(video_lib.iter_frames(path))
  assert str(path) in str(e.value) and 'decodes to no frames' in str(e.value) and '\n' not in str(e.value)


# ----------------------------------------------------------------------------------------------------------------
# Audio.

def write_audio(path, rate: int, channels: int, seconds: float = 1.0, freq: float = 440.0, container=None) -> None:
  t = np.arange(int(rate * seconds)) / rate
  tone = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
  layout = 'mono' if channels == 1 else 'stereo'
  with av.open(str(path), 'w', format=container) as out:
    st = out.add_stream('pcm_s16le', rate=rate)
    st.layout = layout
    data = np.stack([tone] * channels) if channels == 2 else tone[None]
    data = np.ascontiguousarray((data * 32767).astype(np.int16))
    for i in range(0, data.shape[1], 4096):
      part = data[:, i:i + 4096]
      frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part.T.reshape(1, -1)), format='s16', layout=layout)
      frame.sample_rate = rate
      for p in st.encode(frame):
        out.mux(p)
    for p in st.encode():
      out.mux(p)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize('rate', [8000, 16000, 44100, 48000, 96000])
@pytest.mark.parametrize('channels', [1, 2], ids=['mono', 'stereo'])
def test_audio_at_any_rate_mono_or_stereo(tmp_path, rate, channels):
  path = tmp_path / f'tone {rate}.wav'
  write_audio(path, rate, channels)
  for target in (16000, reenact.OUTPUT_AUDIO_RATE):
    x = audio_io.load_audio(str(path), target)
    assert abs(len(x) - target) <= target // 100, (len(x), target)
    assert dominant_frequency(x, target) == pytest.approx(440, abs=3)
    assert 0.3 < np.abs(x[len(x) // 4:3 * len(x) // 4]).max() < 0.6  # Stereo is averaged, not summed.


def test_several_audio_streams_use_the_default_one_and_say_so(tmp_path):
  """A video with two sound tracks (880 Hz, then 440 Hz marked default): the default one is used and named."""
  path = tmp_path / 'two tracks.mkv'
  with av.open(str(path), 'w') as out:
    video = out.add_stream('libx264', rate=10)
    video.width, video.height, video.pix_fmt = 32, 32, 'yuv420p'
    tracks = []
    for freq, lang in ((880, 'eng'), (440, 'fra')):
      st = out.add_stream('pcm_s16le', rate=16000)
      st.layout = 'mono'
      st.metadata['language'] = lang
      tracks.append((st, freq))
    tracks[0][0].disposition = 0
    tracks[1][0].disposition = av.stream.Disposition.default
    for i in range(10):
      for p in video.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format='rgb24')):
        out.mux(p)
    for p in video.encode():
      out.mux(p)
    t = np.arange(16000) / 16000
    for st, freq in tracks:
      frame = av.AudioFrame.from_ndarray((0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)[None],
                                         format='s16', layout='mono')
      frame.sample_rate = 16000
      for p in list(st.encode(frame)) + list(st.encode()):
        out.mux(p)
  notes = []
  x = audio_io.load_audio(str(path), 16000, notes)
  assert dominant_frequency(x, 16000) == pytest.approx(440, abs=3)
  assert len(notes) == 1 and 'has 2 audio streams' in notes[0] and 'stream #2' in notes[0] and 'fra' in notes[0], notes


# ----------------------------------------------------------------------------------------------------------------
# Paths and the output.

def test_paths_with_spaces_and_non_ascii_characters(fixtures_dir, tmp_path):
  folder = tmp_path / 'Mes vidéos' / 'été 2024 — 東京'
  folder.mkdir(parents=True)
  ref = folder / 'photo de profil ü.png'
  drv = folder / 'parle é 1.mp4'
  shutil.copy(fixtures_dir / 'reference.png', ref)
  shutil.copy(fixtures_dir / 'driving.mp4', drv)
  assert video_lib.read_image(ref).shape == (386, 386, 3)
  assert video_lib.video_info(drv).num_frames == 150
  assert next(video_lib.iter_frames(drv, 8)).shape == (8, 346, 346, 3)
  assert len(audio_io.load_audio(str(drv), 16000)) > 16000 * 4
  out = folder / 'résultat final.mp4'
  video_lib.write_video(out, np.zeros((2, 16, 16, 3), np.uint8), 10)
  assert video_lib.video_info(out).num_frames == 2
  with pytest.raises(errors.VideoError) as e:
    video_lib.read_image(folder / 'absent é.png')
  assert 'absent é.png: file not found' in str(e.value)


def test_out_in_a_folder_that_does_not_exist_is_created(tmp_path):
  out = tmp_path / 'new' / 'deeper' / 'out.mp4'
  assert reenact.check_out(out, create=False) == [str(tmp_path / 'new'), str(tmp_path / 'new' / 'deeper')]
  assert not (tmp_path / 'new').exists()  # Checking creates nothing.
  assert reenact.check_out(out) == [str(tmp_path / 'new'), str(tmp_path / 'new' / 'deeper')]
  assert (tmp_path / 'new' / 'deeper').is_dir() and reenact.check_out(out) == []


def test_outputs_that_cannot_be_written_are_refused_before_any_work(fixtures_dir, tmp_path, capsys):
  blocker = tmp_path / 'a file'
  blocker.write_text('x')
  ref, drv = str(fixtures_dir / 'reference.png'), str(fixtures_dir / 'driving.mp4')
  copy = tmp_path / 'in.mp4'
  shutil.copy(drv, copy)
  cases = [
      (str(blocker / 'out.mp4'), 'is a file, not a folder'),
      (str(tmp_path), 'is a folder'),
      (str(tmp_path / 'out.avi'), 'must be an .mp4'),
      (str(copy), 'is also an input'),
  ]
  for out, why in cases:
    d = drv if out != str(copy) else str(copy)
    # The checkpoint does not exist: the refusal comes first, before anything is loaded.
    code = reenact_command.main(['--checkpoint', str(tmp_path / 'no-such-run'), '--reference', ref, '--driving', d, '--out',
                         out, '--no-progress'])
    err = capsys.readouterr().err
    assert code == 2 and why in err and err.count('\n') == 1 and 'Traceback' not in err, (out, err)
  assert copy.read_bytes() == (fixtures_dir / 'driving.mp4').read_bytes()
  code = reenact_command.main(['--checkpoint', str(tmp_path), '--reference', str(tmp_path / 'nobody.png'), '--driving', drv,
                       '--out', str(tmp_path / 'o.mp4')])
  err = capsys.readouterr().err
  assert code == 2 and 'nobody.png: file not found (the reference image)' in err and err.count('\n') == 1
