// CUDA kernels of the XNOR-popcount binary convolution: a fused binarize-and-pack kernel and an
// implicit GEMM on the 1-bit tensor cores (mma.sync m16n8k256 .b1, AND + popc) with an epilogue that
// applies alpha, bias and an optional folded BatchNorm and writes NCHW or NHWC float16/bfloat16/float32.
//
// XNOR through AND: for +-1 vectors over the valid taps (bits a, b, pad bits zero in both),
//   dot = K - 2 popc(a) - 2 popc(b) + 4 popc(a & b),   K = Cin * (valid taps),
// because the .xor.popc form is emulated on sm_90 (several times slower). popc(a) comes per input pixel
// from the pack kernel, popc(b) per (output channel, tap) from a weight kernel; taps outside the image
// load as zero bits, so they add nothing to popc(a & b). With pad_value = -1 an outside tap is all -1:
// it adds Cin - 2 popc(b_tap), i.e. the same formula with K = Cin * KH * KW and popc(b) over all taps.
//
// Packed layout as on the CPU: int64 words (N, H, W, ceil(C / 64)), bit b of word k = channel 64 k + b.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace fastpose {
namespace {

const char* kOp = "xnor_conv2d";

// ---------------------------------------------------------------------------------------------------
// Packing

// v >= 0 from the bits alone (NaN: false; -0.0: true): a float compare would see a subnormal as
// zero wherever flush-to-zero is on, and pack a negative subnormal as +1. True when the sign bit is
// clear and the magnitude is not a NaN's, or when the magnitude is zero.
template <class U>
__device__ __forceinline__ bool nonneg_bits(U u, U sign, U inf) {
  const U mag = u & static_cast<U>(~sign);
  return mag <= inf && ((u & sign) == 0 || mag == 0);
}
__device__ __forceinline__ bool nonneg(float v) {
  return nonneg_bits<uint32_t>(__float_as_uint(v), 0x80000000u, 0x7f800000u);
}
__device__ __forceinline__ bool nonneg(double v) {
  return nonneg_bits<uint64_t>(static_cast<uint64_t>(__double_as_longlong(v)), 0x8000000000000000ull,
                               0x7ff0000000000000ull);
}
__device__ __forceinline__ bool nonneg(at::Half v) { return nonneg_bits<uint32_t>(v.x, 0x8000u, 0x7c00u); }
__device__ __forceinline__ bool nonneg(at::BFloat16 v) { return nonneg_bits<uint32_t>(v.x, 0x8000u, 0x7f80u); }

struct PackArgs {
  int64_t N, C, H, W, CW;
  int64_t sn, sc, sh, sw;
};

// One thread per pixel: its CW words (adjacent threads read adjacent pixels of each channel plane, so
// NCHW reads coalesce) and, optionally, the popcount of the pixel's bits.
template <class T>
__global__ void pack_kernel(const T* __restrict__ x, PackArgs a, uint64_t* __restrict__ out, int* __restrict__ pc) {
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pix >= a.N * a.H * a.W) return;
  const int64_t w = pix % a.W, h = (pix / a.W) % a.H, n = pix / (a.W * a.H);
  const T* src = x + n * a.sn + h * a.sh + w * a.sw;
  int count = 0;
  for (int64_t k = 0; k < a.CW; ++k) {
    uint64_t word = 0;
    const int64_t c0 = 64 * k;
    const int nc = static_cast<int>(a.C - c0 < 64 ? a.C - c0 : 64);
    for (int c = 0; c < nc; ++c)
      if (nonneg(src[(c0 + c) * a.sc])) word |= uint64_t(1) << c;
    out[pix * a.CW + k] = word;
    count += __popcll(word);
  }
  if (pc) pc[pix] = count;
}

// channels_last x (channel stride 1): one warp per pixel, lane l reading channels 64 k + l and
// 64 k + 32 + l of word k, so a warp's loads are contiguous; the two ballots are the word. The
// thread-per-pixel kernel above would have each thread walk its own C elements (uncoalesced).
template <class T>
__global__ void pack_nhwc_kernel(const T* __restrict__ x, PackArgs a, uint64_t* __restrict__ out,
                                 int* __restrict__ pc) {
  const int lane = threadIdx.x & 31;
  const int64_t pixels = a.N * a.H * a.W;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  // The pixel loop is warp-uniform, so every lane reaches each ballot.
  for (int64_t pix = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; pix < pixels;
       pix += nwarps) {
    const int64_t w = pix % a.W, h = (pix / a.W) % a.H, n = pix / (a.W * a.H);
    const T* src = x + n * a.sn + h * a.sh + w * a.sw;
    int count = 0;
    for (int64_t k = 0; k < a.CW; ++k) {
      const int64_t c0 = 64 * k + lane, c1 = c0 + 32;
      const bool b0 = c0 < a.C && nonneg(src[c0 * a.sc]);
      const bool b1 = c1 < a.C && nonneg(src[c1 * a.sc]);
      const uint32_t lo = __ballot_sync(0xffffffffu, b0), hi = __ballot_sync(0xffffffffu, b1);
      const uint64_t word = (static_cast<uint64_t>(hi) << 32) | lo;
      if (lane == 0) out[pix * a.CW + k] = word;
      count += __popcll(word);
    }
    if (pc != nullptr && lane == 0) pc[pix] = count;
  }
}

// Weight popcounts per (output channel, tap) and per output channel in one pass (the GEMM epilogue
// needs both; a separate sum would be one more launch).
__global__ void weight_popc_kernel(const uint64_t* __restrict__ w, int64_t cout, int64_t taps, int64_t CW,
                                   int* __restrict__ per_tap, int* __restrict__ total) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= cout) return;
  int sum = 0;
  for (int64_t t = 0; t < taps; ++t) {
    int s = 0;
    for (int64_t k = 0; k < CW; ++k) s += __popcll(w[(o * taps + t) * CW + k]);
    per_tap[o * taps + t] = s;
    sum += s;
  }
  total[o] = sum;
}

// Popcount of each row of `rows` rows of CW words (input pixels of an already packed x, weight taps).
__global__ void row_popc_kernel(const uint64_t* __restrict__ words, int64_t rows, int64_t CW, int* __restrict__ out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  int s = 0;
  for (int64_t k = 0; k < CW; ++k) s += __popcll(words[r * CW + k]);
  out[r] = s;
}

// ---------------------------------------------------------------------------------------------------
// Implicit GEMM: M = N * Ho * Wo output pixels, N = Cout, K = taps x 256-bit chunks of the channels.

constexpr int BM = 64, BN = 64, THREADS = 128;
constexpr int SROW = 12;  // uint32 per smem row: 8 (256 bits) + 4 padding, conflict-free fragment reads

struct ConvArgs {
  const uint64_t* x;  // (N, H, W, CW)
  const uint64_t* w;  // (Cout, KH, KW, CW)
  const int* pc;      // (N, H, W) popcounts of x pixels
  const int* wpop;    // (Cout, KH * KW)
  const int* wpop_total;  // (Cout)
  const void* alpha;
  const void* bias;
  const void* bn_scale;
  const void* bn_shift;
  void* out;
  int N, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw, dh, dw, Ho, Wo, CW, KC;
  // K order. flat (default): the KT * CW words of (tap, word) run one after the other and each k-step
  // takes the next 4, so Cin = 64 (one word per tap) fills the 256-bit chunk with 4 taps instead of
  // padding one tap's word with three zero words. Else one tap per k-step group (KC chunks of 4
  // words of that tap). The dot product is the same sum over (tap, word) either way.
  bool kflat;
  int n_base;  // first output channel of this launch (gridDim.y is at most 65535 blocks of BN)
  int pad_value;
  bool nhwc;
};

__device__ __forceinline__ void mma_b1_and(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  // Pre-Ampere has no m16n8k256 (the build targets sm_80 / sm_90): keep the symbol, never used.
  __trap();
#endif
}

__device__ __forceinline__ void store_val(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_val(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_val(at::Half* p, float v) { *reinterpret_cast<__half*>(p) = __float2half_rn(v); }
__device__ __forceinline__ void store_val(at::BFloat16* p, float v) {
  *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(v);
}

// The exact epilogue: separate roundings (no FMA contraction, which --use_fast_math would allow).
__device__ __forceinline__ float epi(int dot, float a, float b, float s, float t, bool ha, bool hb, bool hs, bool ht) {
  float v = static_cast<float>(dot);
  if (ha) v = __fmul_rn(v, a);
  if (hb) v = __fadd_rn(v, b);
  if (hs) v = __fmul_rn(v, s);
  if (ht) v = __fadd_rn(v, t);
  return v;
}
__device__ __forceinline__ double epi(int dot, double a, double b, double s, double t, bool ha, bool hb, bool hs,
                                      bool ht) {
  double v = static_cast<double>(dot);
  if (ha) v = __dmul_rn(v, a);
  if (hb) v = __dadd_rn(v, b);
  if (hs) v = __dmul_rn(v, s);
  if (ht) v = __dadd_rn(v, t);
  return v;
}

template <class O, class A>
__global__ void __launch_bounds__(THREADS) xnor_gemm_kernel(ConvArgs p) {
  __shared__ __align__(16) uint32_t As[BM * SROW];
  __shared__ __align__(16) uint32_t Bs[BN * SROW];
  __shared__ int row_n[BM], row_ih0[BM], row_iw0[BM];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 1, wn = warp & 1;  // 2 x 2 warps of 32 x 32
  const int gid = lane >> 2, tig = lane & 3;
  const int64_t M = static_cast<int64_t>(p.N) * p.Ho * p.Wo;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int n0 = p.n_base + static_cast<int>(blockIdx.y) * BN;

  if (tid < BM) {
    const int64_t m = m0 + tid;
    if (m < M) {
      const int ow = static_cast<int>(m % p.Wo), oh = static_cast<int>((m / p.Wo) % p.Ho);
      row_n[tid] = static_cast<int>(m / (static_cast<int64_t>(p.Wo) * p.Ho));
      row_ih0[tid] = oh * p.sh - p.ph;
      row_iw0[tid] = ow * p.sw - p.pw;
    } else {
      row_n[tid] = -1;
      row_ih0[tid] = row_iw0[tid] = 0;
    }
  }
  __syncthreads();

  int acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int k = 0; k < 4; ++k) acc[i][j][k] = 0;

  // Each thread loads 2 of the 64 x 4 words of A and 2 of B per k-step: rows r = tid / 4 and + 32.
  const int lw = tid & 3, lr = tid >> 2;
  const int KT = p.KH * p.KW;
  const int KWORDS = KT * p.CW;
  const int steps = p.kflat ? (KWORDS + 3) / 4 : KT * p.KC;
  uint64_t ra[2], rb[2];
  auto load = [&](int step) {
    int t, word;
    if (p.kflat) {
      const int q = step * 4 + lw;  // this thread's word of the flattened (tap, word) sequence
      t = q < KWORDS ? q / p.CW : 0;
      word = q < KWORDS ? q - t * p.CW : p.CW;  // p.CW: past the end, loads nothing
    } else {
      t = step / p.KC;
      word = (step % p.KC) * 4 + lw;
    }
    const int i = t / p.KW, j = t % p.KW;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = lr + 32 * h;
      uint64_t va = 0;
      const int n = row_n[r];
      const int ih = row_ih0[r] + i * p.dh, iw = row_iw0[r] + j * p.dw;
      if (n >= 0 && word < p.CW && ih >= 0 && ih < p.H && iw >= 0 && iw < p.W)
        va = __ldg(reinterpret_cast<const unsigned long long*>(p.x) +
                   ((static_cast<int64_t>(n) * p.H + ih) * p.W + iw) * p.CW + word);
      ra[h] = va;
      const int o = n0 + r;
      uint64_t vb = 0;
      if (o < p.Cout && word < p.CW)
        vb = __ldg(reinterpret_cast<const unsigned long long*>(p.w) + (static_cast<int64_t>(o) * KT + t) * p.CW + word);
      rb[h] = vb;
    }
  };
  if (steps > 0) load(0);
  for (int step = 0; step < steps; ++step) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = lr + 32 * h;
      *reinterpret_cast<uint2*>(&As[r * SROW + 2 * lw]) = make_uint2(static_cast<uint32_t>(ra[h]),
                                                                     static_cast<uint32_t>(ra[h] >> 32));
      *reinterpret_cast<uint2*>(&Bs[r * SROW + 2 * lw]) = make_uint2(static_cast<uint32_t>(rb[h]),
                                                                     static_cast<uint32_t>(rb[h] >> 32));
    }
    __syncthreads();
    if (step + 1 < steps) load(step + 1);  // global loads of the next step overlap the MMAs
    uint32_t af[2][4], bf[4][2];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const int r = wm * 32 + mt * 16 + gid;
      af[mt][0] = As[r * SROW + tig];
      af[mt][1] = As[(r + 8) * SROW + tig];
      af[mt][2] = As[r * SROW + tig + 4];
      af[mt][3] = As[(r + 8) * SROW + tig + 4];
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const int c = wn * 32 + nt * 8 + gid;
      bf[nt][0] = Bs[c * SROW + tig];
      bf[nt][1] = Bs[c * SROW + tig + 4];
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) mma_b1_and(acc[mt][nt], af[mt], bf[nt]);
    __syncthreads();
  }

  // Epilogue. Accumulator element e of tile (mt, nt): row gid (+8 for e >= 2), column tig * 2 + (e & 1).
  const A* alpha = static_cast<const A*>(p.alpha);
  const A* bias = static_cast<const A*>(p.bias);
  const A* bns = static_cast<const A*>(p.bn_scale);
  const A* bnt = static_cast<const A*>(p.bn_shift);
  O* out = static_cast<O*>(p.out);
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int r = wm * 32 + mt * 16 + gid + 8 * hr;
      const int n = row_n[r];
      if (n < 0) continue;
      const int ih0 = row_ih0[r], iw0 = row_iw0[r];
      // Valid taps of this pixel: their count and the popcount of its input bits over them.
      int nvalid = 0, pa = 0;
      bool interior = true;
      for (int i = 0; i < p.KH; ++i) {
        const int ih = ih0 + i * p.dh;
        for (int j = 0; j < p.KW; ++j) {
          const int iw = iw0 + j * p.dw;
          if (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W) {
            ++nvalid;
            pa += __ldg(p.pc + (static_cast<int64_t>(n) * p.H + ih) * p.W + iw);
          } else {
            interior = false;
          }
        }
      }
      const int oh = (ih0 + p.ph) / p.sh, ow = (iw0 + p.pw) / p.sw;
      const int K = (p.pad_value != 0 ? KT : nvalid) * p.Cin;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int o = n0 + wn * 32 + nt * 8 + tig * 2 + e;
          if (o >= p.Cout) continue;
          int pb = __ldg(p.wpop_total + o);
          if (!interior && p.pad_value == 0) {
            for (int i = 0; i < p.KH; ++i) {
              const int ih = ih0 + i * p.dh;
              for (int j = 0; j < p.KW; ++j) {
                const int iw = iw0 + j * p.dw;
                if (!(ih >= 0 && ih < p.H && iw >= 0 && iw < p.W))
                  pb -= __ldg(p.wpop + static_cast<int64_t>(o) * KT + i * p.KW + j);
              }
            }
          }
          const int dot = K - 2 * pa - 2 * pb + 4 * acc[mt][nt][2 * hr + e];
          const A v = epi(dot, alpha ? alpha[o] : A(1), bias ? bias[o] : A(0), bns ? bns[o] : A(1),
                          bnt ? bnt[o] : A(0), alpha != nullptr, bias != nullptr, bns != nullptr, bnt != nullptr);
          const int64_t idx = p.nhwc ? ((static_cast<int64_t>(n) * p.Ho + oh) * p.Wo + ow) * p.Cout + o
                                     : ((static_cast<int64_t>(n) * p.Cout + o) * p.Ho + oh) * p.Wo + ow;
          store_val(out + idx, v);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Host side

bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous();
}

void check_float(const at::Tensor& t, const char* what) {
  const auto s = t.scalar_type();
  TORCH_CHECK_TYPE(s == at::kFloat || s == at::kHalf || s == at::kBFloat16 || s == at::kDouble, kOp, ": ", what,
                   " must be float32, float16, bfloat16 or float64, got ", s);
}

int64_t words_of(int64_t c) { return (c + 63) / 64; }

// Every tensor the kernels read must be on x's CUDA device: a CPU or other-GPU pointer faults or
// reads garbage. (The dispatcher picks the CUDA kernel when any argument is a CUDA tensor.)
void check_device(const at::Tensor& t, const at::Tensor& x, const char* what) {
  if (!t.defined()) return;
  TORCH_CHECK_VALUE(t.device() == x.device(), kOp, ": ", what, " must be on x's device ", x.device(), ", got ",
                    t.device());
}
void check_x_cuda(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.is_cuda(), kOp, ": x must be a CUDA tensor when the other arguments are, got ", x.device());
}

// Packs x; fills pc (N, H, W) when given.
at::Tensor pack_impl(const at::Tensor& x, at::Tensor* pc, const char* what) {
  TORCH_CHECK_VALUE(x.dim() == 4, kOp, ": ", what, " must be (N, C, H, W), got shape ", x.sizes());
  check_float(x, what);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), CW = words_of(C);
  at::Tensor out = at::empty({N, H, W, CW}, x.options().dtype(at::kLong));
  if (pc) *pc = at::empty({N, H, W}, x.options().dtype(at::kInt));
  const int64_t pixels = N * H * W;
  if (pixels == 0 || CW == 0) return out;
  PackArgs a{N, C, H, W, CW, x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const int threads = 256;
  auto stream = at::cuda::getCurrentCUDAStream();
  uint64_t* o = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  int* pcp = pc ? pc->data_ptr<int>() : nullptr;
  const bool nhwc = x.stride(1) == 1 && C > 1;
  // nhwc: a warp per pixel, grid-stride beyond 2^20 blocks; else a thread per pixel.
  const int64_t blocks = nhwc ? std::min<int64_t>((pixels + threads / 32 - 1) / (threads / 32), int64_t(1) << 20)
                              : (pixels + threads - 1) / threads;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "xnor_pack", [&] {
    if (nhwc)
      pack_nhwc_kernel<scalar_t><<<blocks, threads, 0, stream>>>(x.data_ptr<scalar_t>(), a, o, pcp);
    else
      pack_kernel<scalar_t><<<blocks, threads, 0, stream>>>(x.data_ptr<scalar_t>(), a, o, pcp);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor row_popc(const at::Tensor& words, int64_t rows, int64_t CW) {
  at::Tensor out = at::empty({rows}, words.options().dtype(at::kInt));
  if (rows == 0) return out;
  const int threads = 256;
  row_popc_kernel<<<(rows + threads - 1) / threads, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
      reinterpret_cast<const uint64_t*>(words.data_ptr<int64_t>()), rows, CW, out.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// FASTPOSE_XNOR_CUDA_KORDER=tap selects the one-tap-per-k-step order (the first version; kept to
// compare on a GPU); default flat. Read per call: the tests switch it.
bool kflat_order() {
  const char* v = std::getenv("FASTPOSE_XNOR_CUDA_KORDER");
  return !(v != nullptr && std::string(v) == "tap");
}

struct Geometry {
  int64_t N, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw, dh, dw, Ho, Wo;
};

Geometry geometry(int64_t N, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t KH, int64_t KW,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, kOp,
                    ": stride, padding and dilation must have 2 values");
  Geometry g{N, Cin, H, W, Cout, KH, KW, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], 0, 0};
  TORCH_CHECK_VALUE(g.sh >= 1 && g.sw >= 1, kOp, ": stride must be >= 1, got ", stride);
  TORCH_CHECK_VALUE(g.dh >= 1 && g.dw >= 1, kOp, ": dilation must be >= 1, got ", dilation);
  TORCH_CHECK_VALUE(g.ph >= 0 && g.pw >= 0, kOp, ": padding must be >= 0, got ", padding);
  TORCH_CHECK_VALUE(Cin >= 1 && KH >= 1 && KW >= 1, kOp, ": weight must have Cin, KH, KW >= 1");
  const int64_t eh = H + 2 * g.ph - g.dh * (KH - 1) - 1, ew = W + 2 * g.pw - g.dw * (KW - 1) - 1;
  TORCH_CHECK_VALUE(eh >= 0 && ew >= 0, kOp, ": the (dilated) kernel ", KH, "x", KW,
                    " is larger than the padded input ", H + 2 * g.ph, "x", W + 2 * g.pw);
  g.Ho = eh / g.sh + 1;
  g.Wo = ew / g.sw + 1;
  return g;
}

at::Tensor per_channel(const at::Tensor& t, int64_t cout, at::ScalarType acc, const char* name) {
  if (!t.defined()) return t;
  check_float(t, name);  // as the Python API and the CPU op: an int / bool / float8 / complex vector is refused
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == cout, kOp, ": ", name, " must be (", cout, "), got shape ",
                    t.sizes());
  return t.to(acc).contiguous();
}

at::Tensor conv_packed_impl(const at::Tensor& xp_in, const at::Tensor& pc, const at::Tensor& wp_in,
                            const at::Tensor& alpha_in, const at::Tensor& bias_in, const at::Tensor& bns_in,
                            const at::Tensor& bnt_in, const Geometry& g, int64_t pad_value, at::ScalarType out_dtype,
                            bool nhwc) {
  TORCH_CHECK_VALUE(pad_value == 0 || pad_value == -1, kOp, ": pad_value must be 0 or -1, got ", pad_value);
  TORCH_CHECK_VALUE(g.N * g.H * g.W < (int64_t(1) << 31) && g.N * g.Ho * g.Wo < (int64_t(1) << 31) &&
                        g.Cout < (int64_t(1) << 30),
                    kOp, ": tensor too large for 32-bit indices");
  check_device(wp_in, xp_in, "weight_packed");
  check_device(alpha_in, xp_in, "alpha");
  check_device(bias_in, xp_in, "bias");
  check_device(bns_in, xp_in, "bn_scale");
  check_device(bnt_in, xp_in, "bn_shift");
  const c10::cuda::CUDAGuard guard(xp_in.device());
  const at::ScalarType acc = out_dtype == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = xp_in.options().dtype(out_dtype);
  at::Tensor out = nhwc ? at::empty({g.N, g.Cout, g.Ho, g.Wo}, opts.memory_format(at::MemoryFormat::ChannelsLast))
                        : at::empty({g.N, g.Cout, g.Ho, g.Wo}, opts);
  if (out.numel() == 0) return out;
  const at::Tensor alpha = per_channel(alpha_in, g.Cout, acc, "alpha"), bias = per_channel(bias_in, g.Cout, acc, "bias");
  const at::Tensor bns = per_channel(bns_in, g.Cout, acc, "bn_scale"), bnt = per_channel(bnt_in, g.Cout, acc, "bn_shift");
  TORCH_CHECK_VALUE(bns.defined() || !bnt.defined(), kOp, ": bn_shift needs bn_scale");
  const at::Tensor xp = xp_in.contiguous(), wp = wp_in.contiguous();
  const int64_t CW = words_of(g.Cin), KT = g.KH * g.KW;
  const at::Tensor wpop = at::empty({g.Cout * KT}, wp.options().dtype(at::kInt));
  const at::Tensor wpop_total = at::empty({g.Cout}, wp.options().dtype(at::kInt));
  auto stream = at::cuda::getCurrentCUDAStream();
  weight_popc_kernel<<<(g.Cout + 127) / 128, 128, 0, stream>>>(reinterpret_cast<const uint64_t*>(wp.data_ptr<int64_t>()),
                                                               g.Cout, KT, CW, wpop.data_ptr<int>(),
                                                               wpop_total.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  ConvArgs a;
  a.x = reinterpret_cast<const uint64_t*>(xp.data_ptr<int64_t>());
  a.w = reinterpret_cast<const uint64_t*>(wp.data_ptr<int64_t>());
  a.pc = pc.data_ptr<int>();
  a.wpop = wpop.data_ptr<int>();
  a.wpop_total = wpop_total.data_ptr<int>();
  a.alpha = alpha.defined() ? alpha.data_ptr() : nullptr;
  a.bias = bias.defined() ? bias.data_ptr() : nullptr;
  a.bn_scale = bns.defined() ? bns.data_ptr() : nullptr;
  a.bn_shift = bnt.defined() ? bnt.data_ptr() : nullptr;
  a.out = out.data_ptr();
  a.N = g.N, a.Cin = g.Cin, a.H = g.H, a.W = g.W, a.Cout = g.Cout, a.KH = g.KH, a.KW = g.KW;
  a.sh = g.sh, a.sw = g.sw, a.ph = g.ph, a.pw = g.pw, a.dh = g.dh, a.dw = g.dw, a.Ho = g.Ho, a.Wo = g.Wo;
  a.CW = static_cast<int>(CW);
  a.KC = static_cast<int>((CW + 3) / 4);
  a.kflat = kflat_order();
  a.pad_value = static_cast<int>(pad_value);
  a.nhwc = nhwc;
  const int64_t M = g.N * g.Ho * g.Wo;
  TORCH_CHECK_TYPE(out_dtype == at::kFloat || out_dtype == at::kHalf || out_dtype == at::kBFloat16 ||
                       out_dtype == at::kDouble,
                   kOp, ": unsupported output dtype ", out_dtype);
  // gridDim.y is limited to 65535: more output channels than 65535 * BN take several launches.
  constexpr int64_t kMaxGridY = 65535;
  for (int64_t base = 0; base < g.Cout; base += kMaxGridY * BN) {
    a.n_base = static_cast<int>(base);
    const int64_t ny = std::min<int64_t>((g.Cout - base + BN - 1) / BN, kMaxGridY);
    const dim3 grid(static_cast<unsigned>((M + BM - 1) / BM), static_cast<unsigned>(ny));
    switch (out_dtype) {
      case at::kFloat:
        xnor_gemm_kernel<float, float><<<grid, THREADS, 0, stream>>>(a);
        break;
      case at::kHalf:
        xnor_gemm_kernel<at::Half, float><<<grid, THREADS, 0, stream>>>(a);
        break;
      case at::kBFloat16:
        xnor_gemm_kernel<at::BFloat16, float><<<grid, THREADS, 0, stream>>>(a);
        break;
      default:
        xnor_gemm_kernel<double, double><<<grid, THREADS, 0, stream>>>(a);
        break;
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out;
}

at::Tensor binarize_pack_cuda(const at::Tensor& x) { return pack_impl(x, nullptr, "x"); }

at::Tensor xnor_conv2d_cuda(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool scale,
                            int64_t pad_value) {
  TORCH_CHECK_VALUE(x.dim() == 4, kOp, ": x must be (N, Cin, H, W), got shape ", x.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4, kOp, ": weight must be (Cout, Cin, KH, KW), got shape ", weight.sizes());
  TORCH_CHECK_VALUE(x.size(1) == weight.size(1), kOp, ": x has ", x.size(1), " channels but weight expects ",
                    weight.size(1), " (groups != 1 is not supported)");
  check_float(x, "x");
  check_float(weight, "weight");
  check_x_cuda(x);
  check_device(weight, x, "weight");
  if (bias.has_value()) check_device(*bias, x, "bias");
  const Geometry g = geometry(x.size(0), x.size(1), x.size(2), x.size(3), weight.size(0), weight.size(2),
                              weight.size(3), stride, padding, dilation);
  const at::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor alpha;
  if (scale) alpha = weight.contiguous().to(acc).abs().mean({1, 2, 3});
  at::Tensor pc;
  const at::Tensor xp = pack_impl(x, &pc, "x");
  const at::Tensor wp = pack_impl(weight, nullptr, "weight");
  return conv_packed_impl(xp, pc, wp, alpha, bias.has_value() ? *bias : at::Tensor(), at::Tensor(), at::Tensor(), g,
                          pad_value, x.scalar_type(), is_channels_last(x));
}

at::Tensor xnor_conv2d_packed_cuda(const at::Tensor& x, const at::Tensor& weight_packed,
                                   const c10::optional<at::Tensor>& alpha, const c10::optional<at::Tensor>& bias,
                                   int64_t in_channels, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, int64_t pad_value,
                                   const c10::optional<at::Tensor>& bn_scale, const c10::optional<at::Tensor>& bn_shift,
                                   c10::optional<at::ScalarType> out_dtype_opt, bool channels_last) {
  TORCH_CHECK_VALUE(in_channels >= 1, kOp, ": in_channels must be >= 1, got ", in_channels);
  const int64_t CW = words_of(in_channels);
  TORCH_CHECK_TYPE(weight_packed.scalar_type() == at::kLong, kOp, ": weight_packed must be int64, got ",
                   weight_packed.scalar_type());
  TORCH_CHECK_VALUE(weight_packed.dim() == 4 && weight_packed.size(3) == CW, kOp,
                    ": weight_packed must be (Cout, KH, KW, ", CW, ") for in_channels=", in_channels, ", got shape ",
                    weight_packed.sizes());
  check_x_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor xp, pc;
  at::ScalarType out_dtype;
  bool nhwc = channels_last;
  int64_t N, H, W;
  if (x.scalar_type() == at::kLong) {
    TORCH_CHECK_VALUE(x.dim() == 4 && x.size(3) == CW, kOp, ": packed x must be (N, H, W, ", CW,
                      ") int64 words for in_channels=", in_channels, ", got shape ", x.sizes());
    xp = x.contiguous();
    N = x.size(0), H = x.size(1), W = x.size(2);
    pc = row_popc(xp, N * H * W, CW);
    out_dtype = at::kFloat;
  } else {
    TORCH_CHECK_VALUE(x.dim() == 4 && x.size(1) == in_channels, kOp, ": x must be (N, ", in_channels,
                      ", H, W), got shape ", x.sizes());
    xp = pack_impl(x, &pc, "x");
    N = x.size(0), H = x.size(2), W = x.size(3);
    out_dtype = x.scalar_type();
    nhwc = nhwc || is_channels_last(x);
  }
  if (out_dtype_opt.has_value()) {
    out_dtype = *out_dtype_opt;
    TORCH_CHECK_TYPE(out_dtype == at::kFloat || out_dtype == at::kHalf || out_dtype == at::kBFloat16 ||
                         out_dtype == at::kDouble,
                     kOp, ": out_dtype must be a float dtype, got ", out_dtype);
  }
  const Geometry g = geometry(N, in_channels, H, W, weight_packed.size(0), weight_packed.size(1),
                              weight_packed.size(2), stride, padding, dilation);
  const auto opt = [](const c10::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); };
  return conv_packed_impl(xp, pc, weight_packed, opt(alpha), opt(bias), opt(bn_scale), opt(bn_shift), g, pad_value,
                          out_dtype, nhwc);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpose, CUDA, m) {
  m.impl("binarize_pack", &binarize_pack_cuda);
  m.impl("xnor_conv2d", &xnor_conv2d_cuda);
  m.impl("xnor_conv2d_packed", &xnor_conv2d_packed_cuda);
}

}  // namespace fastpose
