// CUDA kernels of the softmax + DSNT ops. One thread block per map: the forward reads each logit
// once (online max/sum per thread, merged across the block); the backward recomputes the
// probabilities from the saved per-map max and sum, so nothing of size B*J*H*W is saved.
// The optional KL/JS regulariser takes a second sweep over the map, which is then in L2.
// Any strides: channels_last maps are read in place (a block's loads stride over J, but the J blocks
// of one image run side by side and share the L2 lines), never copied to contiguous first.
// NaN propagates like torch.softmax: one NaN logit makes its map's running max NaN, and every merge
// keeps a NaN max, so the map's outputs are NaN.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>

namespace fastpose {
namespace {

constexpr int kThreads = 256;
constexpr double kEps = 1e-24;

template <class T>
__device__ __forceinline__ float to_acc(T v) {
  return static_cast<float>(v);
}
__device__ __forceinline__ double to_acc(double v) { return v; }
template <>
__device__ __forceinline__ float to_acc<at::Half>(at::Half v) {
  return __half2float(static_cast<__half>(v));
}
template <>
__device__ __forceinline__ float to_acc<at::BFloat16>(at::BFloat16 v) {
  return static_cast<float>(v);
}

template <class A>
__device__ __forceinline__ A fexp(A x) {
  return exp(x);
}
template <>
__device__ __forceinline__ float fexp<float>(float x) {
  return __expf(x);
}
template <class A>
__device__ __forceinline__ A flog(A x) {
  return log(x);
}
template <>
__device__ __forceinline__ float flog<float>(float x) {
  return __logf(x);
}

// 16-byte vector access (LDG.128 / STG.128): VEC = 16 / sizeof(T) elements.
template <class T, class A>
__device__ __forceinline__ void load16(const T* p, A* out) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int k = 0; k < static_cast<int>(16 / sizeof(T)); ++k) out[k] = to_acc(v[k]);
}
template <class T, class A>
__device__ __forceinline__ void store16(T* p, const A* in) {
  uint4 raw;
  T* v = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int k = 0; k < static_cast<int>(16 / sizeof(T)); ++k) v[k] = static_cast<T>(in[k]);
  *reinterpret_cast<uint4*>(p) = raw;
}

struct MapShape {
  int64_t J, H, W, sb, sj, sh, sw;
  // Rows of W adjacent elements, one after the other: the map is one dense run of H * W.
  __device__ __forceinline__ bool dense() const { return sw == 1 && sh == W; }
};

// max that keeps a NaN from either side (a plain a > b ? a : b drops a NaN a).
template <class A>
__device__ __forceinline__ A nan_max(A a, A b) {
  return (isnan(a) || a > b) ? a : b;
}

// Online-softmax state of a part of a map: running max, sum of exp(l - max), and the two
// exp-weighted coordinate sums.
template <class A>
struct Online {
  A m, s, sx, sy;
  __device__ __forceinline__ void add(A l, A x, A y) {
    if (l > m || isnan(l)) {
      const A c = fexp(m - l);  // m = -inf gives 0; l = NaN gives NaN (and m becomes NaN)
      s *= c;
      sx *= c;
      sy *= c;
      m = l;
    }
    const A e = fexp(l - m);  // l = -inf gives 0 (m finite here) ; m = -inf only if l = -inf too
    if (l != -INFINITY) {
      s += e;
      sx += e * x;
      sy += e * y;
    }
  }
  // VEC logits of one row at once: one rescale check per vector.
  template <int VEC>
  __device__ __forceinline__ void add_vec(const A* l, A x0, A dx, A y) {
    A lm = l[0];
#pragma unroll
    for (int k = 1; k < VEC; ++k) lm = nan_max(lm, l[k]);
    if (lm > m || isnan(lm)) {
      const A c = m == -INFINITY ? A(0) : fexp(m - lm);
      s *= c;
      sx *= c;
      sy *= c;
      m = lm;
    }
    if (m == -INFINITY) return;  // everything so far is masked (a NaN made m NaN above)
    A rs = 0, rx = 0;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const A e = fexp(l[k] - m);
      rs += e;
      rx += e * (x0 + A(k) * dx);
    }
    s += rs;
    sx += rx;
    sy += rs * y;
  }
  __device__ __forceinline__ void merge(const Online& o) {
    const A M = nan_max(m, o.m);
    if (M == -INFINITY) return;
    const A a = m == -INFINITY ? A(0) : fexp(m - M);
    const A b = o.m == -INFINITY ? A(0) : fexp(o.m - M);
    s = s * a + o.s * b;
    sx = sx * a + o.sx * b;
    sy = sy * a + o.sy * b;
    m = M;
  }
};

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class A>
__device__ A block_sum(A v, A* smem) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) smem[wid] = v;
  __syncthreads();
  A r = 0;
  for (int i = 0; i < kThreads / 32; ++i) r += smem[i];
  return r;
}

template <class A>
__device__ Online<A> block_online(Online<A> st, A* smem) {
  for (int o = 16; o > 0; o >>= 1) {
    Online<A> other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o),
                    __shfl_xor_sync(0xffffffffu, st.sx, o), __shfl_xor_sync(0xffffffffu, st.sy, o)};
    st.merge(other);
  }
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  if (lane == 0) {
    smem[4 * wid] = st.m;
    smem[4 * wid + 1] = st.s;
    smem[4 * wid + 2] = st.sx;
    smem[4 * wid + 3] = st.sy;
  }
  __syncthreads();
  Online<A> r{-INFINITY, 0, 0, 0};
  for (int i = 0; i < kThreads / 32; ++i) r.merge(Online<A>{smem[4 * i], smem[4 * i + 1], smem[4 * i + 2], smem[4 * i + 3]});
  __syncthreads();
  return r;
}

// The target Gaussian (dsntnn's make_gauss), separable: q(h, w) = qx[w] * qy[h], qx carrying the
// normaliser. Written by the block into shared memory.
template <class A>
__device__ void target_gaussian(const A* mu, double sigma, int64_t H, int64_t W, A* qx, A* qy, A* red) {
  const A mx = mu[0], my = mu[1];
  const A kx = A(-0.5) / ((A(2) * A(sigma) / A(W)) * (A(2) * A(sigma) / A(W)));
  const A ky = A(-0.5) / ((A(2) * A(sigma) / A(H)) * (A(2) * A(sigma) / A(H)));
  A zx = 0, zy = 0;
  for (int64_t i = threadIdx.x; i < W; i += kThreads) {
    const A d = (A(2) * i + A(1)) / A(W) - A(1) - mx;
    const A g = exp(kx * d * d);
    qx[i] = g;
    zx += g;
  }
  for (int64_t i = threadIdx.x; i < H; i += kThreads) {
    const A d = (A(2) * i + A(1)) / A(H) - A(1) - my;
    const A g = exp(ky * d * d);
    qy[i] = g;
    zy += g;
  }
  zx = block_sum(zx, red);
  zy = block_sum(zy, red);
  const A inv = A(1) / (zx * zy + A(kEps));
  __syncthreads();
  for (int64_t i = threadIdx.x; i < W; i += kThreads) qx[i] *= inv;
  __syncthreads();
}

template <class A>
__device__ __forceinline__ A div_term(A p, A q, bool js) {
  const A e = A(kEps);
  if (js) {
    const A m = A(0.5) * (p + q);
    const A lm = flog(m + e);
    return A(0.5) * (p * (flog(p + e) - lm) + q * (flog(q + e) - lm));
  }
  return p * (flog(p + e) - flog(q + e));
}
template <class A>
__device__ __forceinline__ A div_grad(A p, A q, bool js) {
  const A e = A(kEps);
  const A pe = p + e;
  if (js) {
    const A me = A(0.5) * (p + q) + e;
    return A(0.5) * (flog(pe / me) + p / pe - (me - e) / me);
  }
  return flog(pe) - flog(q + e) + p / pe;
}

template <class T>
__device__ __forceinline__ const T* map_ptr(const T* x, const MapShape& s, int64_t m) {
  const int64_t b = m / s.J, j = m - (m / s.J) * s.J;
  return x + b * s.sb + j * s.sj;
}

// reg: 0 none, 1 KL, 2 JS.
template <class T, class A>
__global__ void __launch_bounds__(kThreads) softmax_dsnt_fwd_kernel(const T* __restrict__ x, MapShape s,
                                                                    A* __restrict__ stats, T* __restrict__ coords,
                                                                    T* __restrict__ div, const A* __restrict__ target,
                                                                    double sigma, int reg, int* __restrict__ bad) {
  // bad: counts maps of only -inf, or nullptr (the default: such maps give NaN, no host sync).
  extern __shared__ unsigned char smem_raw[];
  A* red = reinterpret_cast<A*>(smem_raw);  // 4 * warps
  const int64_t m = blockIdx.x;
  const T* base = map_ptr(x, s, m);
  const int64_t H = s.H, W = s.W, HW = H * W;
  const int W32 = static_cast<int>(W), HW32 = static_cast<int>(HW);
  const A ix = A(2) / A(W), iy = A(2) / A(H);
  Online<A> st{-INFINITY, 0, 0, 0};
  constexpr int VEC = 16 / sizeof(T);
  if (s.dense() && W % VEC == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0) {
    // Contiguous rows of whole vectors: 16-byte loads, index math once per vector.
    const int WV = W32 / VEC, NV = HW32 / VEC;
    for (int v = threadIdx.x; v < NV; v += kThreads) {
      const int h = v / WV, w0 = (v - h * WV) * VEC;
      A l[VEC];
      load16(base + static_cast<int64_t>(v) * VEC, l);
      st.template add_vec<VEC>(l, (A(w0) + A(0.5)) * ix - A(1), ix, (A(h) + A(0.5)) * iy - A(1));
    }
  } else if (s.dense()) {
    for (int e = threadIdx.x; e < HW32; e += kThreads) {
      const int h = e / W32, w = e - h * W32;  // 32-bit: 64-bit division is slow
      st.add(to_acc(__ldg(reinterpret_cast<const T*>(base + e))), (A(w) + A(0.5)) * ix - A(1),
             (A(h) + A(0.5)) * iy - A(1));
    }
  } else {
    for (int e = threadIdx.x; e < HW32; e += kThreads) {
      const int h = e / W32, w = e - h * W32;  // 32-bit: 64-bit division is slow
      st.add(to_acc(base[h * s.sh + w * s.sw]), (A(w) + A(0.5)) * ix - A(1), (A(h) + A(0.5)) * iy - A(1));
    }
  }
  const Online<A> r = block_online(st, red);
  const bool masked = r.m == -INFINITY;
  if (threadIdx.x == 0) {
    A* o = stats + 4 * m;
    if (masked) {
      if (bad) atomicAdd(bad, 1);
      o[0] = o[1] = o[2] = o[3] = NAN;
      coords[2 * m] = coords[2 * m + 1] = static_cast<T>(NAN);
    } else {
      o[0] = r.m;
      o[1] = r.s;
      o[2] = r.sx / r.s;
      o[3] = r.sy / r.s;
      coords[2 * m] = static_cast<T>(r.sx / r.s);
      coords[2 * m + 1] = static_cast<T>(r.sy / r.s);
    }
  }
  if (reg == 0) return;
  if (masked) {
    if (threadIdx.x == 0) div[m] = static_cast<T>(NAN);
    return;
  }
  A* qx = red + 4 * (kThreads / 32);
  A* qy = qx + W;
  target_gaussian(target + 2 * m, sigma, H, W, qx, qy, red);
  const A inv_s = A(1) / r.s;
  A acc = 0;
  for (int e = threadIdx.x; e < HW32; e += kThreads) {
    const int h = e / W32, w = e - h * W32;
    const A p = fexp(to_acc(base[h * s.sh + w * s.sw]) - r.m) * inv_s;
    acc += div_term(p, qx[w] * qy[h], reg == 2);
  }
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) div[m] = static_cast<T>(acc);
}

template <class T, class A>
__global__ void __launch_bounds__(kThreads) softmax_dsnt_bwd_kernel(const T* __restrict__ x, MapShape s,
                                                                    const A* __restrict__ stats,
                                                                    const A* __restrict__ gcoords,
                                                                    const A* __restrict__ gdiv,
                                                                    const A* __restrict__ target, double sigma,
                                                                    int reg, T* __restrict__ out) {
  extern __shared__ unsigned char smem_raw[];
  A* red = reinterpret_cast<A*>(smem_raw);
  const int64_t m = blockIdx.x;
  const T* base = map_ptr(x, s, m);
  const int64_t H = s.H, W = s.W, HW = H * W;
  const int W32 = static_cast<int>(W), HW32 = static_cast<int>(HW);
  const A ix = A(2) / A(W), iy = A(2) / A(H);
  const A M = stats[4 * m], inv_s = A(1) / stats[4 * m + 1], cx = stats[4 * m + 2], cy = stats[4 * m + 3];
  const A gx = gcoords[2 * m], gy = gcoords[2 * m + 1];
  const A gd = reg ? gdiv[m] : A(0);
  const bool with_reg = reg != 0 && gd != A(0);
  A* qx = red + 4 * (kThreads / 32);
  A* qy = qx + W;
  A hbar = 0;
  if (with_reg) {
    target_gaussian(target + 2 * m, sigma, H, W, qx, qy, red);
    A acc = 0;
    for (int e = threadIdx.x; e < HW32; e += kThreads) {
      const int h = e / W32, w = e - h * W32;  // 32-bit: 64-bit division is slow
      const A p = fexp(to_acc(base[h * s.sh + w * s.sw]) - M) * inv_s;
      acc += p * div_grad(p, qx[w] * qy[h], reg == 2);
    }
    hbar = block_sum(acc, red);
  }
  T* o = out + m * HW;
  constexpr int VEC = 16 / sizeof(T);
  if (!with_reg && s.dense() && W % VEC == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0) {
    // grad = p * (gx (x - cx) + gy (y - cy)): 16-byte loads and stores (out rows are aligned too,
    // since H * W is a multiple of VEC).
    const int WV = W32 / VEC, NV = HW32 / VEC;
    for (int v = threadIdx.x; v < NV; v += kThreads) {
      const int h = v / WV, w0 = (v - h * WV) * VEC;
      A l[VEC];
      load16(base + static_cast<int64_t>(v) * VEC, l);
      const A ty = gy * ((A(h) + A(0.5)) * iy - A(1) - cy) - gx * cx;
#pragma unroll
      for (int k = 0; k < VEC; ++k)
        l[k] = fexp(l[k] - M) * inv_s * (gx * ((A(w0 + k) + A(0.5)) * ix - A(1)) + ty);
      store16(o + static_cast<int64_t>(v) * VEC, l);
    }
    return;
  }
  for (int e = threadIdx.x; e < HW32; e += kThreads) {
    const int h = e / W32, w = e - h * W32;
    const A p = fexp(to_acc(base[h * s.sh + w * s.sw]) - M) * inv_s;
    A t = gx * ((A(w) + A(0.5)) * ix - A(1) - cx) + gy * ((A(h) + A(0.5)) * iy - A(1) - cy);
    if (with_reg) t += gd * (div_grad(p, qx[w] * qy[h], reg == 2) - hbar);
    o[e] = static_cast<T>(p * t);
  }
}

void check_logits(const at::Tensor& logits) {
  TORCH_CHECK_VALUE(logits.dim() == 4, "softmax_dsnt: logits must be (B, J, H, W), got shape ", logits.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(logits.scalar_type()) && logits.scalar_type() != at::kFloat8_e4m3fn,
                   "softmax_dsnt: logits must be a floating dtype, got ", logits.scalar_type());
  TORCH_CHECK_VALUE(logits.size(2) >= 1 && logits.size(3) >= 1, "softmax_dsnt: logits needs H >= 1 and W >= 1");
}

// The strides of a size-1 axis are arbitrary: normalise them so that a map that is one dense run
// (W == 1 with unit row stride, H == 1 with unit element stride) takes the dense paths. The row
// stride is always stride(2), also when W == 1 (logits[..., :1], channels_last with W == 1).
MapShape shape_of(const at::Tensor& x) {
  const int64_t H = x.size(2), W = x.size(3);
  const int64_t sw = W == 1 ? 1 : x.stride(3);
  const int64_t sh = H == 1 ? W * sw : x.stride(2);
  return MapShape{x.size(1), H, W, x.stride(0), x.stride(1), sh, sw};
}

// FASTPOSE_CUDA_SYNC_CHECKS=1: raise on maps of only -inf as the CPU does, at one host sync per call.
bool sync_checks() {
  static const bool on = [] {
    const char* v = std::getenv("FASTPOSE_CUDA_SYNC_CHECKS");
    return v != nullptr && v[0] == '1';
  }();
  return on;
}

// A tensor of another device would be read through a foreign pointer (a fault, or silent garbage).
void check_device(const at::Tensor& t, const at::Tensor& logits, const char* what) {
  TORCH_CHECK_VALUE(t.device() == logits.device(), "softmax_dsnt: ", what, " must be on the logits' device ",
                    logits.device(), ", got ", t.device());
}

at::ScalarType acc_of(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

size_t smem_bytes(const at::Tensor& x, bool reg) {
  const size_t a = x.scalar_type() == at::kDouble ? 8 : 4;
  size_t n = 4 * (kThreads / 32) * a;
  if (reg) n += (x.size(2) + x.size(3)) * a;
  TORCH_CHECK_VALUE(n <= 48 * 1024, "softmax_dsnt: H + W too large for the CUDA regulariser (", x.size(2), " + ",
                    x.size(3), ")");
  return n;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_impl(const at::Tensor& logits_in, const at::Tensor* target_in,
                                                            double sigma, int64_t reg) {
  check_logits(logits_in);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor& x = logits_in;
  const int64_t B = x.size(0), J = x.size(1), n = B * J;
  const at::ScalarType acc = acc_of(x);
  at::Tensor stats = at::empty({B, J, 4}, x.options().dtype(acc));
  at::Tensor coords = at::empty({B, J, 2}, x.options());
  at::Tensor div = at::empty({reg ? B : 0, reg ? J : 0}, x.options());
  at::Tensor target;
  if (reg) {
    TORCH_CHECK_VALUE(target_in->dim() == 3 && target_in->size(0) == B && target_in->size(1) == J &&
                          target_in->size(2) == 2,
                      "softmax_dsnt: target must be (B, J, 2), got ", target_in->sizes());
    TORCH_CHECK_VALUE(reg == 1 || reg == 2, "softmax_dsnt: reg must be 1 (KL) or 2 (JS)");
    check_device(*target_in, x, "target");
    target = target_in->to(acc).contiguous();
  }
  if (n == 0) return {coords, div, stats};
  TORCH_CHECK_VALUE(x.size(2) * x.size(3) < (int64_t(1) << 31), "softmax_dsnt: a map must have < 2^31 positions");
  const size_t smem = smem_bytes(x, reg != 0);
  const MapShape s = shape_of(x);
  auto stream = c10::cuda::getCurrentCUDAStream();
  // Maps of only -inf come out NaN (coordinates, stats, divergence) without a host sync. With
  // FASTPOSE_CUDA_SYNC_CHECKS=1 they are counted (a memset, not a kernel: still one kernel launch)
  // and the count is read back, which a CUDA graph being captured cannot do.
  bool check = sync_checks();
  if (check) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    check = capture == cudaStreamCaptureStatusNone;
  }
  at::Tensor bad;
  if (check) {
    bad = at::empty({1}, x.options().dtype(at::kInt));
    C10_CUDA_CHECK(cudaMemsetAsync(bad.data_ptr<int>(), 0, sizeof(int), stream));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "softmax_dsnt_cuda", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    softmax_dsnt_fwd_kernel<scalar_t, A><<<n, kThreads, smem, stream>>>(
        x.data_ptr<scalar_t>(), s, stats.data_ptr<A>(), coords.data_ptr<scalar_t>(),
        reg ? div.data_ptr<scalar_t>() : nullptr, reg ? target.data_ptr<A>() : nullptr, sigma,
        static_cast<int>(reg), check ? bad.data_ptr<int>() : nullptr);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (check) {
    const int nbad = bad.item<int>();
    TORCH_CHECK_VALUE(nbad == 0, "softmax_dsnt: ", nbad,
                      " map(s) of logits have every entry -inf; each map needs at least one finite logit");
  }
  return {coords, div, stats};
}

std::tuple<at::Tensor, at::Tensor> softmax_dsnt_cuda(const at::Tensor& logits) {
  auto r = forward_impl(logits, nullptr, 1.0, 0);
  return {std::get<0>(r), std::get<2>(r)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> softmax_dsnt_reg_cuda(const at::Tensor& logits,
                                                                     const at::Tensor& target, double sigma,
                                                                     int64_t reg) {
  TORCH_CHECK_VALUE(sigma > 0, "softmax_dsnt: sigma must be > 0, got ", sigma);
  return forward_impl(logits, &target, sigma, reg);
}

at::Tensor backward_impl(const at::Tensor& grad_coords, const at::Tensor* grad_div, const at::Tensor& logits_in,
                         const at::Tensor* target_in, const at::Tensor& stats_in, double sigma, int64_t reg) {
  check_logits(logits_in);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor& x = logits_in;
  const int64_t B = x.size(0), J = x.size(1), n = B * J;
  const at::ScalarType acc = acc_of(x);
  TORCH_CHECK_VALUE(grad_coords.dim() == 3 && grad_coords.size(0) == B && grad_coords.size(1) == J &&
                        grad_coords.size(2) == 2,
                    "softmax_dsnt_backward: grad_coords must be (B, J, 2), got ", grad_coords.sizes());
  check_device(grad_coords, x, "grad_coords");
  check_device(stats_in, x, "stats");
  if (reg) {
    check_device(*grad_div, x, "grad_div");
    check_device(*target_in, x, "target");
  }
  const at::Tensor gc = grad_coords.to(acc).contiguous();
  const at::Tensor st = stats_in.to(acc).contiguous();
  at::Tensor gd, target;
  if (reg) {
    gd = grad_div->to(acc).contiguous();
    target = target_in->to(acc).contiguous();
  }
  at::Tensor out = at::empty({B, J, x.size(2), x.size(3)}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (n == 0) return out;
  const size_t smem = smem_bytes(x, reg != 0);
  const MapShape s = shape_of(x);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "softmax_dsnt_backward_cuda", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    softmax_dsnt_bwd_kernel<scalar_t, A><<<n, kThreads, smem, stream>>>(
        x.data_ptr<scalar_t>(), s, st.data_ptr<A>(), gc.data_ptr<A>(), reg ? gd.data_ptr<A>() : nullptr,
        reg ? target.data_ptr<A>() : nullptr, sigma, static_cast<int>(reg), out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor softmax_dsnt_backward_cuda(const at::Tensor& grad_coords, const at::Tensor& logits,
                                      const at::Tensor& stats) {
  return backward_impl(grad_coords, nullptr, logits, nullptr, stats, 1.0, 0);
}

at::Tensor softmax_dsnt_reg_backward_cuda(const at::Tensor& grad_coords, const at::Tensor& grad_div,
                                          const at::Tensor& logits, const at::Tensor& target, const at::Tensor& stats,
                                          double sigma, int64_t reg) {
  return backward_impl(grad_coords, &grad_div, logits, &target, stats, sigma, reg);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpose, CUDA, m) {
  m.impl("softmax_dsnt", &softmax_dsnt_cuda);
  m.impl("softmax_dsnt_backward", &softmax_dsnt_backward_cuda);
  m.impl("softmax_dsnt_reg", &softmax_dsnt_reg_cuda);
  m.impl("softmax_dsnt_reg_backward", &softmax_dsnt_reg_backward_cuda);
}

}  // namespace fastpose
