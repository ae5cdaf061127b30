#include "core/upsample_add.h"

#include <type_traits>
#include <vector>

#include "core/merge_util.h"

namespace fastpose {
namespace core {

using merge::Rows;

int64_t upsample_add_units(const MergeShape& s, const MergeInput& low) { return (s.nhwc ? s.N : s.N * s.C) * low.H; }

namespace {

template <class T>
void forward_impl(const MergeShape& s, const MergeInput& low, const T* skip, T* out, int64_t begin, int64_t end) {
  using R = Rows<T>;
  using A = typename R::A;
  const T* lo = static_cast<const T*>(low.data);
  const int64_t H = s.H, W = s.W, C = s.C, Hl = low.H, Wl = low.W, sh = low.sh, sw = low.sw;
  if (!s.nhwc) {
    // One low row, expanded once into buf, feeds sh output rows: each output row is then a
    // contiguous vectorised add.
    std::vector<A> buf(W), lbuf(Wl), sbuf(W), obuf(W);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t plane = u / Hl, il = u % Hl;
      merge::expand_row(R::load(lo + (plane * Hl + il) * Wl, Wl, lbuf.data(), s), Wl, sw, buf.data());
      for (int64_t a = 0; a < sh; ++a) {
        const int64_t off = (plane * H + il * sh + a) * W;
        const A* sr = R::load(skip + off, W, sbuf.data(), s);
        A* o = R::out(out + off, obuf.data());
        const A* bp = buf.data();
        for (int64_t w = 0; w < W; ++w) o[w] = sr[w] + bp[w];
        R::commit(o, out + off, W, s);
      }
    }
    return;
  }
  std::vector<A> lbuf(C), sbuf(C), obuf(C);
  for (int64_t u = begin; u < end; ++u) {
    const int64_t n = u / Hl, il = u % Hl;
    for (int64_t a = 0; a < sh; ++a) {
      const int64_t h = il * sh + a;
      for (int64_t w = 0; w < W; ++w) {
        const A* lp = R::load(lo + ((n * Hl + il) * Wl + w / sw) * C, C, lbuf.data(), s);
        const int64_t off = ((n * H + h) * W + w) * C;
        const A* sp = R::load(skip + off, C, sbuf.data(), s);
        A* op = R::out(out + off, obuf.data());
        for (int64_t c = 0; c < C; ++c) op[c] = sp[c] + lp[c];
        R::commit(op, out + off, C, s);
      }
    }
  }
}

template <class T>
void backward_impl(const MergeShape& s, const MergeInput& low, const T* grad, T* grad_low, int64_t begin,
                   int64_t end) {
  using R = Rows<T>;
  using A = typename R::A;
  const int64_t H = s.H, W = s.W, C = s.C, Hl = low.H, Wl = low.W, sh = low.sh, sw = low.sw;
  if (!s.nhwc) {
    std::vector<A> acc(W), red(Wl), gbuf(W);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t plane = u / Hl, il = u % Hl;
      for (int64_t w = 0; w < W; ++w) acc[w] = 0;
      for (int64_t a = 0; a < sh; ++a) {
        const A* g = R::load(grad + (plane * H + il * sh + a) * W, W, gbuf.data(), s);
        A* ap = acc.data();
        for (int64_t w = 0; w < W; ++w) ap[w] += g[w];
      }
      for (int64_t j = 0; j < Wl; ++j) red[j] = 0;
      merge::reduce_row_add(acc.data(), Wl, sw, red.data());
      T* lrow = grad_low + (plane * Hl + il) * Wl;
      A* o = R::out(lrow, gbuf.data());
      for (int64_t j = 0; j < Wl; ++j) o[j] = red[j];
      R::commit(o, lrow, Wl, s);
    }
    return;
  }
  std::vector<A> acc(C), gbuf(C);
  for (int64_t u = begin; u < end; ++u) {
    const int64_t n = u / Hl, il = u % Hl;
    for (int64_t j = 0; j < Wl; ++j) {
      A* ap = acc.data();
      for (int64_t c = 0; c < C; ++c) ap[c] = 0;
      for (int64_t a = 0; a < sh; ++a)
        for (int64_t b = 0; b < sw; ++b) {
          const A* g = R::load(grad + ((n * H + il * sh + a) * W + j * sw + b) * C, C, gbuf.data(), s);
          for (int64_t c = 0; c < C; ++c) ap[c] += g[c];
        }
      T* lp = grad_low + ((n * Hl + il) * Wl + j) * C;
      A* o = R::out(lp, gbuf.data());
      for (int64_t c = 0; c < C; ++c) o[c] = ap[c];
      R::commit(o, lp, C, s);
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
