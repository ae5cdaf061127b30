// fastpose::affine_relu on the CPU: relu(x * scale + shift) per channel, optionally 2x2 average-pooled,
// one read of x and one write of the (pooled) output. The packed HPM path's projected shortcut input:
// the three ATen passes it replaces (mul into a new tensor, add_, relu_) and the pool read and wrote the
// activation four times. Memory-bound; the channel loop vectorises.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

// Bit for bit the separate ATen multiply and add: GCC contracts a * b + c into a fused multiply-add in C++
// even across statements wherever the target has FMA (not baseline x86-64, but e.g. aarch64); off here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace fastpose {
namespace {

const char* kOp = "affine_relu";

// relu as ATen's: NaN stays NaN (v < 0 is false for it).
template <class T>
inline T relu(T v) {
  return v < T(0) ? T(0) : v;
}

template <class T>
inline T affine(T x, T s, T t) {
  const T v = x * s;  // two roundings (fp-contract off above)
  return relu(v + t);
}

// n consecutive elements of channels-last rows (channel = index % C): s and t are read cyclically.
template <class T>
void pixel(const T* __restrict a, const T* __restrict s, const T* __restrict t, T* __restrict dst, int64_t n,
           int64_t C) {
  for (int64_t i = 0; i < n; i += C)
    for (int64_t c = 0; c < C; ++c) dst[i + c] = affine(a[i + c], s[c], t[c]);
}

// The 2x2 average of four affine rows (already relu-ed), in avg_pool2d's order.
template <class T>
void pool4(const T* __restrict a, const T* __restrict b, const T* __restrict c0, const T* __restrict d,
           T* __restrict dst, int64_t C) {
  for (int64_t c = 0; c < C; ++c) dst[c] = (((T(0) + a[c]) + b[c]) + c0[c] + d[c]) / T(4);
}

template <class T>
void run_channels_last(const T* x, const T* s, const T* t, T* y, int64_t N, int64_t C, int64_t H, int64_t W,
                       bool pool) {
  const int64_t Ho = pool ? H / 2 : H, Wo = pool ? W / 2 : W;
  at::parallel_for(0, N * Ho, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, Wo * C)), [&](int64_t b, int64_t e) {
    std::vector<T> buf;
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / Ho, ho = r % Ho;
      T* dst = y + r * Wo * C;
      if (!pool) {
        const T* src = x + (n * H + ho) * W * C;
        pixel(src, s, t, dst, W * C, C);
        continue;
      }
      // The two input rows through the affine map first (one branch-free vector loop), then the pool.
      const T* r0 = x + (n * H + 2 * ho) * W * C;
      const int64_t span = 2 * Wo * C;  // an odd last column is not read
      buf.resize(static_cast<size_t>(2 * span));
      pixel(r0, s, t, buf.data(), span, C);
      pixel(r0 + W * C, s, t, buf.data() + span, span, C);
      for (int64_t wo = 0; wo < Wo; ++wo) {
        const T* a = buf.data() + 2 * wo * C;
        const T* c0 = a + span;
        pool4(a, a + C, c0, c0 + C, dst + wo * C, C);
      }
    }
  });
}

// Any strides (NCHW and the rest): one (n, c) plane per task.
template <class T>
void run_strided(const at::Tensor& xt, const T* s, const T* t, const at::Tensor& yt, bool pool) {
  const T* x = xt.data_ptr<T>();
  T* y = yt.data_ptr<T>();
  const int64_t N = xt.size(0), C = xt.size(1), Ho = yt.size(2), Wo = yt.size(3);
  const int64_t xn = xt.stride(0), xc = xt.stride(1), xh = xt.stride(2), xw = xt.stride(3);
  const int64_t yn = yt.stride(0), yc = yt.stride(1), yh = yt.stride(2), yw = yt.stride(3);
  at::parallel_for(0, N * C, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, Ho * Wo)), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t n = p / C, c = p % C;
      const T* src = x + n * xn + c * xc;
      T* dst = y + n * yn + c * yc;
      for (int64_t h = 0; h < Ho; ++h)
        for (int64_t w = 0; w < Wo; ++w) {
          if (!pool) {
            dst[h * yh + w * yw] = affine(src[h * xh + w * xw], s[c], t[c]);
            continue;
          }
          const T* q = src + 2 * h * xh + 2 * w * xw;
          T sum = T(0) + affine(q[0], s[c], t[c]);
          sum += affine(q[xw], s[c], t[c]);
          sum += affine(q[xh], s[c], t[c]);
          sum += affine(q[xh + xw], s[c], t[c]);
          dst[h * yh + w * yw] = sum / T(4);
        }
    }
  });
}

at::Tensor affine_relu_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift, bool pool) {
  TORCH_CHECK_VALUE(x.dim() == 4, kOp, ": x must be (N, C, H, W), got shape ", x.sizes());
  const at::ScalarType dt = x.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble, kOp, ": x must be float32 or float64, got ", dt);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  for (const at::Tensor* v : {&scale, &shift}) {
    TORCH_CHECK_VALUE(v->dim() == 1 && v->size(0) == C, kOp, ": scale / shift must be (", C, "), got shape ",
                      v->sizes());
    TORCH_CHECK_TYPE(v->scalar_type() == dt, kOp, ": scale / shift must be ", dt, " like x, got ", v->scalar_type());
  }
  TORCH_CHECK_VALUE(!pool || (H >= 2 && W >= 2), kOp, ": pool needs H and W >= 2, got x of shape ", x.sizes());
  const int64_t Ho = pool ? H / 2 : H, Wo = pool ? W / 2 : W;
  const bool cl = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  at::Tensor y = at::empty({N, C, Ho, Wo},
                           x.options().memory_format(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;
  const at::Tensor s = scale.contiguous(), t = shift.contiguous();
  AT_DISPATCH_FLOATING_TYPES(dt, "affine_relu", [&] {
    if (cl)
      run_channels_last<scalar_t>(x.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(),
                                  y.data_ptr<scalar_t>(), N, C, H, W, pool);
    else
      run_strided<scalar_t>(x, s.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), y, pool);
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpose, CPU, m) { m.impl("affine_relu", &affine_relu_cpu); }

}  // namespace fastpose
