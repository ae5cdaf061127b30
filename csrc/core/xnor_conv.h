// XNOR-popcount binary convolution, torch-free core (raw pointers, [begin, end) work ranges).
//
// Packed layout (shared with fastpose.ops.binarize_pack and the CUDA kernels):
//   activations: uint64 words (N, H, W, CW), CW = ceil(C / 64); bit b of word k of pixel (n, h, w) is
//                channel 64 k + b; a set bit stands for +1 (x >= 0, so -0.0 is +1), a clear bit for -1
//                (x < 0 and NaN); bits of channels >= C are zero.
//   weights:     the same packing applied to (Cout, Cin, KH, KW) as (N, C, H, W): (Cout, KH, KW, CW).
//
// Dot products over +-1 values: with pad bits zero in BOTH operands, pad bits xor to 0, so over the valid
// taps  dot = n_valid * Cin - 2 * sum_valid popc(x ^ w). With pad_value = -1 an out-of-image tap reads
// all channels as -1 (all bits clear), i.e. it contributes Cin - 2 * popc(w_tap).
//
// Output element (exact formula, also used by the Python reference of the tests):
//   acc = float64 if the output is float64 else float32;
//   out = cast_out( acc(dot) * alpha[o] + bias[o] )   evaluated as two roundings (a multiply, then an
//   add; never fused), alpha / bias already in acc, alpha absent = no multiply, bias absent = no add.
//   With a folded BatchNorm: then v = v * bn_scale[o] (rounded), v = v + bn_shift[o] (rounded).
#pragma once
#include <cstdint>

#include "core/dtypes.h"
#include "core/isa.h"
#include "core/ranges.h"

namespace fastpose {
namespace core {

inline int64_t xnor_words(int64_t channels) { return (channels + 63) / 64; }

// Packs src (N, C, H, W) with arbitrary element strides into dst (N, H, W, CW), rows [begin, end) of
// the N * H rows (n, h).
struct PackSource {
  const void* data;
  ElemType type;
  int64_t N, C, H, W;
  int64_t sn, sc, sh, sw;  // strides in elements
};
void binarize_pack(const PackSource& src, uint64_t* dst, int64_t begin, int64_t end, Isa isa);

struct XnorConvProblem {
  const uint64_t* x;  // (N, H, W, CW)
  const uint64_t* w;  // (Cout, KH, KW, CW)
  int64_t N, Cin, H, W, Cout, KH, KW;
  int64_t sh, sw, ph, pw, dh, dw;
  int64_t Ho, Wo, CW;
  int pad_value;          // 0 or -1
  const int32_t* wpop;    // (Cout, KH * KW) popcounts of each weight tap, or nullptr (computed per call)
  // epilogue
  const void* alpha;      // (Cout) in acc type, or nullptr
  const void* bias;       // (Cout) in acc type, or nullptr
  const void* bn_scale;   // (Cout) in acc type, or nullptr: a folded BatchNorm, v = v * bn_scale + bn_shift
  const void* bn_shift;   // (Cout) in acc type, or nullptr (only with bn_scale)
  void* out;
  ElemType out_type;
  bool out_nhwc;          // output (N, Ho, Wo, Cout) in memory, else (N, Cout, Ho, Wo)
  int64_t cout_block;     // output channels per work unit (see xnor_conv_units)
  // x re-laid out by xnor_conv_prepare_input (N * H rows of xnor_conv_xt_row_words), or nullptr: each
  // thread then prepares the rows its units read itself, into a ring of the rows one output row reads.
  const uint64_t* xt = nullptr;
  // Work units of two output rows (set only where xnor_conv_row_pairs_fit says so): the AVX2 GEMM then
  // runs two 16-pixel rows as one 32-pixel block (4 channels x 2 groups: each weight table serves both
  // rows) instead of 8 channels x 1 group, or two 8-pixel rows as one full 16-pixel group instead of a
  // half-empty one; pairs whose rows read different vertical taps run row by row.
  bool row_pairs = false;
  // Fused epilogue (xnor_conv2d_fused; float32 / float64 output; off while all of these are unset).
  // With v the output value above (alpha, bias, bn applied):
  //   out_packed bit (n, oh, ow, o) = ((v * next_scale[o]) + next_shift[o]) >= 0, two roundings, in the
  //     packed layout (-0.0 -> 1, NaN -> 0): the sign of the next layer's folded BatchNorm of v;
  //     without next_scale, v >= 0.
  //   out element = v + residual element (one rounding; v without a residual), then + up_residual
  //     (below) when set; pool: out holds the 2x2 average of those elements.
  // out (with out_strided) and residual are addressed n * s[0] + o * s[1] + oh * s[2] + ow * s[3]
  // (elements), so a channel slice of a larger tensor is written in place.
  bool out_strided = false;
  int64_t out_strides[4] = {0, 0, 0, 0};
  const void* residual = nullptr;  // out's dtype
  int64_t res_strides[4] = {0, 0, 0, 0};
  // A second residual at half resolution, nearest-upsampled by 2 (an hourglass's merge of its lower
  // branch): out element = (v + residual) + up_residual[n, o, oh / 2, ow / 2], each add rounded once;
  // out's dtype, addressed like residual (n, o, oh / 2, ow / 2) by up_strides.
  const void* up_residual = nullptr;
  int64_t up_strides[4] = {0, 0, 0, 0};
  const void* next_scale = nullptr;  // (Cout) in acc type, or nullptr
  const void* next_shift = nullptr;  // (Cout) in acc type (with next_scale)
  // (N, Ho, Wo, xnor_words(Cout)). Each epilogue call stores whole words: output-channel blocks must
  // start at multiples of 64 and cover 64 channels (or run to Cout), so blocks never share a word.
  uint64_t* out_packed = nullptr;
  Isa fused_isa = Isa::Portable;  // ISA of the epilogue (float32 output: AVX-512 / AVX2 forms; else portable)
  // SIMD epilogues: full aligned vectors of out written with non-temporal stores (large
  // outputs, see cpu/hugepages.h); the epilogue fences them before it returns. Same values.
  bool stream_out = false;
  // Fused epilogue: software prefetch of the residual ahead of its loads (AVX-512 path).
  bool prefetch_residual = true;
  // Fused epilogue (out_strided), pooled: out receives avg_pool2d(out element, 2, 2) (floor mode) at
  // (n, o, oh / 2, ow / 2) instead of the element itself, summed as ATen does, (((0 + a) + b) + c) + d for
  // the pixels (2i, 2j), (2i, 2j + 1), (2i + 1, 2j), (2i + 1, 2j + 1), then divided by 4. Each work unit
  // covers output rows 2i and 2i + 1 (units: N * ceil(Ho / 2) * channel blocks), whose elements pass
  // through a per-thread scratch that stays in cache; out_packed is still written for every pixel.
  bool pool = false;
  // Float input read lazily (x and xt unset): each work unit binarizes the input rows its taps read into
  // a per-thread ring of prepared rows (through the folded BatchNorm src_scale / src_shift when set, as
  // binarize_pack_affine; else binarize_pack), so every row is packed once per thread and range, just
  // before the outputs next to it. A residual that is this input (an HPM block's identity shortcut) is
  // then read back from the core's cache instead of memory. Same values as packing first.
  const PackSource* src = nullptr;
  const void* src_scale = nullptr;  // (Cin) in src's type (float32 / float64), or nullptr
  const void* src_shift = nullptr;  // (Cin), with src_scale
  Isa src_isa = Isa::Portable;
};

// out's element strides (n, o, oh, ow): out_strides when out_strided, else dense NHWC or NCHW.
inline void out_strides_of(const XnorConvProblem& p, int64_t s[4]) {
  if (p.out_strided) {
    for (int i = 0; i < 4; ++i) s[i] = p.out_strides[i];
  } else if (p.out_nhwc) {
    s[0] = p.Ho * p.Wo * p.Cout, s[1] = 1, s[2] = p.Wo * p.Cout, s[3] = p.Cout;
  } else {
    s[0] = p.Cout * p.Ho * p.Wo, s[1] = p.Ho * p.Wo, s[2] = p.Wo, s[3] = 1;
  }
}

// The inner kernels' input layout ("prepared input"). Output pixels are the vector lanes: 8 consecutive
// output columns of one row are 8 consecutive words, for every (tap, channel word), so a 512-bit vector
// is always full whatever Cin is (K = taps x CW is only the loop length; no K padding exists).
//   Wo_pad = Wo rounded up to 8, Wq = Wo_pad + (KW - 1) * dw / sw;
//   row (n, h): CW x sw planes of Wq words; plane (c, r), word t holds x[n, h, iw, c] for the padded
//   column u = r + sw * t = iw + pw, and all-zero bits (= -1 everywhere) outside the image.
// Output column q of tap j reads plane (c, (j * dw) % sw) at t = q + (j * dw) / sw.
inline int64_t xnor_conv_wo_pad(const XnorConvProblem& p) { return (p.Wo + 7) / 8 * 8; }
inline int64_t xnor_conv_xt_plane(const XnorConvProblem& p) {
  return xnor_conv_wo_pad(p) + (p.KW - 1) * p.dw / p.sw;
}
inline int64_t xnor_conv_xt_row_words(const XnorConvProblem& p) { return p.CW * p.sw * xnor_conv_xt_plane(p); }
// Prepares input rows [begin, end) of the N * H rows (n, h) into xt (N * H * xnor_conv_xt_row_words).
void xnor_conv_prepare_input(const XnorConvProblem& p, uint64_t* xt, int64_t begin, int64_t end);
// The same from the unpacked source (p.x unused): binarizes and lays out in one pass where it can
// (float32 rows contiguous along W or C, stride 1), else packs each row first. Same result.
void xnor_conv_prepare_input_from(const XnorConvProblem& p, const PackSource& src, uint64_t* xt, int64_t begin,
                                  int64_t end, Isa isa);

// The fused epilogue (see XnorConvProblem): out elements, residual and packed bits for channels
// [o0, o0 + no) of pixels [q0, q0 + nq) of row (n, oh); dot = k0[q] - 2 S[o][q] - 2 extra[o][q].
void xnor_fused_epilogue(const XnorConvProblem& p, int64_t n, int64_t oh, int64_t o0, int no, int64_t q0, int nq,
                         const int32_t* S, int64_t s_ostride, const int32_t* k0, const int32_t* extra);
// AVX-512 form for float32 output with unit channel strides (out and residual, packed bits allowed) or unit
// pixel strides (out and residual, no packed bits); false if it does not apply.
bool xnor_fused_epilogue_avx512(const XnorConvProblem& p, int64_t n, int64_t oh, int64_t o0, int no, int64_t q0,
                                int nq, const int32_t* S, int64_t s_ostride, const int32_t* k0, const int32_t* extra);

// AVX2 form, same conditions as the AVX-512 one (pad_value = -1 border popcounts included); false if it does
// not apply.
bool xnor_fused_epilogue_avx2(const XnorConvProblem& p, int64_t n, int64_t oh, int64_t o0, int no, int64_t q0, int nq,
                              const int32_t* S, int64_t s_ostride, const int32_t* k0, const int32_t* extra);

// binarize_pack of a folded BatchNorm of src: bit = ((x * scale[c]) + shift[c]) >= 0, two roundings in
// src's type (float32 or float64 only; scale / shift in that type), rows [begin, end) of N * H.
void binarize_pack_affine(const PackSource& src, const void* scale, const void* shift, uint64_t* dst, int64_t begin,
                          int64_t end, Isa isa);
// The same with row r at d0 + (r - begin) * W * CW (a buffer of end - begin rows).
void binarize_pack_affine_rows(const PackSource& src, const void* scale, const void* shift, uint64_t* d0,
                               int64_t begin, int64_t end, Isa isa);
// AVX-512 float32 row with contiguous channels (sc == 1): W pixels -> W * CW words.
void pack_row_affine_nhwc_f32_avx512(const float* src, int64_t C, int64_t W, int64_t sw, const float* scale,
                                     const float* shift, uint64_t* dst, int64_t CW);
void pack_row_affine_nhwc_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sw, const float* scale,
                                   const float* shift, uint64_t* dst, int64_t CW);
// A float32 row with contiguous pixels (sw == 1, channel stride sc): dst[c * W + w] = (x * scale[c]) +
// shift[c], two roundings (the NCHW BN-folded pack runs the plain NCHW sign pack on it).
void affine_row_nchw_f32_avx512(const float* src, int64_t C, int64_t W, int64_t sc, const float* scale,
                                const float* shift, float* dst);
void affine_row_nchw_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sc, const float* scale,
                              const float* shift, float* dst);

// Work units: (n, oh, block of cout_block output channels); pooled: (n, pair of rows oh, block);
// row_pairs: (n, pair of rows 2i - s and 2i - s + 1, block), s the parity of the top border rows, so the
// interior rows pair up.
int64_t xnor_conv_units(const XnorConvProblem& p);
// Whether row_pairs pays for p on isa: AVX2, no pooling, 9-16 output columns (prepared input or rings)
// or 1-8 (prepared input only).
bool xnor_conv_row_pairs_fit(const XnorConvProblem& p, Isa isa);
void xnor_conv2d_forward(const XnorConvProblem& p, int64_t begin, int64_t end, Isa isa);
// The same over the unit ranges next(ctx, &begin, &end) yields until it returns false, with the
// per-call setup (scratch buffers, weight tap popcounts, border sums) done once: what each thread of a
// dynamically scheduled call runs (cpu/parallel.h), instead of once per chunk.
void xnor_conv2d_forward_ranges(const XnorConvProblem& p, RangeSource next, void* ctx, Isa isa);
// (Cout, KH * KW) popcounts of the packed weight taps.
void xnor_weight_popcounts(const uint64_t* w, int64_t taps_total, int64_t CW, int32_t* out);

// The inner kernel, a popcount GEMM over pixels x output channels (exposed for the unit tests):
//   S[o * s_ostride + q] = sum_{k < nk} popc(x[xoff[k] + q] ^ w[o * wstride + woff[k]]),
//   for o < nout and q < npix; npix must be a multiple of 8 (the lanes of one 512-bit vector).
// avx2_tables (AVX2 only, else ignored): the weight's lookup-table offsets for these nout channels and
// nk steps, from xnor_gemm_tables_avx2 (channel o's at avx2_tables + o * tables_ostride); null: built here.
void xnor_gemm_block(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
                     const int64_t* woff, int nout, int npix, int32_t* S, int64_t s_ostride, Isa isa,
                     const uint16_t* avx2_tables = nullptr, int64_t tables_ostride = 0);
// row2 (AVX2 only): > 0 with npix == 16 or 8 runs two rows at once, the second's pixels at
// x[xoff[k] + row2 + q] and its sums at S[o * s_ostride + npix + q] (s_ostride >= 2 npix).
void xnor_gemm_block_avx2(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
                          const int64_t* woff, int nout, int npix, int32_t* S, int64_t s_ostride,
                          const uint16_t* tables = nullptr, int64_t tables_ostride = 0, int64_t row2 = 0);
// The AVX2 GEMM's per-weight lookup-table offsets (8 per step: byte b of w[o * wstride + s] times 32) of
// channels o < nout and steps s < nsteps, to off[o * ostride + 8 s + b]: built once per layer call and
// thread instead of once per output row (at 16 pixels a row they cost as much as the popcounts).
void xnor_gemm_tables_avx2(const uint64_t* w, int64_t wstride, int nout, int nsteps, uint16_t* off, int64_t ostride);
void xnor_gemm_block_avx512(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
                            const int64_t* woff, int nout, int npix, int32_t* S, int64_t s_ostride);

// The machine's limit for the inner loop: a register-only loop of 512-bit (AVX-512) or 256-bit (AVX2)
// xor + popcount + add over independent accumulators, iters iterations; returns binary MACs done
// (bits xor-popcounted). Portable: 64-bit words.
int64_t xnor_popcount_peak_loop(int64_t iters, Isa isa);
// The weight of xnor_conv2d's float path in one pass: a contiguous float32 (Cout, Cin, K = KH * KW) weight ->
// its packed words (Cout, K, CW) (binarize_pack of (Cout, Cin, 1, K): the layout of (Cout, KH, KW, CW))
// and, when abs_sum is not null, each output channel's sum of |w| into abs_sum (Cout): the additions and
// their order are those of ATen's CPU sum of a contiguous row with Vectorized<float> of sum_lanes (8: the
// AVX2 / default builds, 16: AVX-512) lanes, so abs_sum / (Cin K) is `w.abs().mean((1, 2, 3))` bit for bit
// (for Cin K >= sum_lanes). Output channels [co_begin, co_end).
// Only where pack_weight_abs_f32_available(K, isa): AVX-512 with BMI2, or AVX2 with a fast pext, and
// K <= kPackWeightMaxTaps; isa picks the form.
constexpr int64_t kPackWeightMaxTaps = 49;  // 7x7; the method holds to 64, the table (K x K) sizes the stack
bool pack_weight_abs_f32_available(int64_t K, Isa isa);
// tap_pop (optional, (Cout, K)): each tap's popcount over its CW words (xnor_weight_popcounts of dst).
void pack_weight_abs_f32(const float* w, int64_t Cin, int64_t K, uint64_t* dst, float* abs_sum, int sum_lanes,
                         int64_t co_begin, int64_t co_end, int32_t* tap_pop, Isa isa);
// shuffle = false: the pext tap gather even where the bit-shuffle one exists (tests of both).
void pack_weight_abs_f32_avx512(const float* w, int64_t Cin, int64_t K, uint64_t* dst, float* abs_sum,
                                int sum_lanes, int64_t co_begin, int64_t co_end, int32_t* tap_pop = nullptr,
                                bool shuffle = true);
// The AVX2 form (8-float sign masks, pext tap gather, ATen's order for 8 or 16 lanes).
void pack_weight_abs_f32_avx2(const float* w, int64_t Cin, int64_t K, uint64_t* dst, float* abs_sum, int sum_lanes,
                              int64_t co_begin, int64_t co_end, int32_t* tap_pop = nullptr);
// pext at full speed (Intel since Haswell, AMD since Zen 3; microcoded, ~20x slower, on Zen 1 / 2).
bool fast_pext();
bool pack_weight_shuffle_available();  // AVX512-VBMI2 + BITALG (Ice Lake, Zen 4 and later)
int64_t xnor_popcount_peak_avx512(int64_t iters);
void xnor_weight_popcounts_avx512(const uint64_t* w, int64_t taps_total, int64_t CW, int32_t* out);
int64_t xnor_popcount_peak_avx2(int64_t iters);

// float32 rows: NCHW (contiguous along W) / NHWC (contiguous along C) source row -> the word of pixel
// w < W and channel word k < CW at dst[w * ps + k * ks] (packed layout: ps = CW, ks = 1; prepared
// layout: ps = 1, ks = plane length).
void pack_row_nchw_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sc, uint64_t* dst, int64_t ps,
                            int64_t ks);
void pack_row_nhwc_f32_avx2(const float* src, int64_t C, int64_t W, int64_t sw, uint64_t* dst, int64_t ps,
                            int64_t ks);
void pack_row_nchw_f32_avx512(const float* src, int64_t C, int64_t W, int64_t sc, uint64_t* dst, int64_t ps,
                              int64_t ks);
void pack_row_nhwc_f32_avx512(const float* src, int64_t C, int64_t W, int64_t sw, uint64_t* dst, int64_t ps,
                              int64_t ks);

}  // namespace core
}  // namespace fastpose
