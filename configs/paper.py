"""The paper's configuration: HeadGAN on VoxCeleb at 256x256 (Sections 3-4, Appendix A-B).

Every hyperparameter of the project lives here (or in a config that starts from this one and overrides a few
fields, like `tiny.py`). Values are the paper's, or where the paper is silent the authors' public code's
(see ../shared/DESIGN.md, "What the paper leaves open").
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.image_size = 256  # H = W of y_t and x_t.

  # Generator G = F + R (Appendix B.1, Tables 2 and 3).
  m = c.model = ml_collections.ConfigDict()
  m.num_past_frames = 2  # k: x_{t-k:t} has 3 * (k + 1) channels.
  m.ngf = 32  # Width of the first encoder conv; the encoders go ngf -> 4 ngf -> 16 ngf (32 -> 128 -> 512).
  m.num_down = 2  # Stride-2 convs in each encoder (and pixel shuffles in each decoder).
  m.flow_low_blocks = 3  # SPADE blocks of F at the lowest resolution (Table 2).
  m.spade_hidden = 256  # Hidden width of the SPADE modulation MLP.
  m.spade_resize = 'nearest'  # How the modulation input is resized to each layer: 'nearest' or 'bilinear'.
  m.block_shortcut = True  # Identity shortcut in SPADE / AdaIN blocks (authors' code); False = Fig. 7 as drawn.
  m.block_spectral_norm = True  # Spectral norm on the convs of SPADE / AdaIN blocks (authors' code).
  m.audio_dim = 300  # h_t^(a) = 84 low-level + 2L * 27 character logits.
  m.lrelu_slope = 0.2
  m.init_gain = 0.02  # Xavier-normal gain for every conv / dense kernel.
  # Ablations of Table 1.
  m.use_flow = True  # False: "w/o F" - R gets no warped features / image.
  m.use_audio = True  # False: "w/o audio" - AdaIN blocks are driven by a zero vector and D_m is dropped.
  m.conditioning = 'face3d'  # 'face3d' (x_t) or 'landmarks' (drawn 2D landmark image instead of x_t).
  m.compute_dtype = 'float32'  # 'bfloat16' computes in bf16 with float32 parameters.
  # Convolution: 'auto' = the im2col weight gradient of nn/conv.py on the CPU backend (3-6x faster there), XLA's
  # own elsewhere (cuDNN / TPU); 'xla' = always XLA's; 'im2col' = always ours. Same maths either way.
  m.conv_impl = 'auto'

  # Discriminators D and D_m (Appendix B.2; SPADE's multi-scale PatchGAN).
  d = c.disc = ml_collections.ConfigDict()
  d.num_scales = 2
  d.num_layers = 4
  d.ndf = 64
  d.max_channels = 512
  d.mouth_size = 64  # y_t^m crops are mouth_size x mouth_size.

  # Losses (Appendix A, eq. 3-10).
  lo = c.loss = ml_collections.ConfigDict()
  lo.l1 = 50.0  # lambda_L1, for G and for the warped image (F).
  lo.vgg = 10.0  # lambda_VGG, for G and for F.
  lo.fm = 10.0  # lambda_FM.
  lo.temp = 30.0  # lambda_Temp.
  lo.vgg_layer_weights = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)  # relu1_1, relu2_1, ..., relu5_1.
  lo.mouth_gan = 1.0  # Weight of D_m's adversarial + FM terms in L_G.
  lo.mouth_d = 0.5  # Weight of L_{D_m} in the discriminators' loss.
  lo.face_mask_threshold = 0.01  # L1 is masked to pixels where sum(x_t) > this.
  lo.use_vgg = True  # Training refuses to start without vgg_weights unless this is False.
  lo.vgg_weights = ''  # Path to torchvision's vgg19 .pth (e.g. vgg19-dcbb9e9d.pth).
  lo.vgg_sha256 = ''  # Optional expected sha256 of that file.

  # Optimisation (Section 4).
  t = c.train = ml_collections.ConfigDict()
  t.batch_size = 6  # Global batch.
  t.lr = 2e-4
  t.b1 = 0.5
  t.b2 = 0.999
  t.epochs = 6  # Constant learning rate ...
  t.decay_epochs = 4  # ... then linear decay to 0.
  t.steps_per_epoch = 10_000
  t.sequence_length = 50  # Clips are cut into sequences of this many frames.
  t.log_every = 100
  t.checkpoint_every = 1000
  t.keep_checkpoints = 3
  t.workdir = 'workdir'

  # 3D face (Sections 3.1, 4.1).
  f = c.face3d = ml_collections.ConfigDict()
  f.model = ''  # Path to a 3DMM .npz in the project's format; '' = the embedded default.
  f.x_image_mode = 'triangle_centre'  # 'triangle_centre' (paper) or 'interpolated'.
  f.fit_iterations = 10  # Gauss-Newton / LM iterations (fixed so the fit compiles once).
  f.id_bound = 0.8  # |p_id| bound in standard deviations (authors' code); p is clipped to it every LM step.
  f.exp_bound = 1.5  # |p_exp| bound in standard deviations; clipped likewise.
  f.id_prior = 1.0  # Weight of the Gaussian prior on p_id.
  f.exp_prior = 1.0  # Weight of the Gaussian prior on p_exp.
  f.temporal_smoothness = 0.0  # Weight of || p_exp_t - p_exp_{t-1} ||^2 in video mode.
  f.max_residual_px = 4.0  # Frames whose RMS re-projection error exceeds this are flagged.

  # Audio (Section 3.2).
  a = c.audio = ml_collections.ConfigDict()
  a.window_half = 4  # L: the window is 2L parts a_{t-L-1 .. t+L}.
  a.sample_rate = 16_000  # Audio is resampled to this rate.
  a.num_lowlevel = 84  # h^(aL).
  a.num_chars = 27  # Classes per part of h^(aH): blank/space + 26 letters.
  a.asr_backend = 'pocketsphinx'  # 'pocketsphinx' (embedded default) or 'deepspeech' (needs asr_model).
  a.asr_model = ''
  return c
