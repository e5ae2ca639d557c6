// oneDNN 2-D convolutions (NHWC input / output, HWIO kernel, float32) as XLA FFI handlers for the CPU backend:
// the forward pass, the input gradient and the weight gradient, which XLA:CPU runs 1.5-6x slower than oneDNN (issue
// 12, README). Built by `python -m headgan_jax.kernels.onednn build` (scripts/setup.sh) and loaded by
// headgan_jax/kernels/onednn.py, which registers the three handlers below with jax.ffi.
//
// Each call looks up (or creates once) the primitive for its shapes; oneDNN picks its own kernel layout ("any")
// and the handler reorders the HWIO kernel / kernel gradient to and from it. Attributes: stride_h, stride_w,
// pad_top, pad_bottom, pad_left, pad_right (int64).
//
// XLA:CPU may run two independent convolutions at once on two of its threads. oneDNN's library-managed scratchpad
// is shared by all primitives unless the library was built with DNNL_ENABLE_CONCURRENT_EXEC (Debian's is not): two
// primitives running at once then write into the same scratch memory (seen here: the demo's train step never
// finished). So every primitive uses a user-managed scratchpad, allocated per call.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Dims = memory::dims;

enum class Pass { kForward, kInputGrad, kWeightGrad };

// Everything that determines a primitive: the pass, N, H, W, C_in, K_h, K_w, C_out, strides, paddings.
using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t>;

struct Geometry {
  int64_t n, h, w, c_in, kh, kw, c_out, sh, sw, pt, pb, pl, pr, out_h, out_w;
  Dims src() const { return {n, c_in, h, w}; }
  Dims weights() const { return {c_out, c_in, kh, kw}; }
  Dims dst() const { return {n, c_out, out_h, out_w}; }
  Dims strides() const { return {sh, sw}; }
  Dims pad_l() const { return {pt, pl}; }
  Dims pad_r() const { return {pb, pr}; }
};

// A primitive ready to run, and the kernel layout it wants (which the HWIO kernel is reordered to / from).
struct Compiled {
  dnnl::primitive primitive;
  memory::desc scratchpad_desc;  // Per call (see the top of the file).
  memory::desc kernel_desc;
  bool kernel_is_hwio = false;
  std::unique_ptr<dnnl::reorder> kernel_reorder;  // HWIO -> kernel_desc (forward, input grad) or back (weight grad).
  memory::desc reorder_scratchpad_desc;
};

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

memory::desc Plain(const Dims& dims, memory::format_tag tag) {
  return memory::desc(dims, memory::data_type::f32, tag);
}

memory::desc Any(const Dims& dims) { return memory::desc(dims, memory::data_type::f32, memory::format_tag::any); }

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g, dnnl::prop_kind prop) {
  const auto tag = memory::format_tag::nhwc;
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::convolution_forward::primitive_desc(Engine(), prop, dnnl::algorithm::convolution_direct,
                                                   Plain(g.src(), tag), Any(g.weights()), Plain(g.dst(), tag),
                                                   g.strides(), g.pad_l(), g.pad_r(), UserScratchpad());
#else
  dnnl::convolution_forward::desc desc(prop, dnnl::algorithm::convolution_direct, Plain(g.src(), tag),
                                       Any(g.weights()), Plain(g.dst(), tag), g.strides(), g.pad_l(), g.pad_r());
  return dnnl::convolution_forward::primitive_desc(desc, UserScratchpad(), Engine());
#endif
}

// The input- or weight-gradient primitive (`Backward`: dnnl::convolution_backward_data / _weights; both take the
// same arguments), hinted by the forward-training primitive of the same shapes.
template <typename Backward>
typename Backward::primitive_desc BackwardDesc(const Geometry& g) {
  const auto tag = memory::format_tag::nhwc;
  auto hint = ForwardDesc(g, dnnl::prop_kind::forward_training);
#if DNNL_VERSION_MAJOR >= 3
  return typename Backward::primitive_desc(Engine(), dnnl::algorithm::convolution_direct, Plain(g.src(), tag),
                                           Any(g.weights()), Plain(g.dst(), tag), g.strides(), g.pad_l(), g.pad_r(),
                                           hint, UserScratchpad());
#else
  typename Backward::desc desc(dnnl::algorithm::convolution_direct, Plain(g.src(), tag), Any(g.weights()),
                               Plain(g.dst(), tag), g.strides(), g.pad_l(), g.pad_r());
  return typename Backward::primitive_desc(desc, UserScratchpad(), Engine(), hint);
#endif
}

std::unique_ptr<Compiled> Compile(Pass pass, const Geometry& g) {
  auto out = std::make_unique<Compiled>();
  const memory::desc hwio = Plain(g.weights(), memory::format_tag::hwio);
  if (pass == Pass::kForward) {
    auto pd = ForwardDesc(g, dnnl::prop_kind::forward_inference);
    out->primitive = dnnl::convolution_forward(pd);
    out->scratchpad_desc = pd.scratchpad_desc();
    out->kernel_desc = pd.weights_desc();
  } else if (pass == Pass::kInputGrad) {
    auto pd = BackwardDesc<dnnl::convolution_backward_data>(g);
    out->primitive = dnnl::convolution_backward_data(pd);
    out->scratchpad_desc = pd.scratchpad_desc();
    out->kernel_desc = pd.weights_desc();
  } else {
    auto pd = BackwardDesc<dnnl::convolution_backward_weights>(g);
    out->primitive = dnnl::convolution_backward_weights(pd);
    out->scratchpad_desc = pd.scratchpad_desc();
    out->kernel_desc = pd.diff_weights_desc();
  }
  out->kernel_is_hwio = out->kernel_desc == hwio;
  if (!out->kernel_is_hwio) {
    const bool to_hwio = pass == Pass::kWeightGrad;
    dnnl::reorder::primitive_desc pd(Engine(), to_hwio ? out->kernel_desc : hwio, Engine(),
                                     to_hwio ? hwio : out->kernel_desc, UserScratchpad());
    out->kernel_reorder = std::make_unique<dnnl::reorder>(pd);
    out->reorder_scratchpad_desc = pd.scratchpad_desc();
  }
  return out;
}

// Primitives by shape, created once per process (a network has a few dozen distinct convolutions).
const Compiled& Lookup(Pass pass, const Geometry& g) {
  static std::mutex* mutex = new std::mutex;
  static auto* cache = new std::map<Key, std::unique_ptr<Compiled>>;
  const Key key{static_cast<int>(pass), g.n, g.h, g.w, g.c_in, g.kh, g.kw, g.c_out, g.sh, g.sw, g.pt, g.pb, g.pl,
                g.pr};
  std::lock_guard<std::mutex> lock(*mutex);
  auto it = cache->find(key);
  if (it == cache->end()) it = cache->emplace(key, Compile(pass, g)).first;
  return *it->second;
}

// Checks the shapes against each other; x: (N, H, W, C_in), w: (K_h, K_w, C_in, C_out), y: (N, H_out, W_out, C_out).
ffi::Error MakeGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y,
                        int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, Geometry& g) {
  if (x.size() != 4 || w.size() != 4 || y.size() != 4) {
    return ffi::Error::InvalidArgument("onednn conv: input, kernel and output must be 4-D (NHWC, HWIO, NHWC)");
  }
  g = Geometry{x[0], x[1], x[2], x[3], w[0], w[1], w[3], sh, sw, pt, pb, pl, pr, y[1], y[2]};
  if (sh < 1 || sw < 1 || pt < 0 || pb < 0 || pl < 0 || pr < 0) {
    return ffi::Error::InvalidArgument("onednn conv: strides must be >= 1 and paddings >= 0");
  }
  const bool consistent = w[2] == g.c_in && y[0] == g.n && y[3] == g.c_out &&
                          g.out_h == (g.h + pt + pb - g.kh) / sh + 1 && g.out_w == (g.w + pl + pr - g.kw) / sw + 1 &&
                          g.out_h > 0 && g.out_w > 0;
  if (!consistent) {
    return ffi::Error::InvalidArgument("onednn conv: input (N, H, W, C_in), kernel (K_h, K_w, C_in, C_out) and "
                                       "output (N, H_out, W_out, C_out) shapes disagree with the strides / padding");
  }
  return ffi::Error::Success();
}

template <typename F>
ffi::Error Guard(F&& body) {
  try {
    body();
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("onednn conv: ") + e.what());
  }
}

// Runs `compiled` on (src, kernel, dst) NHWC / HWIO pointers, reordering the kernel where oneDNN wants another layout.
ffi::Error Run(Pass pass, const Geometry& g, void* src, void* kernel, void* dst) {
  return Guard([&] {
    const Compiled& c = Lookup(pass, g);
    dnnl::stream stream(Engine());
    const auto tag = memory::format_tag::nhwc;
    memory src_mem(Plain(g.src(), tag), Engine(), src);
    memory dst_mem(Plain(g.dst(), tag), Engine(), dst);
    memory hwio_mem(Plain(g.weights(), memory::format_tag::hwio), Engine(), kernel);
    memory kernel_mem = c.kernel_is_hwio ? hwio_mem : memory(c.kernel_desc, Engine());
    memory scratch(c.scratchpad_desc, Engine());  // Allocated here, for this call only.
    auto reorder_kernel = [&](memory& from, memory& to) {
      memory reorder_scratch(c.reorder_scratchpad_desc, Engine());
      c.kernel_reorder->execute(stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                                         {DNNL_ARG_SCRATCHPAD, reorder_scratch}});
    };
    if (pass != Pass::kWeightGrad && !c.kernel_is_hwio) reorder_kernel(hwio_mem, kernel_mem);
    if (pass == Pass::kForward) {
      c.primitive.execute(stream, {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, kernel_mem}, {DNNL_ARG_DST, dst_mem},
                                   {DNNL_ARG_SCRATCHPAD, scratch}});
    } else if (pass == Pass::kInputGrad) {
      c.primitive.execute(stream, {{DNNL_ARG_DIFF_SRC, src_mem}, {DNNL_ARG_WEIGHTS, kernel_mem},
                                   {DNNL_ARG_DIFF_DST, dst_mem}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else {
      c.primitive.execute(stream, {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_DIFF_WEIGHTS, kernel_mem},
                                   {DNNL_ARG_DIFF_DST, dst_mem}, {DNNL_ARG_SCRATCHPAD, scratch}});
      if (!c.kernel_is_hwio) reorder_kernel(kernel_mem, hwio_mem);
    }
    stream.wait();
  });
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

ffi::Error Forward(F32 x, F32 w, F32Out y, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  Geometry g;
  ffi::Error error = MakeGeometry(x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr, g);
  if (!error.success()) return error;
  return Run(Pass::kForward, g, x.untyped_data(), w.untyped_data(), y->untyped_data());
}

// dx from (w, dy): the output buffer gives the input shape.
ffi::Error InputGrad(F32 w, F32 dy, F32Out dx, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                     int64_t pr) {
  Geometry g;
  ffi::Error error = MakeGeometry(dx->dimensions(), w.dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr, g);
  if (!error.success()) return error;
  return Run(Pass::kInputGrad, g, dx->untyped_data(), w.untyped_data(), dy.untyped_data());
}

ffi::Error WeightGrad(F32 x, F32 dy, F32Out dw, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                      int64_t pr) {
  Geometry g;
  ffi::Error error = MakeGeometry(x.dimensions(), dw->dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr, g);
  if (!error.success()) return error;
  return Run(Pass::kWeightGrad, g, x.untyped_data(), dw->untyped_data(), dy.untyped_data());
}

}  // namespace

#define HEADGAN_CONV_ATTRS                                                                                          \
  .Attr<int64_t>("stride_h").Attr<int64_t>("stride_w").Attr<int64_t>("pad_top").Attr<int64_t>("pad_bottom")        \
      .Attr<int64_t>("pad_left").Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(HeadganOnednnConvForward, Forward,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() HEADGAN_CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(HeadganOnednnConvInputGrad, InputGrad,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() HEADGAN_CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(HeadganOnednnConvWeightGrad, WeightGrad,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>() HEADGAN_CONV_ATTRS);

// The oneDNN library's version, for the benchmarks' records: major * 10000 + minor * 100 + patch.
extern "C" int64_t HeadganOnednnVersion() {
  const dnnl_version_t* v = dnnl_version();
  return static_cast<int64_t>(v->major) * 10000 + v->minor * 100 + v->patch;
}
