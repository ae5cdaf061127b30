#include <type_traits>
#include <vector>

#include "core/merge_util.h"
#include "core/upsample_add.h"

namespace fastpose {
namespace core {

using merge::Storage;

int64_t hr_fuse_rows_per_unit(const MergeInput* xs, int n_inputs) {
  int64_t L = 1;
  for (int j = 1; j < n_inputs; ++j) L = merge::lcm(L, xs[j].sh);
  return L;
}

int64_t hr_fuse_units(const MergeShape& s, const MergeInput* xs, int n_inputs) {
  return (s.nhwc ? s.N : s.N * s.C) * (s.H / hr_fuse_rows_per_unit(xs, n_inputs));
}

namespace {

template <class A>
inline A relu_if(A v, bool relu) {
  return relu && !(v > A(0)) ? (v != v ? v : A(0)) : v;  // NaN stays NaN, as torch.relu
}

template <class T>
void forward_impl(const MergeShape& s, const MergeInput* xs, int n, bool relu, T* out, int64_t begin, int64_t end) {
  using S = Storage<T>;
  using A = typename S::A;
  const int64_t H = s.H, W = s.W, C = s.C, L = hr_fuse_rows_per_unit(xs, n), G = H / L;
  if (!s.nhwc) {
    // Per output row: x0's row plus each low input's row, expanded once and reused for the s output
    // rows that read it; then the ReLU, one write.
    std::vector<A> acc(W), ex(static_cast<size_t>(W) * n);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t plane = u / G, g = u % G;
      std::vector<int64_t> cached(n, -1);
      for (int64_t h = g * L; h < (g + 1) * L; ++h) {
        const T* x0 = static_cast<const T*>(xs[0].data) + (plane * H + h) * W;
        A* ap = acc.data();
        for (int64_t w = 0; w < W; ++w) ap[w] = S::ld(x0[w]);
        for (int j = 1; j < n; ++j) {
          const MergeInput& x = xs[j];
          A* ej = ex.data() + j * W;
          const int64_t hl = h / x.sh;
          if (cached[j] != hl) {
            const T* lrow = static_cast<const T*>(x.data) + (plane * x.H + hl) * x.W;
            for (int64_t k = 0; k < x.W; ++k) {
              const A v = S::ld(lrow[k]);
              for (int64_t b = 0; b < x.sw; ++b) ej[k * x.sw + b] = v;
            }
            cached[j] = hl;
          }
          for (int64_t w = 0; w < W; ++w) ap[w] += ej[w];
        }
        T* orow = out + (plane * H + h) * W;
        if (relu) {
          for (int64_t w = 0; w < W; ++w) orow[w] = S::st(ap[w] > A(0) || ap[w] != ap[w] ? ap[w] : A(0));
        } else {
          for (int64_t w = 0; w < W; ++w) orow[w] = S::st(ap[w]);
        }
      }
    }
    return;
  }
  std::vector<A> acc(C);
  for (int64_t u = begin; u < end; ++u) {
    const int64_t nb = u / G, g = u % G;
    for (int64_t h = g * L; h < (g + 1) * L; ++h) {
      for (int64_t w = 0; w < W; ++w) {
        const int64_t off = ((nb * H + h) * W + w) * C;
        const T* x0 = static_cast<const T*>(xs[0].data) + off;
        A* ap = acc.data();
        for (int64_t c = 0; c < C; ++c) ap[c] = S::ld(x0[c]);
        for (int j = 1; j < n; ++j) {
          const MergeInput& x = xs[j];
          const T* lp = static_cast<const T*>(x.data) + ((nb * x.H + h / x.sh) * x.W + w / x.sw) * C;
          for (int64_t c = 0; c < C; ++c) ap[c] += S::ld(lp[c]);
        }
        T* op = out + off;
        for (int64_t c = 0; c < C; ++c) op[c] = S::st(relu_if(ap[c], relu));
      }
    }
  }
}

template <class T>
void backward_impl(const MergeShape& s, const MergeInput* xs, int n, bool relu, const T* grad, const T* out,
                   void* const* grads, int64_t begin, int64_t end) {
  using S = Storage<T>;
  using A = typename S::A;
  const int64_t H = s.H, W = s.W, C = s.C, L = hr_fuse_rows_per_unit(xs, n), G = H / L;
  const int64_t inner = s.nhwc ? C : 1;
  // Per unit, the block sums of each low input's rows accumulate in float scratch (rows of the
  // unit only), then are stored once.
  std::vector<int64_t> base(n, 0);
  int64_t total = 0;
  for (int j = 1; j < n; ++j) {
    base[j] = total;
    total += (L / xs[j].sh) * xs[j].W * inner;
  }
  std::vector<A> acc(total > 0 ? total : 1), gp(W * inner);
  T* g0 = static_cast<T*>(grads[0]);
  for (int64_t u = begin; u < end; ++u) {
    const int64_t outer = u / G, g = u % G;  // outer: plane (NCHW) or image (NHWC)
    for (int64_t k = 0; k < total; ++k) acc[k] = 0;
    for (int64_t h = g * L; h < (g + 1) * L; ++h) {
      const int64_t off = (outer * H + h) * W * inner;
      const T* gr = grad + off;
      A* gpp = gp.data();
      if (relu) {
        const T* o = out + off;
        for (int64_t k = 0; k < W * inner; ++k) gpp[k] = S::ld(o[k]) > A(0) ? S::ld(gr[k]) : A(0);
      } else {
        for (int64_t k = 0; k < W * inner; ++k) gpp[k] = S::ld(gr[k]);
      }
      T* g0row = g0 + off;
      for (int64_t k = 0; k < W * inner; ++k) g0row[k] = S::st(gpp[k]);
      for (int j = 1; j < n; ++j) {
        const MergeInput& x = xs[j];
        A* arow = acc.data() + base[j] + ((h - g * L) / x.sh) * x.W * inner;
        if (inner == 1) {
          for (int64_t w = 0; w < W; ++w) arow[w / x.sw] += gpp[w];
        } else {
          for (int64_t w = 0; w < W; ++w) {
            A* ap = arow + (w / x.sw) * inner;
            const A* src = gpp + w * inner;
            for (int64_t c = 0; c < inner; ++c) ap[c] += src[c];
          }
        }
      }
    }
    for (int j = 1; j < n; ++j) {
      const MergeInput& x = xs[j];
      const int64_t rows = L / x.sh, len = rows * x.W * inner;
      T* dst = static_cast<T*>(grads[j]) + (outer * x.H + g * rows) * x.W * inner;
      const A* src = acc.data() + base[j];
      for (int64_t k = 0; k < len; ++k) dst[k] = S::st(src[k]);
    }
  }
}

}  // namespace

void hr_fuse_forward(const MergeShape& s, const MergeInput* xs, int n_inputs, bool relu, void* out, int64_t begin,
                     int64_t end) {
  merge::dispatch(s.type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    forward_impl<T>(s, xs, n_inputs, relu, static_cast<T*>(out), begin, end);
  });
}

void hr_fuse_backward(const MergeShape& s, const MergeInput* xs, int n_inputs, bool relu, const void* grad,
                      const void* out, void* const* grads, int64_t begin, int64_t end) {
  merge::dispatch(s.type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    backward_impl<T>(s, xs, n_inputs, relu, static_cast<const T*>(grad), static_cast<const T*>(out), grads, begin,
                     end);
  });
}

}  // namespace core
}  // namespace fastpose
