// CPU kernels of the XNOR-popcount binary convolution ops (binarize_pack, xnor_conv2d,
// xnor_conv2d_packed) and the device-independent straight-through backward (xnor_conv2d_backward,
// CompositeImplicitAutograd: plain ATen ops, so it runs on every device and differentiates again).
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/xnor_conv.h"
#include "core/xnor_conv_backward.h"
#include "core/xnor_ste_gemm.h"
#include "core/xnor_ste_input.h"
#include "cpu/hugepages.h"
#include "cpu/parallel.h"

namespace fastpose {
namespace {

const char* kOp = "xnor_conv2d";

core::ElemType elem_type_of(at::ScalarType t, const char* what) {
  switch (t) {
    case at::kFloat:
      return core::ElemType::F32;
    case at::kHalf:
      return core::ElemType::F16;
    case at::kBFloat16:
      return core::ElemType::BF16;
    case at::kDouble:
      return core::ElemType::F64;
    default:
      TORCH_CHECK_TYPE(false, kOp, ": ", what, " must be float32, float16, bfloat16 or float64, got ", t);
  }
  return core::ElemType::F32;
}

bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous();
}

at::Tensor pack_impl(const at::Tensor& x, const char* what) {
  TORCH_CHECK_VALUE(x.dim() == 4, kOp, ": ", what, " must be (N, C, H, W), got shape ", x.sizes());
  const core::ElemType type = elem_type_of(x.scalar_type(), what);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t CW = core::xnor_words(C);
  at::Tensor out = at::empty({N, H, W, CW}, x.options().dtype(at::kLong));
  if (out.numel() == 0) return out;
  core::PackSource s{x.data_ptr(), type, N, C, H, W, x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  uint64_t* dst = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  const core::Isa isa = core::active_isa();
  const int64_t rows = N * H;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, W * C));
  at::parallel_for(0, rows, grain, [&](int64_t b, int64_t e) { core::binarize_pack(s, dst, b, e, isa); });
  return out;
}

at::Tensor binarize_pack_cpu(const at::Tensor& x) { return pack_impl(x, "x"); }

std::pair<int64_t, int64_t> pair_arg(at::IntArrayRef v, const char* name) {
  TORCH_CHECK_VALUE(v.size() == 2, kOp, ": ", name, " must have 2 values, got ", v.size());
  return {v[0], v[1]};
}

struct Geometry {
  int64_t N, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw, dh, dw, Ho, Wo;
};

Geometry geometry(int64_t N, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t KH, int64_t KW,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  Geometry g{N, Cin, H, W, Cout, KH, KW, 0, 0, 0, 0, 0, 0, 0, 0};
  std::tie(g.sh, g.sw) = pair_arg(stride, "stride");
  std::tie(g.ph, g.pw) = pair_arg(padding, "padding");
  std::tie(g.dh, g.dw) = pair_arg(dilation, "dilation");
  TORCH_CHECK_VALUE(g.sh >= 1 && g.sw >= 1, kOp, ": stride must be >= 1, got ", stride);
  TORCH_CHECK_VALUE(g.dh >= 1 && g.dw >= 1, kOp, ": dilation must be >= 1, got ", dilation);
  TORCH_CHECK_VALUE(g.ph >= 0 && g.pw >= 0, kOp, ": padding must be >= 0, got ", padding);
  TORCH_CHECK_VALUE(Cin >= 1 && KH >= 1 && KW >= 1, kOp, ": weight must have Cin, KH, KW >= 1");
  g.Ho = (H + 2 * g.ph - g.dh * (KH - 1) - 1) / g.sh + 1;
  g.Wo = (W + 2 * g.pw - g.dw * (KW - 1) - 1) / g.sw + 1;
  TORCH_CHECK_VALUE(H + 2 * g.ph - g.dh * (KH - 1) - 1 >= 0 && W + 2 * g.pw - g.dw * (KW - 1) - 1 >= 0, kOp,
                    ": the (dilated) kernel ", KH, "x", KW, " is larger than the padded input ", H + 2 * g.ph, "x",
                    W + 2 * g.pw);
  return g;
}

// Units a thread takes at least: ~4 M binary MACs (a few us of work), so that a call is split over no
// more threads than its work pays for. It was 16 M while threads took chunks of one shared counter,
// which split e.g. 16 units 14 + 2 (a second thread then cost more than it saved); with the owned
// pieces of cpu/parallel.h a split is even, and on the Zen 5 VM every layer of the packed model down
// to 4 M MACs gained from the second thread ((1,64,64,16,16): 13.1 -> 10.8 us, (1,256,128,4,4):
// 12.5 -> 11.0 us). FASTPOSE_MIN_THREAD_MACS overrides the 4 M (read per call; the tests set 1).
int64_t min_units_per_thread(const core::XnorConvProblem& p) {
  int64_t min_macs = int64_t(4) << 20;
  if (const char* e = std::getenv("FASTPOSE_MIN_THREAD_MACS"); e != nullptr && *e != '\0')
    min_macs = std::max<int64_t>(1, std::atoll(e));
  // (pooled and row-pair units cover two output rows)
  const int64_t unit_macs = std::max<int64_t>(
      1, std::min<int64_t>(p.cout_block, p.Cout) * p.Wo * p.KH * p.KW * p.CW * 64 * (p.pool || p.row_pairs ? 2 : 1));
  return std::max<int64_t>(1, min_macs / unit_macs);
}

// The binary convolution of packed operands. alpha / bias: undefined or (Cout) tensors (any float dtype).
// xp: packed (N, H, W, CW) int64 words, or the float (N, Cin, H, W) input itself, which is then
// binarized straight into the kernels' layout (one pass, no packed copy).
at::Tensor per_channel(const at::Tensor& t, const Geometry& g, at::ScalarType acc, const char* name) {
  if (!t.defined()) return t;
  const at::ScalarType st = t.scalar_type();  // the four the Python API names (isFloatingType has float8 too)
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble, kOp, ": ", name,
                   " must be a float32, float16, bfloat16 or float64 tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == g.Cout, kOp, ": ", name, " must be (", g.Cout, "), got shape ",
                    t.sizes());
  return t.to(acc).contiguous();
}

// wpop_in: the weight's tap popcounts when the caller has them (moved in), else computed here.
at::Tensor conv_packed_impl(const at::Tensor& xp, const at::Tensor& wp, const at::Tensor& alpha_in,
                            const at::Tensor& bias_in, const Geometry& g, int64_t pad_value, at::ScalarType out_dtype,
                            bool out_nhwc, const at::Tensor& bns_in = at::Tensor(),
                            const at::Tensor& bnt_in = at::Tensor(), std::vector<int32_t> wpop_in = {}) {
  TORCH_CHECK_VALUE(pad_value == 0 || pad_value == -1, kOp, ": pad_value must be 0 or -1, got ", pad_value);
  const at::ScalarType acc = out_dtype == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = xp.options().dtype(out_dtype);
  at::Tensor out = out_nhwc ? at::empty({g.N, g.Cout, g.Ho, g.Wo}, opts.memory_format(at::MemoryFormat::ChannelsLast))
                            : at::empty({g.N, g.Cout, g.Ho, g.Wo}, opts);
  // (checked before the empty-output return: an empty batch refuses a bad argument too)
  const at::Tensor alpha = per_channel(alpha_in, g, acc, "alpha"), bias = per_channel(bias_in, g, acc, "bias");
  const at::Tensor bns = per_channel(bns_in, g, acc, "bn_scale"), bnt = per_channel(bnt_in, g, acc, "bn_shift");
  TORCH_CHECK_VALUE(bns.defined() || !bnt.defined(), kOp, ": bn_shift needs bn_scale");
  if (out.numel() == 0) return out;
  advise_hugepages(out);
  const bool from_float = xp.scalar_type() != at::kLong;
  const at::Tensor x = from_float ? xp : xp.contiguous(), w = wp.contiguous();
  const int64_t CW = core::xnor_words(g.Cin);
  // Tap popcounts: the border corrections of both padding modes use them.
  const uint64_t* wptr = reinterpret_cast<const uint64_t*>(w.data_ptr<int64_t>());
  std::vector<int32_t> wpop = std::move(wpop_in);
  if (wpop.size() != static_cast<size_t>(g.Cout * g.KH * g.KW)) {
    wpop.resize(g.Cout * g.KH * g.KW);
    core::xnor_weight_popcounts(wptr, g.Cout * g.KH * g.KW, CW, wpop.data());
  }
  core::XnorConvProblem p;
  p.x = from_float ? nullptr : reinterpret_cast<const uint64_t*>(x.data_ptr<int64_t>());
  p.w = wptr;
  p.N = g.N, p.Cin = g.Cin, p.H = g.H, p.W = g.W, p.Cout = g.Cout, p.KH = g.KH, p.KW = g.KW;
  p.sh = g.sh, p.sw = g.sw, p.ph = g.ph, p.pw = g.pw, p.dh = g.dh, p.dw = g.dw;
  p.Ho = g.Ho, p.Wo = g.Wo, p.CW = CW;
  p.pad_value = static_cast<int>(pad_value);
  p.wpop = wpop.data();
  p.alpha = alpha.defined() ? alpha.data_ptr() : nullptr;
  p.bias = bias.defined() ? bias.data_ptr() : nullptr;
  p.bn_scale = bns.defined() ? bns.data_ptr() : nullptr;
  p.bn_shift = bnt.defined() ? bnt.data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.out_type = elem_type_of(out_dtype, "output");
  p.out_nhwc = out_nhwc;
  p.fused_isa = core::active_isa();
  p.stream_out = stream_stores(span_bytes(out));
  // Output-channel blocks of up to 64 (a block's packed filters stay in L1/L2 while a row is swept);
  // smaller blocks when there are too few rows to keep every thread busy.
  const int64_t threads = at::get_num_threads();
  int64_t cb = std::min<int64_t>(g.Cout, 64);
  while (cb > 4 && g.N * g.Ho * ((g.Cout + cb - 1) / cb) < 4 * threads) cb = (cb + 1) / 2;
  p.cout_block = cb;
  // The inner kernels' input layout, once per call (every input row is read by up to KH output rows
  // and every channel block).
  at::Tensor xt = at::empty({g.N * g.H * core::xnor_conv_xt_row_words(p)}, x.options().dtype(at::kLong));
  uint64_t* xtp = reinterpret_cast<uint64_t*>(xt.data_ptr<int64_t>());
  const int64_t rows = g.N * g.H;
  if (from_float) {
    const core::PackSource src{x.data_ptr(), elem_type_of(x.scalar_type(), "x"), g.N, g.Cin, g.H, g.W,
                               x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
    const core::Isa pisa = core::active_isa();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.W * g.Cin)),
                     [&](int64_t b, int64_t e) { core::xnor_conv_prepare_input_from(p, src, xtp, b, e, pisa); });
  } else {
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, g.W * CW)),
                     [&](int64_t b, int64_t e) { core::xnor_conv_prepare_input(p, xtp, b, e); });
  }
  p.xt = xtp;
  const core::Isa isa = core::active_isa();
  p.row_pairs = core::xnor_conv_row_pairs_fit(p, isa);
  const int64_t units = core::xnor_conv_units(p);
  parallel_unit_ranges(units, min_units_per_thread(p), [&](RangeSource next, void* ctx) {
    core::xnor_conv2d_forward_ranges(p, next, ctx, isa);
  });
  return out;
}

// alpha = mean |w| is defined as ATen's `w.abs().mean((1, 2, 3))`, whose float sum has a fixed order
// (core::pack_weight_abs_f32 documents it) for a contiguous weight with at least two output channels
// (one output: ATen may split the row over threads) and rows of at least a vector. Rows are capped at
// 64 K floats (the longest checked below; real filters have at most a few times 10 K).
bool sums_like_aten(int64_t Cout, int64_t n) { return Cout >= 2 && n >= 16 && n <= (int64_t(1) << 16); }

}  // namespace

// The lane count (8 or 16) whose order core::pack_weight_abs_f32 reproduces ATen's mean with in this
// process, or 0 (then alpha is ATen's own mean). Found once, against ATen itself, on rows whose lengths
// reach every branch of the cascade: scalar tails, leftover vectors, each level's carry.
int xnor_alpha_sum_lanes() {
  static const int lanes = [] {
    // Values of random sign, mantissa and binary exponent in [-12, 12] (additions round at every
    // level), from a local generator: the user's random stream stays untouched.
    uint64_t state = 0x9e3779b97f4a7c15ull;
    auto next = [&state] {
      state += 0x9e3779b97f4a7c15ull;
      uint64_t z = (state ^ (state >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      return z ^ (z >> 31);
    };
    // Either form (AVX-512, AVX2) adds the same floats in the same order, so the answer is ATen's: checked
    // with whichever form this CPU has, whatever FASTPOSE_ISA says at the first call.
    core::Isa isa = core::Isa::Portable;
    for (core::Isa c : {core::Isa::Avx512, core::Isa::Avx2})
      if (isa == core::Isa::Portable && core::isa_supported(c) && core::pack_weight_abs_f32_available(1, c)) isa = c;
    if (isa == core::Isa::Portable) return 0;
    for (int L : {8, 16}) {
      bool ok = true;
      for (int64_t n : {16, 17, 31, 63, 64, 65, 127, 129, 200, 576, 1152, 1153, 2304, 4611, 9000, 20000, 65536}) {
        const int64_t Cout = 2;
        at::Tensor w = at::empty({Cout, n, 1, 1}, at::kFloat);
        uint32_t* bits = reinterpret_cast<uint32_t*>(w.data_ptr<float>());
        for (int64_t i = 0; i < Cout * n; ++i) {
          const uint64_t r = next();
          bits[i] = uint32_t(r & 0x807fffffu) | (uint32_t(115 + (r >> 32) % 25) << 23);
        }
        std::vector<uint64_t> words(Cout * core::xnor_words(n));
        std::vector<float> sums(Cout);
        core::pack_weight_abs_f32(w.data_ptr<float>(), n, 1, words.data(), sums.data(), L, 0, Cout, nullptr, isa);
        const at::Tensor ref = w.abs().mean({1, 2, 3});
        for (int64_t co = 0; co < Cout; ++co) {
          const float mine = sums[co] / static_cast<float>(n), theirs = ref.data_ptr<float>()[co];
          ok = ok && std::memcmp(&mine, &theirs, sizeof(float)) == 0;
        }
      }
      if (ok) return L;
    }
    return 0;
  }();
  return lanes;
}

namespace {

at::Tensor xnor_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool scale,
                           int64_t pad_value) {
  TORCH_CHECK_VALUE(x.dim() == 4, kOp, ": x must be (N, Cin, H, W), got shape ", x.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4, kOp, ": weight must be (Cout, Cin, KH, KW), got shape ", weight.sizes());
  TORCH_CHECK_VALUE(x.size(1) == weight.size(1), kOp, ": x has ", x.size(1), " channels but weight expects ",
                    weight.size(1), " (groups != 1 is not supported)");
  elem_type_of(x.scalar_type(), "x");
  elem_type_of(weight.scalar_type(), "weight");
  const Geometry g = geometry(x.size(0), x.size(1), x.size(2), x.size(3), weight.size(0), weight.size(2),
                              weight.size(3), stride, padding, dilation);
  const at::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor alpha, wp;
  std::vector<int32_t> wpop;  // the one-pass pack's tap popcounts
  const core::Isa isa = core::active_isa();
  if (weight.scalar_type() == at::kFloat && acc == at::kFloat && weight.is_contiguous() && g.Cout > 0 &&
      core::pack_weight_abs_f32_available(g.KH * g.KW, isa)) {
    // Sign words and, where ATen's summation order is reproduced, the sums of |w| in one pass (alpha is
    // bit for bit ATen's mean either way).
    const int64_t K = g.KH * g.KW, n = g.Cin * K;
    const int lanes = scale && sums_like_aten(g.Cout, n) ? xnor_alpha_sum_lanes() : 0;
    wp = at::empty({g.Cout, g.KH, g.KW, core::xnor_words(g.Cin)}, weight.options().dtype(at::kLong));
    if (lanes) alpha = at::empty({g.Cout}, weight.options());
    const float* wsrc = weight.data_ptr<float>();
    uint64_t* wdst = reinterpret_cast<uint64_t*>(wp.data_ptr<int64_t>());
    float* sums = lanes ? alpha.data_ptr<float>() : nullptr;
    // 64 K floats (256 KB) a chunk: a (128, 128, 3, 3) weight splits over 2 threads, which took a
    // (1,128,128,16,16) call from 0.12-0.20 to 0.08 ms at 2 threads (one thread: unchanged).
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, n));
    wpop.resize(g.Cout * K);
    at::parallel_for(0, g.Cout, grain, [&](int64_t b, int64_t e) {
      core::pack_weight_abs_f32(wsrc, g.Cin, K, wdst, sums, lanes, b, e, wpop.data(), isa);
      for (int64_t co = b; sums && co < e; ++co) sums[co] = sums[co] / static_cast<float>(n);  // ATen's div_
    });
    if (scale && !lanes) alpha = weight.abs().mean({1, 2, 3});
  } else {
    if (scale) alpha = weight.contiguous().to(acc).abs().mean({1, 2, 3});
    // A contiguous weight packs as (Cout, Cin, 1, KH * KW): the same words, in rows of KH * KW pixels
    // instead of KH rows of KW (3x fewer, fuller vector tiles for 3x3).
    wp = weight.is_contiguous() ? pack_impl(weight.view({g.Cout, g.Cin, 1, g.KH * g.KW}), "weight")
                                      .view({g.Cout, g.KH, g.KW, core::xnor_words(g.Cin)})
                                : pack_impl(weight, "weight");
  }
  return conv_packed_impl(x, wp, alpha, bias.has_value() ? *bias : at::Tensor(), g, pad_value, x.scalar_type(),
                          is_channels_last(x), at::Tensor(), at::Tensor(), std::move(wpop));
}

at::Tensor xnor_conv2d_packed_cpu(const at::Tensor& x, const at::Tensor& weight_packed,
                                  const c10::optional<at::Tensor>& alpha, const c10::optional<at::Tensor>& bias,
                                  int64_t in_channels, at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t pad_value,
                                  const c10::optional<at::Tensor>& bn_scale, const c10::optional<at::Tensor>& bn_shift,
                                  c10::optional<at::ScalarType> out_dtype_opt, bool channels_last) {
  const int64_t CW = core::xnor_words(in_channels);
  TORCH_CHECK_VALUE(in_channels >= 1, kOp, ": in_channels must be >= 1, got ", in_channels);
  TORCH_CHECK_TYPE(weight_packed.scalar_type() == at::kLong, kOp, ": weight_packed must be int64, got ",
                   weight_packed.scalar_type());
  TORCH_CHECK_VALUE(weight_packed.dim() == 4 && weight_packed.size(3) == CW, kOp,
                    ": weight_packed must be (Cout, KH, KW, ", CW, ") for in_channels=", in_channels, ", got shape ",
                    weight_packed.sizes());
  at::Tensor xp;
  at::ScalarType out_dtype;
  bool nhwc = false;
  int64_t N, H, W;
  if (x.scalar_type() == at::kLong) {
    TORCH_CHECK_VALUE(x.dim() == 4 && x.size(3) == CW, kOp, ": packed x must be (N, H, W, ", CW,
                      ") int64 words for in_channels=", in_channels, ", got shape ", x.sizes());
    xp = x;
    out_dtype = at::kFloat;
    N = x.size(0), H = x.size(1), W = x.size(2);
  } else {
    TORCH_CHECK_VALUE(x.dim() == 4 && x.size(1) == in_channels, kOp, ": x must be (N, ", in_channels,
                      ", H, W), got shape ", x.sizes());
    elem_type_of(x.scalar_type(), "x");
    xp = x;  // binarized by conv_packed_impl
    out_dtype = x.scalar_type();
    nhwc = is_channels_last(x);
    N = x.size(0), H = x.size(2), W = x.size(3);
  }
  if (out_dtype_opt.has_value()) {
    out_dtype = *out_dtype_opt;
    elem_type_of(out_dtype, "out_dtype");
  }
  const Geometry g = geometry(N, in_channels, H, W, weight_packed.size(0), weight_packed.size(1),
                              weight_packed.size(2), stride, padding, dilation);
  const auto opt = [](const c10::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); };
  return conv_packed_impl(xp, weight_packed, opt(alpha), opt(bias), g, pad_value, out_dtype, nhwc || channels_last,
                          opt(bn_scale), opt(bn_shift));
}

// ---- xnor_conv2d_fused: one convolution of a packed binary network stage, written in place ----

at::Tensor opt_tensor(const c10::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); }

// (n) vector of exactly `dtype` (no conversion: a rounded copy would break the exactness contract).
void check_vector(const at::Tensor& t, int64_t n, at::ScalarType dtype, const char* name) {
  if (!t.defined()) return;
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n, "xnor_conv2d_fused: ", name, " must be (", n, "), got shape ",
                    t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, "xnor_conv2d_fused: ", name, " must be ", dtype, ", got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu(), "xnor_conv2d_fused: ", name, " must be on the CPU");
}

at::Tensor pack_affine_impl(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t CW = core::xnor_words(C);
  at::Tensor out = at::empty({N, H, W, CW}, x.options().dtype(at::kLong));
  if (out.numel() == 0) return out;
  const at::Tensor sc = scale.contiguous(), sh = shift.contiguous();
  core::PackSource s{x.data_ptr(), elem_type_of(x.scalar_type(), "x"), N, C, H, W,
                     x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  uint64_t* dst = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  const core::Isa isa = core::active_isa();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, W * C));
  at::parallel_for(0, N * H, grain, [&](int64_t b, int64_t e) {
    core::binarize_pack_affine(s, sc.data_ptr(), sh.data_ptr(), dst, b, e, isa);
  });
  return out;
}

// Whether the byte ranges [first element, last element] of a and b intersect (same storage). Conservative:
// interleaved but disjoint views of one buffer count as overlapping (documented on the op).
bool byte_ranges_meet(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || !a.storage().is_alias_of(b.storage())) return false;
  const auto range = [](const at::Tensor& t) {
    const char* lo = static_cast<const char*>(t.data_ptr());
    int64_t last = 0;
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    return std::make_pair(lo, lo + (last + 1) * t.element_size());
  };
  const auto [a0, a1] = range(a);
  const auto [b0, b1] = range(b);
  return a0 < b1 && b0 < a1;
}

void xnor_conv2d_fused_cpu(const at::Tensor& x, const at::Tensor& weight_packed, const c10::optional<at::Tensor>& alpha_o,
                           const c10::optional<at::Tensor>& bias_o, int64_t in_channels, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_value,
                           const c10::optional<at::Tensor>& in_scale_o, const c10::optional<at::Tensor>& in_shift_o,
                           const c10::optional<at::Tensor>& residual_o, const c10::optional<at::Tensor>& next_scale_o,
                           const c10::optional<at::Tensor>& next_shift_o, const at::Tensor& out,
                           const c10::optional<at::Tensor>& out_packed_o, bool pool,
                           const c10::optional<at::Tensor>& up_residual_o) {
  const char* op = "xnor_conv2d_fused";
  TORCH_CHECK_VALUE(in_channels >= 1, op, ": in_channels must be >= 1, got ", in_channels);
  TORCH_CHECK_VALUE(pad_value == 0 || pad_value == -1, op, ": pad_value must be 0 or -1, got ", pad_value);
  const int64_t CW = core::xnor_words(in_channels);
  TORCH_CHECK_TYPE(weight_packed.scalar_type() == at::kLong, op, ": weight_packed must be int64, got ",
                   weight_packed.scalar_type());
  TORCH_CHECK_VALUE(weight_packed.dim() == 4 && weight_packed.size(3) == CW, op, ": weight_packed must be (Cout, KH, KW, ",
                    CW, ") for in_channels=", in_channels, ", got shape ", weight_packed.sizes());
  TORCH_CHECK_VALUE(out.dim() == 4, op, ": out must be (N, Cout, Ho, Wo), got shape ", out.sizes());
  TORCH_CHECK_TYPE(out.scalar_type() == at::kFloat || out.scalar_type() == at::kDouble, op,
                   ": out must be float32 or float64, got ", out.scalar_type());
  const at::ScalarType acc = out.scalar_type();
  const at::Tensor in_scale = opt_tensor(in_scale_o), in_shift = opt_tensor(in_shift_o);
  TORCH_CHECK_VALUE(in_scale.defined() == in_shift.defined(), op, ": in_scale and in_shift go together");
  at::Tensor xp, in_scale_c, in_shift_c;
  int64_t N, H, W;
  if (x.scalar_type() == at::kLong) {
    TORCH_CHECK_VALUE(x.dim() == 4 && x.size(3) == CW, op, ": packed x must be (N, H, W, ", CW,
                      ") int64 words for in_channels=", in_channels, ", got shape ", x.sizes());
    TORCH_CHECK_VALUE(!in_scale.defined(), op, ": in_scale / in_shift need a float x (packed x holds signs only)");
    xp = x.contiguous();
    N = x.size(0), H = x.size(1), W = x.size(2);
  } else {
    TORCH_CHECK_VALUE(x.dim() == 4 && x.size(1) == in_channels, op, ": x must be (N, ", in_channels,
                      ", H, W), got shape ", x.sizes());
    elem_type_of(x.scalar_type(), "x");
    N = x.size(0), H = x.size(2), W = x.size(3);
    if (in_scale.defined()) {
      TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                       ": with in_scale, x must be float32 or float64, got ", x.scalar_type());
      check_vector(in_scale, in_channels, x.scalar_type(), "in_scale");
      check_vector(in_shift, in_channels, x.scalar_type(), "in_shift");
      in_scale_c = in_scale.contiguous(), in_shift_c = in_shift.contiguous();
    }
    // Binarized row by row inside the convolution (XnorConvProblem::src) unless an output aliases x:
    // x must then be read whole before the first store. FASTPOSE_ROW_PIPELINE=0 packs first (A/B).
    const char* e = std::getenv("FASTPOSE_ROW_PIPELINE");
    const bool aliased = at::get_overlap_status(out, x) != at::MemOverlapStatus::No ||
                         (out_packed_o.has_value() && at::get_overlap_status(*out_packed_o, x) != at::MemOverlapStatus::No);
    const bool lazy = !(e != nullptr && std::strcmp(e, "0") == 0) && !aliased;
    if (!lazy) xp = in_scale.defined() ? pack_affine_impl(x, in_scale, in_shift) : pack_impl(x, "x");
  }
  const Geometry g = geometry(N, in_channels, H, W, weight_packed.size(0), weight_packed.size(1),
                              weight_packed.size(2), stride, padding, dilation);
  // pool: out holds avg_pool2d(2, 2) of the (N, Cout, Ho, Wo) elements.
  const int64_t Hout = pool ? g.Ho / 2 : g.Ho, Wout = pool ? g.Wo / 2 : g.Wo;
  TORCH_CHECK_VALUE(out.sizes() == at::IntArrayRef({g.N, g.Cout, Hout, Wout}), op, ": out must be (", g.N, ", ",
                    g.Cout, ", ", Hout, ", ", Wout, ")", pool ? " (the 2x2 pool of the convolution's output)" : "",
                    ", got shape ", out.sizes());
  at::assert_no_internal_overlap(out);
  const at::Tensor residual = opt_tensor(residual_o);
  if (residual.defined()) {
    TORCH_CHECK_VALUE(residual.sizes() == at::IntArrayRef({g.N, g.Cout, g.Ho, g.Wo}), op,
                      ": residual must be the convolution's output shape (", g.N, ", ", g.Cout, ", ", g.Ho, ", ", g.Wo,
                      "), got ", residual.sizes());
    TORCH_CHECK_TYPE(residual.scalar_type() == acc, op, ": residual must be ", acc, " like out, got ",
                     residual.scalar_type());
    // Pooled, out and residual have different shapes: any shared byte is an error (strided views too,
    // which ATen's overlap test leaves undecided).
    if (pool) {
      TORCH_CHECK_VALUE(!byte_ranges_meet(out, residual), op, ": with pool=True, out must not overlap residual");
    } else {
      at::assert_no_partial_overlap(out, residual);
    }
  }
  const at::Tensor up_res = opt_tensor(up_residual_o);
  if (up_res.defined()) {
    TORCH_CHECK_VALUE(g.Ho % 2 == 0 && g.Wo % 2 == 0, op, ": up_residual needs an even output size, got ", g.Ho,
                      " x ", g.Wo);
    TORCH_CHECK_VALUE(up_res.sizes() == at::IntArrayRef({g.N, g.Cout, g.Ho / 2, g.Wo / 2}), op,
                      ": up_residual must be (", g.N, ", ", g.Cout, ", ", g.Ho / 2, ", ", g.Wo / 2,
                      ") (half the convolution's output size), got ", up_res.sizes());
    TORCH_CHECK_TYPE(up_res.scalar_type() == acc, op, ": up_residual must be ", acc, " like out, got ",
                     up_res.scalar_type());
    TORCH_CHECK_VALUE(up_res.device().is_cpu(), op, ": up_residual must be on the CPU");
    TORCH_CHECK_VALUE(!byte_ranges_meet(out, up_res), op, ": out must not overlap up_residual");
  }
  const at::Tensor ns = opt_tensor(next_scale_o), nt = opt_tensor(next_shift_o);
  const at::Tensor out_packed = opt_tensor(out_packed_o);
  TORCH_CHECK_VALUE(ns.defined() || !nt.defined(), op, ": next_shift needs next_scale");
  TORCH_CHECK_VALUE(out_packed.defined() || !ns.defined(), op, ": next_scale needs out_packed");
  check_vector(ns, g.Cout, acc, "next_scale");
  check_vector(nt, g.Cout, acc, "next_shift");
  const int64_t CWo = core::xnor_words(g.Cout);
  if (out_packed.defined()) {
    TORCH_CHECK_TYPE(out_packed.scalar_type() == at::kLong, op, ": out_packed must be int64, got ",
                     out_packed.scalar_type());
    TORCH_CHECK_VALUE(out_packed.sizes() == at::IntArrayRef({g.N, g.Ho, g.Wo, CWo}) && out_packed.is_contiguous(), op,
                      ": out_packed must be a contiguous (", g.N, ", ", g.Ho, ", ", g.Wo, ", ", CWo,
                      ") int64 tensor, got shape ", out_packed.sizes());
    if (xp.defined()) at::assert_no_overlap(out_packed, xp);
    // Written by other threads while these are read or written: no shared byte at all.
    TORCH_CHECK_VALUE(!byte_ranges_meet(out_packed, out), op, ": out_packed must not overlap out");
    if (residual.defined())
      TORCH_CHECK_VALUE(!byte_ranges_meet(out_packed, residual), op, ": out_packed must not overlap residual");
    if (up_res.defined())
      TORCH_CHECK_VALUE(!byte_ranges_meet(out_packed, up_res), op, ": out_packed must not overlap up_residual");
  }
  if (g.N * g.Cout * g.Ho * g.Wo == 0) return;  // (pooled, out may be empty while out_packed is not)
  const at::Tensor alpha = per_channel(opt_tensor(alpha_o), g, acc, "alpha");
  const at::Tensor bias = per_channel(opt_tensor(bias_o), g, acc, "bias");
  const at::Tensor w = weight_packed.contiguous();
  const uint64_t* wptr = reinterpret_cast<const uint64_t*>(w.data_ptr<int64_t>());
  // Once per call (the forward would otherwise compute them in every thread).
  std::vector<int32_t> wpop(g.Cout * g.KH * g.KW);
  core::xnor_weight_popcounts(wptr, g.Cout * g.KH * g.KW, CW, wpop.data());
  core::XnorConvProblem p;
  core::PackSource src{};
  if (xp.defined()) {
    p.x = reinterpret_cast<const uint64_t*>(xp.data_ptr<int64_t>());
  } else {
    src = core::PackSource{x.data_ptr(), elem_type_of(x.scalar_type(), "x"), N, in_channels, H, W,
                           x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
    p.x = nullptr;
    p.src = &src;
    p.src_scale = in_scale_c.defined() ? in_scale_c.data_ptr() : nullptr;
    p.src_shift = in_shift_c.defined() ? in_shift_c.data_ptr() : nullptr;
    p.src_isa = core::active_isa();
  }
  p.w = wptr;
  p.N = g.N, p.Cin = g.Cin, p.H = g.H, p.W = g.W, p.Cout = g.Cout, p.KH = g.KH, p.KW = g.KW;
  p.sh = g.sh, p.sw = g.sw, p.ph = g.ph, p.pw = g.pw, p.dh = g.dh, p.dw = g.dw;
  p.Ho = g.Ho, p.Wo = g.Wo, p.CW = CW;
  p.pad_value = static_cast<int>(pad_value);
  p.wpop = wpop.empty() ? nullptr : wpop.data();
  p.alpha = alpha.defined() ? alpha.data_ptr() : nullptr;
  p.bias = bias.defined() ? bias.data_ptr() : nullptr;
  p.bn_scale = nullptr;
  p.bn_shift = nullptr;
  p.out = out.data_ptr();
  p.out_type = elem_type_of(acc, "out");
  p.out_nhwc = false;
  p.out_strided = true;
  for (int i = 0; i < 4; ++i) p.out_strides[i] = out.stride(i);
  if (residual.defined()) {
    p.residual = residual.data_ptr();
    for (int i = 0; i < 4; ++i) p.res_strides[i] = residual.stride(i);
  }
  if (up_res.defined()) {
    p.up_residual = up_res.data_ptr();
    for (int i = 0; i < 4; ++i) p.up_strides[i] = up_res.stride(i);
  }
  p.next_scale = ns.defined() ? ns.data_ptr() : nullptr;
  p.next_shift = nt.defined() ? nt.data_ptr() : nullptr;
  p.out_packed = out_packed.defined() ? reinterpret_cast<uint64_t*>(out_packed.data_ptr<int64_t>()) : nullptr;
  const core::Isa isa = core::active_isa();
  p.fused_isa = isa;
  p.stream_out = !pool && stream_stores(span_bytes(out));
  p.pool = pool;
  p.row_pairs = core::xnor_conv_row_pairs_fit(p, isa);
  {
    const char* e = std::getenv("FASTPOSE_PREFETCH_RESIDUAL");  // A/B toggle, read per call
    p.prefetch_residual = e == nullptr || std::strcmp(e, "0") != 0;
  }
  const int64_t threads = at::get_num_threads();
  int64_t cb = std::min<int64_t>(g.Cout, 64);
  // Packed output: blocks of whole 64-channel words (xnor_conv.h), so no two threads share a word.
  if (!out_packed.defined())
    while (cb > 4 && g.N * (pool ? (g.Ho + 1) / 2 : g.Ho) * ((g.Cout + cb - 1) / cb) < 4 * threads) cb = (cb + 1) / 2;
  p.cout_block = cb;
  const int64_t units = core::xnor_conv_units(p);
  parallel_unit_ranges(units, min_units_per_thread(p), [&](RangeSource next, void* ctx) {
    core::xnor_conv2d_forward_ranges(p, next, ctx, isa);
  });
}

// Straight-through backward of  out = conv2d(sign(x), alpha(w) * sign(w)) + bias  with the surrogate
//   x -> clamp(x, -1, 1)          (gradient passes where |x| <= 1)
//   w -> alpha(w) * w             (alpha = mean |w| per output channel, differentiated too: XNOR-Net)
std::tuple<at::Tensor, at::Tensor, at::Tensor> xnor_conv2d_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool scale, int64_t pad_value, std::array<bool, 3> mask) {
  const char* op = "xnor_conv2d_backward";
  TORCH_CHECK_VALUE(grad.dim() == 4, op, ": grad must be (N, Cout, Ho, Wo), got shape ", grad.sizes());
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": x must be (N, Cin, H, W), got shape ", x.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4, op, ": weight must be (Cout, Cin, KH, KW), got shape ", weight.sizes());
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{grad, "grad"}, {x, "x"}, {weight, "weight"}})
    TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                     " must be a float32, float16, bfloat16 or float64 tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(x.size(1) == weight.size(1), op, ": x has ", x.size(1), " channels but weight expects ",
                    weight.size(1));
  // padding is indexed below: a schema int[2] can still arrive with another length from a raw call
  TORCH_CHECK_VALUE(stride.size() == 2, op, ": stride must have 2 values, got ", stride.size());
  TORCH_CHECK_VALUE(padding.size() == 2, op, ": padding must have 2 values, got ", padding.size());
  TORCH_CHECK_VALUE(dilation.size() == 2, op, ": dilation must have 2 values, got ", dilation.size());
  TORCH_CHECK_VALUE(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be >= 1, got ", stride);
  TORCH_CHECK_VALUE(padding[0] >= 0 && padding[1] >= 0, op, ": padding must be >= 0, got ", padding);
  TORCH_CHECK_VALUE(dilation[0] >= 1 && dilation[1] >= 1, op, ": dilation must be >= 1, got ", dilation);
  TORCH_CHECK_VALUE(pad_value == 0 || pad_value == -1, op, ": pad_value must be 0 or -1, got ", pad_value);
  const auto dt = grad.scalar_type();
  const at::Tensor xb = at::where(x >= 0, at::ones({}, x.options()), -at::ones({}, x.options())).to(dt);
  at::Tensor xin = xb;
  std::vector<int64_t> pad(padding.begin(), padding.end());
  if (pad_value != 0) {
    xin = at::constant_pad_nd(xb, {padding[1], padding[1], padding[0], padding[0]}, -1.0);
    pad = {0, 0};
  }
  const at::Tensor w = weight.to(dt);
  const at::Tensor ws = at::where(w >= 0, at::ones({}, w.options()), -at::ones({}, w.options()));
  at::Tensor alpha;
  at::Tensor weff = ws;
  if (scale) {
    alpha = w.abs().mean({1, 2, 3}, /*keepdim=*/true);
    weff = ws * alpha;
  }
  const bool need_w = mask[1];
  auto r = at::convolution_backward(grad, xin, weff, c10::nullopt, stride, pad, dilation, false, {0, 0}, 1,
                                    {mask[0], need_w, false});
  // Gradients not asked for come back as empty tensors (the schema has no optional returns).
  at::Tensor gx = x.new_empty({0}), gw = weight.new_empty({0}), gb = grad.new_empty({0});
  const at::Tensor G = std::get<1>(r);
  if (mask[2]) gb = grad.sum({0, 2, 3});
  if (mask[0]) {
    gx = std::get<0>(r);
    if (pad_value != 0)
      gx = gx.narrow(2, padding[0], x.size(2)).narrow(3, padding[1], x.size(3));
    gx = gx * (x.abs() <= 1).to(dt);
    gx = gx.to(x.scalar_type());
  }
  if (need_w) {
    if (scale) {
      const double n = static_cast<double>(w.size(1) * w.size(2) * w.size(3));
      gw = alpha * G + w.sign() * ((G * w).sum({1, 2, 3}, /*keepdim=*/true) / n);
    } else {
      gw = G;
    }
    gw = gw.to(weight.scalar_type());
  }
  return {gx, gw, gb};
}

// ---- the fused straight-through backward (CPU, float32 / float64) ----
// The forward's autograd saves two bits per input element (sign and |x| <= 1, xnor_ste_pack) instead of
// x. For stride-1 float32 on AVX2 / AVX-512 the weight gradient's GEMM reads the sign bits directly as
// table indices (core/xnor_ste_gemm.h); otherwise (and with FASTPOSE_STE_TABLE=0) the backward builds
// sign(x) (with its -1 border for pad_value = -1) from them straight into the layout of the gradient for
// oneDNN. The input gradient is oneDNN's GEMM on alpha * sign(w) (one convolution_backward call, bias
// gradient included), then the |x| <= 1 window while cropping a padded input gradient, and the alpha =
// mean |w| chain in one loop over the weight gradient.

std::tuple<at::Tensor, at::Tensor> xnor_ste_pack_cpu(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() == 4, "xnor_ste_pack: x must be (N, C, H, W), got shape ", x.sizes());
  const core::ElemType type = elem_type_of(x.scalar_type(), "x");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t CW = core::xnor_words(C);
  at::Tensor sign = at::empty({N, H, W, CW}, x.options().dtype(at::kLong));
  at::Tensor pass = at::empty({N, H, W, CW}, x.options().dtype(at::kLong));
  if (sign.numel() == 0) return {sign, pass};
  core::PackSource s{x.data_ptr(), type, N, C, H, W, x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  uint64_t* sd = reinterpret_cast<uint64_t*>(sign.data_ptr<int64_t>());
  uint64_t* pd = reinterpret_cast<uint64_t*>(pass.data_ptr<int64_t>());
  const core::Isa isa = core::active_isa();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, W * C));
  at::parallel_for(0, N * H, grain, [&](int64_t b, int64_t e) { core::ste_pack(s, sd, pd, b, e, isa); });
  return {sign, pass};
}

bool ste_table_enabled() {
  const char* env = std::getenv("FASTPOSE_STE_TABLE");
  return !(env && env[0] == '0' && env[1] == 0);
}

// The effective weight's gradient (Cout, Cin, KH, KW), contiguous, from the table GEMM.
at::Tensor table_weight_grad(const at::Tensor& grad, const uint64_t* sign, int64_t N, int64_t Cin, int64_t H,
                             int64_t W, const Geometry& g, bool pad_zero, core::Isa isa) {
  const core::SteWeightProblem p{{N, Cin, H, W, g.Cout, g.KH, g.KW, g.ph, g.pw, g.Ho, g.Wo,
                                  grad.data_ptr<float>(), grad.stride(0), grad.stride(1), grad.stride(2),
                                  grad.stride(3)}, sign, core::xnor_words(Cin), pad_zero};
  const core::SteWeightPlan pl = core::ste_weight_plan(p, isa);
  const auto bytes = grad.options().dtype(at::kByte);
  at::Tensor nib = at::empty({static_cast<int64_t>(pl.nib_bytes)}, bytes);
  at::Tensor zero = at::zeros({static_cast<int64_t>(pl.zero_bytes)}, bytes);
  at::Tensor gwt = at::empty({static_cast<int64_t>(pl.gwt_floats)}, grad.options());
  uint8_t* nd = nib.data_ptr<uint8_t>();
  float* gd = gwt.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, pl.NW * pl.CinN / 64));
  at::parallel_for(0, N * H, grain, [&](int64_t b, int64_t e) { core::ste_weight_nibbles(p, pl, nd, b, e, isa); });
  at::parallel_for(0, pl.jobs, 1, [&](int64_t b, int64_t e) {
    core::ste_weight_jobs(p, pl, nd, zero.data_ptr<uint8_t>(), gd, b, e, isa);
  });
  at::Tensor G = at::empty({g.Cout, Cin, g.KH, g.KW}, grad.options());
  float* Gd = G.data_ptr<float>();
  at::parallel_for(0, g.Cout, 16, [&](int64_t b, int64_t e) { core::ste_weight_finish(p, pl, gd, Gd, b, e); });
  return G;
}

// The input gradient (channels_last, the window applied) from the permute GEMM (core/xnor_ste_input.h).
at::Tensor table_input_grad(const at::Tensor& grad, const at::Tensor& w, const at::Tensor& alpha,
                            const at::Tensor& pass_words, int64_t N, int64_t Cin, int64_t H, int64_t W,
                            const Geometry& g, core::Isa isa) {
  at::Tensor gx = at::empty({N, Cin, H, W}, grad.options().memory_format(at::MemoryFormat::ChannelsLast));
  const core::SteInputProblem p{{N, Cin, H, W, g.Cout, g.KH, g.KW, g.ph, g.pw, g.Ho, g.Wo,
                                 grad.data_ptr<float>(), grad.stride(0), grad.stride(1), grad.stride(2), grad.stride(3)},
                                w.data_ptr<float>(), alpha.defined() ? alpha.data_ptr<float>() : nullptr,
                                reinterpret_cast<const uint64_t*>(pass_words.data_ptr<int64_t>()), core::xnor_words(Cin),
                                gx.data_ptr<float>(), gx.stride(0), gx.stride(2), gx.stride(3)};
  const core::SteInputPlan pl = core::ste_input_plan(p, isa);
  at::Tensor idx = at::empty({static_cast<int64_t>(pl.idx_ints)}, grad.options().dtype(at::kInt));
  at::parallel_for(0, g.KH * g.KW, 1, [&](int64_t b, int64_t e) {
    core::ste_input_indices(p, pl, idx.data_ptr<int32_t>(), b, e);
  });
  const auto fopts = grad.options().dtype(at::kFloat);
  // Each chunk builds the KH - 1 table rows above its first row again: chunks of at least a few rows.
  at::parallel_for(0, N * H, std::max<int64_t>(4, 2 * g.KH), [&](int64_t b, int64_t e) {
    at::Tensor ring = at::empty({static_cast<int64_t>(pl.ring_floats)}, fopts);  // 64-byte aligned
    core::ste_input_rows(p, pl, idx.data_ptr<int32_t>(), ring.data_ptr<float>(), b, e, isa);
  });
  return gx;
}

// The weight's gradient through alpha = mean |w| (core::ste_weight_chain) from G, the effective weight's,
// in the weight's own layout: AccumulateGrad would otherwise restride it into .grad every step.
at::Tensor weight_chain(const at::Tensor& G, const at::Tensor& w, const at::Tensor& alpha, bool scale, int64_t Cin,
                        const Geometry& g, const at::Tensor& weight) {
  at::Tensor out = at::empty(w.sizes(), w.options().memory_format(weight.suggest_memory_format()));
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "xnor_ste_weight_chain", [&] {
    const scalar_t* ap = scale ? alpha.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, g.Cout, 8, [&](int64_t b, int64_t e) {
      core::ste_weight_chain<scalar_t>(G.data_ptr<scalar_t>(), G.stride(0), G.stride(1), G.stride(2), G.stride(3),
                                       w.data_ptr<scalar_t>(), ap, Cin, g.KH, g.KW, out.data_ptr<scalar_t>(),
                                       out.stride(0), out.stride(1), out.stride(2), out.stride(3), b, e);
    });
  });
  return out.to(weight.scalar_type());
}

const char* kBwd = "xnor_conv2d_backward_packed";

std::tuple<at::Tensor, at::Tensor, at::Tensor> xnor_conv2d_backward_packed_cpu(
    const at::Tensor& grad, const at::Tensor& x_sign, const at::Tensor& x_pass, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool scale, int64_t pad_value,
    std::array<bool, 3> mask) {
  const at::ScalarType dt = grad.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble, kBwd, ": grad must be float32 or float64, got ", dt);
  TORCH_CHECK_VALUE(pad_value == 0 || pad_value == -1, kBwd, ": pad_value must be 0 or -1, got ", pad_value);
  TORCH_CHECK_VALUE(weight.dim() == 4, kBwd, ": weight must be (Cout, Cin, KH, KW), got shape ", weight.sizes());
  elem_type_of(weight.scalar_type(), "weight");
  const int64_t Cin = weight.size(1), CW = core::xnor_words(Cin);
  for (const at::Tensor* t : {&x_sign, &x_pass}) {
    TORCH_CHECK_TYPE(t->scalar_type() == at::kLong, kBwd, ": x_sign / x_pass must be int64 words, got ",
                     t->scalar_type());
    TORCH_CHECK_VALUE(t->dim() == 4 && t->size(3) == CW && t->sizes() == x_sign.sizes(), kBwd,
                      ": x_sign / x_pass must both be (N, H, W, ", CW, ") for ", Cin, " input channels, got ",
                      x_sign.sizes(), " and ", x_pass.sizes());
  }
  const int64_t N = x_sign.size(0), H = x_sign.size(1), W = x_sign.size(2);
  const Geometry g = geometry(N, Cin, H, W, weight.size(0), weight.size(2), weight.size(3), stride, padding,
                              dilation);
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == N && grad.size(1) == g.Cout && grad.size(2) == g.Ho &&
                        grad.size(3) == g.Wo,
                    kBwd, ": grad must be (", N, ", ", g.Cout, ", ", g.Ho, ", ", g.Wo, "), got shape ", grad.sizes());
  const auto fmt = grad.suggest_memory_format();
  const auto opts = grad.options();
  at::Tensor gx = grad.new_empty({0}), gw = weight.new_empty({0}), gb = grad.new_empty({0});
  if (grad.numel() == 0 || N * H * W == 0) {  // nothing flows back: zero gradients of the right shapes
    if (mask[2]) gb = at::zeros({g.Cout}, opts);
    if (mask[0]) gx = at::zeros({N, Cin, H, W}, opts.memory_format(fmt));
    if (mask[1]) gw = at::zeros(weight.sizes(), weight.options());
    return {gx, gw, gb};
  }
  if (!(mask[0] || mask[1] || mask[2])) return {gx, gw, gb};

  const at::Tensor w = weight.to(dt).contiguous();
  at::Tensor alpha;
  if (scale) alpha = w.abs().mean({1, 2, 3});
  const core::ElemType et = elem_type_of(dt, "grad");
  const core::Isa isa = core::active_isa();
  const at::Tensor sign_words = x_sign.contiguous();
  const uint64_t* sign = reinterpret_cast<const uint64_t*>(sign_words.data_ptr<int64_t>());
  // The weight gradient's GEMM with sign(x) as table indices (core/xnor_ste_gemm.h) where it applies;
  // FASTPOSE_STE_TABLE=0 keeps oneDNN's (for A/B runs).
  // Both table GEMMs: float32 on AVX2 / AVX-512, stride 1, dilation 1, not switched off.
  const bool tables = dt == at::kFloat && isa != core::Isa::Portable && g.sh == 1 && g.sw == 1 && g.dh == 1 &&
                      g.dw == 1 && ste_table_enabled();
  const bool table_w = mask[1] && tables;
  at::Tensor G;
  if (table_w) G = table_weight_grad(grad, sign, N, Cin, H, W, g, pad_value == 0, isa);
  // The input gradient's permute GEMM (AVX2 / AVX-512), where the gradient is channels_last like the activations.
  const bool table_x = mask[0] && tables && fmt == at::MemoryFormat::ChannelsLast;
  if (table_x) gx = table_input_grad(grad, w, alpha, x_pass.contiguous(), N, Cin, H, W, g, isa);

  // oneDNN's convolution_backward for the input gradient and the weight's where the tables do not
  // apply, and for the bias's along with them (alone it is a sum over grad).
  const bool dnn_x = mask[0] && !table_x, dnn_w = mask[1] && !table_w, dnn = dnn_x || dnn_w;
  if (!dnn) {
    if (mask[2]) gb = grad.sum({0, 2, 3});
    if (mask[1]) gw = weight_chain(G, w, alpha, scale, Cin, g, weight);
    return {gx, gw, gb};
  }
  // The effective weight alpha * sign(w) (sign as the forward's: w >= 0 -> +1).
  // weff in the activations' layout (channels_last for channels_last grad), which is what oneDNN's
  // convolution_backward reorders the weight to otherwise (two copies per call).
  at::Tensor weff = at::empty(w.sizes(), w.options().memory_format(fmt));
  AT_DISPATCH_FLOATING_TYPES(dt, "xnor_weff", [&] {
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const scalar_t* ap = scale ? alpha.data_ptr<scalar_t>() : nullptr;
    scalar_t* ep = weff.data_ptr<scalar_t>();
    const int64_t so = weff.stride(0), sc = weff.stride(1), sh = weff.stride(2), sw = weff.stride(3);
    at::parallel_for(0, g.Cout, std::max<int64_t>(1, 16384 / (Cin * g.KH * g.KW)), [&](int64_t b, int64_t e) {
      for (int64_t o = b, k = b * Cin * g.KH * g.KW; o < e; ++o) {
        const scalar_t a = ap ? ap[o] : scalar_t(1);
        for (int64_t c = 0; c < Cin; ++c)
          for (int64_t i = 0; i < g.KH; ++i)
            for (int64_t j = 0; j < g.KW; ++j, ++k) ep[o * so + c * sc + i * sh + j * sw] = wp[k] >= scalar_t(0) ? a : -a;
      }
    });
  });

  // With pad_value = -1 oneDNN's weight gradient needs the -1 border in its input: pad explicitly (and crop
  // the input gradient); with 0, or for the input gradient alone, the GEMM's own zero padding is exact.
  const bool explicit_pad = dnn_w && pad_value != 0 && (g.ph > 0 || g.pw > 0);
  const int64_t ph = explicit_pad ? g.ph : 0, pw = explicit_pad ? g.pw : 0;
  at::Tensor input = at::empty({N, Cin, H + 2 * ph, W + 2 * pw}, opts.memory_format(fmt));
  if (dnn_w) {
    core::UnpackTarget u{input.data_ptr(), et, N, Cin, H + 2 * ph, W + 2 * pw,
                         input.stride(0), input.stride(1), input.stride(2), input.stride(3), ph, pw, -1.0};
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, (W + 2 * pw) * Cin));
    at::parallel_for(0, N * (H + 2 * ph), grain, [&](int64_t b, int64_t e) { core::sign_unpack(sign, CW, u, b, e, isa); });
  }
  std::vector<int64_t> conv_pad = {explicit_pad ? 0 : g.ph, explicit_pad ? 0 : g.pw};
  auto r = at::convolution_backward(grad, input, weff, mask[2] ? c10::OptionalIntArrayRef(at::IntArrayRef{g.Cout})
                                                              : c10::nullopt,
                                    stride, conv_pad, dilation, false, {0, 0}, 1, {dnn_x, dnn_w, mask[2]});
  if (dnn_w) G = std::get<1>(r);
  if (mask[2]) gb = std::get<2>(r);
  if (dnn_x) {
    const at::Tensor gin = std::get<0>(r);
    const at::Tensor pass = x_pass.contiguous();
    // In place unless the input gradient is padded; the window zeroes the rest.
    gx = explicit_pad ? at::empty({N, Cin, H, W}, opts.memory_format(fmt)) : gin;
    core::MaskProblem mp{gin.data_ptr(), gin.stride(0), gin.stride(1), gin.stride(2), gin.stride(3), ph, pw,
                         gx.data_ptr(), gx.stride(0), gx.stride(1), gx.stride(2), gx.stride(3), et,
                         N, Cin, H, W, CW, reinterpret_cast<const uint64_t*>(pass.data_ptr<int64_t>())};
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, W * Cin));
    at::parallel_for(0, N * H, grain, [&](int64_t b, int64_t e) { core::ste_mask(mp, b, e, isa); });
  }
  if (mask[1]) gw = weight_chain(G, w, alpha, scale, Cin, g, weight);
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpose, CPU, m) {
  m.impl("binarize_pack", &binarize_pack_cpu);
  m.impl("xnor_conv2d", &xnor_conv2d_cpu);
  m.impl("xnor_conv2d_packed", &xnor_conv2d_packed_cpu);
  m.impl("xnor_conv2d_fused", &xnor_conv2d_fused_cpu);
  m.impl("xnor_ste_pack", &xnor_ste_pack_cpu);
  m.impl("xnor_conv2d_backward_packed", &xnor_conv2d_backward_packed_cpu);
}

TORCH_LIBRARY_IMPL(fastpose, CompositeImplicitAutograd, m) {
  m.impl("xnor_conv2d_backward", &xnor_conv2d_backward);
}

}  // namespace fastpose
