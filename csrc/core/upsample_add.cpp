#include "core/upsample_add.h"

#include <type_traits>
#include <vector>

#include "core/merge_util.h"

namespace fastpose {
namespace core {

using merge::Storage;

int64_t upsample_add_units(const MergeShape& s, const MergeInput& low) { return (s.nhwc ? s.N : s.N * s.C) * low.H; }

namespace {

template <class T>
void forward_impl(const MergeShape& s, const MergeInput& low, const T* skip, T* out, int64_t begin, int64_t end) {
  using S = Storage<T>;
  using A = typename S::A;
  const T* lo = static_cast<const T*>(low.data);
  const int64_t H = s.H, W = s.W, C = s.C, Hl = low.H, Wl = low.W, sh = low.sh, sw = low.sw;
  if (!s.nhwc) {
    // One low row, expanded once into buf, feeds sh output rows: each output row is then a
    // contiguous vectorised add.
    std::vector<A> buf(W);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t plane = u / Hl, il = u % Hl;
      const T* lrow = lo + (plane * Hl + il) * Wl;
      merge::expand_row<T, A, S>(lrow, Wl, sw, buf.data());
      for (int64_t a = 0; a < sh; ++a) {
        const int64_t off = (plane * H + il * sh + a) * W;
        const T* srow = skip + off;
        T* orow = out + off;
        const A* bp = buf.data();
        for (int64_t w = 0; w < W; ++w) orow[w] = S::st(S::ld(srow[w]) + bp[w]);
      }
    }
    return;
  }
  for (int64_t u = begin; u < end; ++u) {
    const int64_t n = u / Hl, il = u % Hl;
    for (int64_t a = 0; a < sh; ++a) {
      const int64_t h = il * sh + a;
      for (int64_t w = 0; w < W; ++w) {
        const T* lp = lo + ((n * Hl + il) * Wl + w / sw) * C;
        const int64_t off = ((n * H + h) * W + w) * C;
        const T* sp = skip + off;
        T* op = out + off;
        for (int64_t c = 0; c < C; ++c) op[c] = S::st(S::ld(sp[c]) + S::ld(lp[c]));
      }
    }
  }
}

template <class T>
void backward_impl(const MergeShape& s, const MergeInput& low, const T* grad, T* grad_low, int64_t begin,
                   int64_t end) {
  using S = Storage<T>;
  using A = typename S::A;
  const int64_t H = s.H, W = s.W, C = s.C, Hl = low.H, Wl = low.W, sh = low.sh, sw = low.sw;
  if (!s.nhwc) {
    std::vector<A> acc(W + Wl);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t plane = u / Hl, il = u % Hl;
      for (int64_t w = 0; w < W; ++w) acc[w] = 0;
      for (int64_t a = 0; a < sh; ++a) {
        const T* g = grad + (plane * H + il * sh + a) * W;
        A* ap = acc.data();
        for (int64_t w = 0; w < W; ++w) ap[w] += S::ld(g[w]);
      }
      T* lrow = grad_low + (plane * Hl + il) * Wl;
      A* red = acc.data() + W;  // Wl sums after the W row sums
      for (int64_t j = 0; j < Wl; ++j) red[j] = 0;
      merge::reduce_row_add(acc.data(), Wl, sw, red);
      for (int64_t j = 0; j < Wl; ++j) lrow[j] = S::st(red[j]);
    }
    return;
  }
  std::vector<A> acc(C);
  for (int64_t u = begin; u < end; ++u) {
    const int64_t n = u / Hl, il = u % Hl;
    for (int64_t j = 0; j < Wl; ++j) {
      A* ap = acc.data();
      for (int64_t c = 0; c < C; ++c) ap[c] = 0;
      for (int64_t a = 0; a < sh; ++a)
        for (int64_t b = 0; b < sw; ++b) {
          const T* g = grad + ((n * H + il * sh + a) * W + j * sw + b) * C;
          for (int64_t c = 0; c < C; ++c) ap[c] += S::ld(g[c]);
        }
      T* lp = grad_low + ((n * Hl + il) * Wl + j) * C;
      for (int64_t c = 0; c < C; ++c) lp[c] = S::st(ap[c]);
    }
  }
}

}  // namespace

void upsample_add_forward(const MergeShape& s, const MergeInput& low, const void* skip, void* out, int64_t begin,
                          int64_t end) {
  merge::dispatch(s.type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    forward_impl<T>(s, low, static_cast<const T*>(skip), static_cast<T*>(out), begin, end);
  });
}

void upsample_add_backward(const MergeShape& s, const MergeInput& low, const void* grad, void* grad_low,
                           int64_t begin, int64_t end) {
  merge::dispatch(s.type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    backward_impl<T>(s, low, static_cast<const T*>(grad), static_cast<T*>(grad_low), begin, end);
  });
}

}  // namespace core
}  // namespace fastpose
