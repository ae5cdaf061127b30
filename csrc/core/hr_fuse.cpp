#include <type_traits>
#include <vector>

#include "core/merge_util.h"
#include "core/upsample_add.h"

namespace fastpose {
namespace core {

using merge::Rows;

int64_t hr_fuse_rows_per_unit(const MergeInput* xs, int n_inputs) {
  int64_t L = 1;
  for (int j = 1; j < n_inputs; ++j) L = merge::lcm(L, xs[j].sh);
  // Whole blocks of every input, grown (by a factor dividing the rows) to ~1k elements per unit
  // so that per-unit work amortises.
  const int64_t H = xs[0].H, W = xs[0].W;
  int64_t best = L;
  for (int64_t k = 1; L * k <= H && L * k * W <= 1024; ++k)
    if ((H / L) % k == 0) best = L * k;
  return best;
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
  using R = Rows<T>;
  using A = typename R::A;
  const int64_t H = s.H, W = s.W, C = s.C, L = hr_fuse_rows_per_unit(xs, n), G = H / L;
  if (!s.nhwc) {
    // A unit's L rows of a plane are contiguous: x0 is copied and the result stored as one flat run;
    // each low row is expanded once and added to the sh output rows that read it.
    std::vector<A> acc(L * W), ex(W), buf(L * W);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t plane = u / G, g = u % G;
      const int64_t off = (plane * H + g * L) * W;
      const A* x0 = R::load(static_cast<const T*>(xs[0].data) + off, L * W, buf.data(), s);
      A* ap = acc.data();
      for (int64_t k = 0; k < L * W; ++k) ap[k] = x0[k];
      for (int j = 1; j < n; ++j) {
        const MergeInput& x = xs[j];
        const int64_t rows = L / x.sh;
        for (int64_t r = 0; r < rows; ++r) {
          const T* lrow = static_cast<const T*>(x.data) + (plane * x.H + g * rows + r) * x.W;
          merge::expand_row(R::load(lrow, x.W, buf.data(), s), x.W, x.sw, ex.data());
          const A* e = ex.data();
          for (int64_t a2 = 0; a2 < x.sh; ++a2) {
            A* arow = ap + (r * x.sh + a2) * W;
            for (int64_t w = 0; w < W; ++w) arow[w] += e[w];
          }
        }
      }
      A* o = R::out(out + off, buf.data());
      if (relu) {
        for (int64_t k = 0; k < L * W; ++k) o[k] = ap[k] > A(0) || ap[k] != ap[k] ? ap[k] : A(0);
      } else {
        for (int64_t k = 0; k < L * W; ++k) o[k] = ap[k];
      }
      R::commit(o, out + off, L * W, s);
    }
    return;
  }
  std::vector<A> acc(C), buf(C);
  for (int64_t u = begin; u < end; ++u) {
    const int64_t nb = u / G, g = u % G;
    for (int64_t h = g * L; h < (g + 1) * L; ++h) {
      for (int64_t w = 0; w < W; ++w) {
        const int64_t off = ((nb * H + h) * W + w) * C;
        const A* x0 = R::load(static_cast<const T*>(xs[0].data) + off, C, buf.data(), s);
        A* ap = acc.data();
        for (int64_t c = 0; c < C; ++c) ap[c] = x0[c];
        for (int j = 1; j < n; ++j) {
          const MergeInput& x = xs[j];
          const A* lp = R::load(static_cast<const T*>(x.data) + ((nb * x.H + h / x.sh) * x.W + w / x.sw) * C, C,
                                buf.data(), s);
          for (int64_t c = 0; c < C; ++c) ap[c] += lp[c];
        }
        A* o = R::out(out + off, buf.data());
        for (int64_t c = 0; c < C; ++c) o[c] = relu_if(ap[c], relu);
        R::commit(o, out + off, C, s);
      }
    }
  }
}

template <class T>
void backward_impl(const MergeShape& s, const MergeInput* xs, int n, bool relu, const T* grad, const T* out,
                   void* const* grads, int64_t begin, int64_t end) {
  using R = Rows<T>;
  using A = typename R::A;
  const int64_t H = s.H, W = s.W, C = s.C, L = hr_fuse_rows_per_unit(xs, n), G = H / L;
  const int64_t inner = s.nhwc ? C : 1;
  // Per unit, the block sums of each low input's rows accumulate in scratch (rows of the unit
  // only), then are stored once.
  std::vector<int64_t> base(n, 0);
  int64_t total = 0;
  for (int j = 1; j < n; ++j) {
    base[j] = total;
    total += (L / xs[j].sh) * xs[j].W * inner;
  }
  std::vector<A> acc(total > 0 ? total : 1), gp(W * inner), gbuf(W * inner), obuf(W * inner);
  T* g0 = static_cast<T*>(grads[0]);
  for (int64_t u = begin; u < end; ++u) {
    const int64_t outer = u / G, g = u % G;  // outer: plane (NCHW) or image (NHWC)
    for (int64_t k = 0; k < total; ++k) acc[k] = 0;
    for (int64_t h = g * L; h < (g + 1) * L; ++h) {
      const int64_t off = (outer * H + h) * W * inner;
      const A* gr = R::load(grad + off, W * inner, gbuf.data(), s);
      A* gpp = gp.data();
      if (relu) {
        const A* o = R::load(out + off, W * inner, obuf.data(), s);
        // both loads unconditional so the select compiles to a blend, not a mispredicted branch
        for (int64_t k = 0; k < W * inner; ++k) {
          const A gv = gr[k], ov = o[k];
          gpp[k] = ov > A(0) ? gv : A(0);
        }
      } else {
        for (int64_t k = 0; k < W * inner; ++k) gpp[k] = gr[k];
      }
      A* g0row = R::out(g0 + off, obuf.data());
      for (int64_t k = 0; k < W * inner; ++k) g0row[k] = gpp[k];
      R::commit(g0row, g0 + off, W * inner, s);
      for (int j = 1; j < n; ++j) {
        const MergeInput& x = xs[j];
        A* arow = acc.data() + base[j] + ((h - g * L) / x.sh) * x.W * inner;
        if (inner == 1) {
          merge::reduce_row_add(gpp, x.W, x.sw, arow);
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
      if constexpr (std::is_same<A, T>::value) {
        for (int64_t k = 0; k < len; ++k) dst[k] = src[k];
      } else {
        R::commit(src, dst, len, s);
      }
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
