// The softmax + DSNT kernel body, written once over a vector type V (VecScalar<float|double>,
// VecAvx2, VecAvx512). Included by each ISA's translation unit inside its target region and an
// anonymous namespace within fastpose::core; includes nothing itself.

constexpr double kDsntEps = 1e-24;  // dsntnn's epsilon inside the logs of the divergences

template <class V>
struct DsntKernel {
  using T = typename V::T;
  static constexpr int N = V::N;

  const DsntProblem& p;
  T* xs;       // W: x grid
  T* row_in;   // W: a row converted to T (16-bit inputs)
  T* row_out;  // W: a row of gradients before conversion (16-bit outputs)
  T* qx;       // W: target Gaussian along x, divided by the normaliser
  T* qy;       // H: target Gaussian along y (unnormalised)
  T* ys;       // H: y grid
  T* xt;       // kChunk + W: the x grid tiled over a chunk of rows (flat chunks)
  T* rt;       // kChunk + W: the row index within a chunk, per element (flat chunks)

  bool js;     // JS divergence (else KL) when a regulariser is requested
  T ones_[N];  // 1 in every lane: masks tail lanes

  DsntKernel(const DsntProblem& prob, T* scratch) : p(prob), js(prob.reg == DsntReg::JS) {
    for (int k = 0; k < N; ++k) ones_[k] = T(1);
    const int64_t wpad = p.W + 2 * N;
    xs = scratch;
    row_out = xs + wpad;
    qx = row_out + wpad;
    qy = qx + wpad;
    row_in = qy + p.H + 2 * N;  // kChunk + W: a chunk of converted rows
    ys = row_in + kChunk + p.W + 2 * N;
    xt = ys + p.H + 2 * N;
    rt = xt + kChunk + p.W + 2 * N;
    for (int64_t i = 0; i < p.W; ++i) xs[i] = static_cast<T>((2.0 * i + 1.0) / p.W - 1.0);
    for (int64_t h = 0; h < p.H; ++h) ys[h] = static_cast<T>((2.0 * h + 1.0) / p.H - 1.0);
    const int64_t rpc = chunk_rows(), rows = rpc < p.H ? rpc : p.H;
    for (int64_t r = 0; r < rows; ++r) {  // no divisions: this runs on every call
      for (int64_t i = 0; i < p.W; ++i) {
        xt[r * p.W + i] = xs[i];
        rt[r * p.W + i] = static_cast<T>(r);
      }
    }
  }

  static int64_t scratch_elems(const DsntProblem& p) {
    return 4 * (p.W + 2 * N) + 3 * (kChunk + p.W + 2 * N) + 2 * (p.H + 2 * N);
  }

  inline T ygrid(int64_t h) const { return ys[h]; }

  inline const char* map_base(int64_t m) const {
    const int64_t b = m / p.J, j = m - (m / p.J) * p.J;
    return static_cast<const char*>(p.logits) + (b * p.stride_b + j * p.stride_j) * elem_size(p.type);
  }

  // n float16 / bfloat16 values to T.
  inline void convert16(const uint16_t* s, T* d, int64_t n) const {
    int64_t i = 0;
    if constexpr (N > 1) {
      if (p.type == ElemType::F16) {
        for (; i + N <= n; i += N) V::store(d + i, V::load_half(s + i));
      } else {
        for (; i + N <= n; i += N) V::store(d + i, V::load_bf16(s + i));
      }
    }
    for (; i < n; ++i) d[i] = static_cast<T>(p.type == ElemType::F16 ? half_to_float(s[i]) : bf16_to_float(s[i]));
  }

  // Row h of a map as T values (a pointer into the input when no conversion is needed).
  inline const T* row(const char* base, int64_t h) {
    const char* src = base + h * p.stride_h * elem_size(p.type);
    if (p.type == ElemType::F32 || p.type == ElemType::F64) return reinterpret_cast<const T*>(src);
    convert16(reinterpret_cast<const uint16_t*>(src), row_in, p.W);
    return row_in;
  }

  // Writes row_out (T) into the output row for 16-bit types.
  inline void store_row16(uint16_t* d) {
    int64_t i = 0;
    if constexpr (N > 1) {
      if (p.type == ElemType::F16)
        for (; i + N <= p.W; i += N) V::store_half(d + i, V::load(row_out + i));
    }
    for (; i < p.W; ++i) {
      const float v = static_cast<float>(row_out[i]);
      d[i] = p.type == ElemType::F16 ? float_to_half(v) : float_to_bf16(v);
    }
  }

  // dsntnn's make_gauss: g = exp(-(x - mu)^2 / (2 s^2)) per axis with s = 2 sigma / n, normalised by
  // (sum g + 1e-24). Stored separably: q(h, i) = qx[i] * qy[h].
  inline void target_gaussian(const T* mu) {
    const double sx = 2.0 * p.sigma / p.W, sy = 2.0 * p.sigma / p.H;
    const double kx = -0.5 / (sx * sx), ky = -0.5 / (sy * sy);
    double zx = 0.0, zy = 0.0;
    for (int64_t i = 0; i < p.W; ++i) {
      const double d = (2.0 * i + 1.0) / p.W - 1.0 - static_cast<double>(mu[0]);
      const double g = __builtin_exp(kx * d * d);
      qx[i] = static_cast<T>(g);
      zx += g;
    }
    for (int64_t h = 0; h < p.H; ++h) {
      const double d = (2.0 * h + 1.0) / p.H - 1.0 - static_cast<double>(mu[1]);
      const double g = __builtin_exp(ky * d * d);
      qy[h] = static_cast<T>(g);
      zy += g;
    }
    const double inv_z = 1.0 / (zx * zy + kDsntEps);
    for (int64_t i = 0; i < p.W; ++i) qx[i] = static_cast<T>(static_cast<double>(qx[i]) * inv_z);
  }

  // Divergence summand and its derivative with respect to p, lane-wise.
  inline V div_term(V pv, V qv) const {
    const V eps = V::set1(static_cast<T>(kDsntEps)), half = V::set1(static_cast<T>(0.5));
    const V lp = V::log(pv + eps);
    if (js) {
      const V mv = half * (pv + qv);
      const V lm = V::log(mv + eps), lq = V::log(qv + eps);
      return half * (pv * (lp - lm) + qv * (lq - lm));
    }
    return pv * (lp - V::log(qv + eps));
  }
  inline V div_grad(V pv, V qv) const {
    const V eps = V::set1(static_cast<T>(kDsntEps)), half = V::set1(static_cast<T>(0.5));
    const V pe = pv + eps;
    if (js) {
      const V me = half * (pv + qv) + eps;
      return half * (V::log(pe / me) + pv / pe - (me - eps) / me);
    }
    return V::log(pe) - V::log(qv + eps) + pv / pe;
  }

  // Rows are processed in chunks of about kChunk elements: one max, at most one rescale and three
  // horizontal sums per chunk, so small maps (W = 48, 64) do not pay per-row overheads.
  static constexpr int64_t kChunk = 1024;
  // How far above the reference a logit may be before the chunk is redone (e^30 ~ 1e13: chunk sums
  // stay far from float overflow). The reference saved in stats is within this of the true max.
  static constexpr T kHeadroom = 30;
  int64_t chunk_rows() const { return p.W >= kChunk ? 1 : kChunk / p.W; }

  // Row pointers of rows [h0, h1) of a map; 16-bit rows are converted into row_in first.
  inline const T* chunk_row(const char* base, int64_t h0, int64_t h) const {
    if (p.type == ElemType::F32 || p.type == ElemType::F64)
      return reinterpret_cast<const T*>(base + h * p.stride_h * elem_size(p.type));
    return row_in + (h - h0) * p.W;
  }
  inline void convert_chunk(const char* base, int64_t h0, int64_t h1) {
    if (p.type == ElemType::F32 || p.type == ElemType::F64) return;
    for (int64_t h = h0; h < h1; ++h)
      convert16(reinterpret_cast<const uint16_t*>(base + h * p.stride_h * 2), row_in + (h - h0) * p.W, p.W);
  }

  struct RowSums {
    V s, sx;
  };
  // sum of e = exp(l - m) and of e * x over one row. Its own accumulators (few live registers):
  // GCC otherwise spills the row-spanning accumulators and the loop runs at store-forwarding speed.
  // pf_dist > 0: prefetch the row that far ahead (the next chunk, streaming in from memory).
  __attribute__((always_inline)) inline RowSums exp_row(const T* r, V mv, int64_t pf_dist, const T* ones) const {
    const T ninf = -__builtin_inf();
    const int64_t W = p.W;
    V s0 = V::set1(0), s1 = V::set1(0), x0 = V::set1(0), x1 = V::set1(0);
    int64_t i = 0;
    for (; i + 2 * N <= W; i += 2 * N) {
      if (pf_dist) __builtin_prefetch(r + i + pf_dist);
      const V e0 = V::exp_nonpos_fast(V::load(r + i) - mv);
      const V e1 = V::exp_nonpos_fast(V::load(r + i + N) - mv);
      s0 = s0 + e0;
      s1 = s1 + e1;
      x0 = V::fma(e0, V::load(xs + i), x0);
      x1 = V::fma(e1, V::load(xs + i + N), x1);
    }
    for (; i < W; i += N) {
      const int n = W - i < N ? static_cast<int>(W - i) : N;
      // tail lanes: exp_nonpos_fast maps -inf to ~1e-38, not 0, hence the mask
      const V e = V::exp_nonpos_fast(V::load_partial(r + i, n, ninf) - mv) * V::load_partial(ones, n, 0);
      s0 = s0 + e;
      x0 = V::fma(e, V::load_partial(xs + i, n, 0), x0);
    }
    return {s0 + s1, x0 + x1};
  }

  struct ChunkSums {
    double s, sx, sr;
    T max;  // the chunk's largest logit, tracked in the same loop
  };
  using Exp = typename V::ExpBlock;
  static constexpr int U = V::kUnroll;
  // Sums of e = exp(l - eb.ref), e * x and e * (row index within the chunk) over n contiguous
  // logits of whole rows: no per-row work at all, which matters for W = 48 or 64. Blocks of U
  // vectors go through the block exp together.
  __attribute__((always_inline)) inline ChunkSums exp_flat(const T* c, int64_t n, const Exp& eb, int64_t pf_dist) const {
    const T ninf = -__builtin_inf();
    V s[2], x[2], r[2], mx[2];
    for (int k = 0; k < 2; ++k) {
      s[k] = x[k] = r[k] = V::set1(0);
      mx[k] = V::set1(ninf);
    }
    int64_t i = 0;
    for (; i + U * N <= n; i += U * N) {
      if (pf_dist) {
        for (int64_t b = 0; b < static_cast<int64_t>(U * N * sizeof(T)); b += 64)
          __builtin_prefetch(reinterpret_cast<const char*>(c + i + pf_dist) + b);
      }
      V a[U];
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) {
        a[k] = V::load(c + i + k * N);
        mx[k & 1] = V::max(mx[k & 1], a[k]);
      }
      eb.template run<U>(a);
#pragma GCC unroll 8
      for (int k = 0; k < U; ++k) {
        s[k & 1] = s[k & 1] + a[k];
        x[k & 1] = V::fma(a[k], V::load(xt + i + k * N), x[k & 1]);
        r[k & 1] = V::fma(a[k], V::load(rt + i + k * N), r[k & 1]);
      }
    }
    for (; i < n; i += N) {
      const int k = n - i < N ? static_cast<int>(n - i) : N;
      // tail lanes: the block exp maps the -inf fill to ~1e-38, so mask them with a 0/1 vector
      V a[1] = {V::load_partial(c + i, k, ninf)};
      mx[0] = V::max(mx[0], a[0]);
      eb.template run<1>(a);
      const V e = a[0] * V::load_partial(ones_, k, 0);
      s[0] = s[0] + e;
      x[0] = V::fma(e, V::load_partial(xt + i, k, 0), x[0]);
      r[0] = V::fma(e, V::load_partial(rt + i, k, 0), r[0]);
    }
    return {static_cast<double>(V::hsum(s[0] + s[1])), static_cast<double>(V::hsum(x[0] + x[1])),
            static_cast<double>(V::hsum(r[0] + r[1])), V::hmax(V::max(mx[0], mx[1]))};
  }

  // exp_flat for rows of exactly C vectors (AVX-512 with W = 48 or 64): per-column accumulators
  // give the sum and (dotted with the x grid at the end) the x moment; the row moment comes from
  // the running prefix sums, sum_h h R_h = n S - sum_h P_h (P_h the sum through row h), one add per
  // row vector. No tile loads and no FMA per element beyond the exp's: the FMA pipes were the limit.
  template <int C>
  __attribute__((always_inline)) inline ChunkSums exp_rows(const T* c, int64_t rows, const Exp& eb, int64_t pf_dist) const {
    V col[C], pacc = V::set1(0), mx = V::set1(-__builtin_inf());
    for (int k = 0; k < C; ++k) col[k] = V::set1(0);
    for (int64_t h = 0; h < rows; ++h) {
      const T* rp = c + h * (C * N);
      if (pf_dist) {
        for (int64_t b = 0; b < static_cast<int64_t>(C * N * sizeof(T)); b += 64)
          __builtin_prefetch(reinterpret_cast<const char*>(rp + pf_dist) + b);
      }
      V a[C];
#pragma GCC unroll 8
      for (int k = 0; k < C; ++k) {
        a[k] = V::load(rp + k * N);
        mx = V::max(mx, a[k]);
      }
      constexpr int B = C < U ? C : U;  // the block exp over U vectors at a time
#pragma GCC unroll 8
      for (int kb = 0; kb + B <= C; kb += B) eb.template run<B>(a + kb);
      if constexpr (C % B != 0) eb.template run<C % B>(a + (C - C % B));
#pragma GCC unroll 8
      for (int k = 0; k < C; ++k) col[k] = col[k] + a[k];
      V t = col[0];
#pragma GCC unroll 8
      for (int k = 1; k < C; ++k) t = t + col[k];
      pacc = pacc + t;
    }
    V tot = col[0], xs_sum = col[0] * V::load(xs);
    for (int k = 1; k < C; ++k) {
      tot = tot + col[k];
      xs_sum = V::fma(col[k], V::load(xs + k * N), xs_sum);
    }
    const double S = V::hsum(tot);
    return {S, static_cast<double>(V::hsum(xs_sum)), static_cast<double>(rows) * S - static_cast<double>(V::hsum(pacc)),
            V::hmax(mx)};
  }
  // The chunk's sums: exp_rows where it applies, else exp_flat.
  __attribute__((always_inline)) inline ChunkSums exp_chunk(const T* c, int64_t rows, const Exp& eb, int64_t pf_dist) const {
    if constexpr (N == 16) {
      if (p.W == 4 * N) return exp_rows<4>(c, rows, eb, pf_dist);
      if (p.W == 3 * N) return exp_rows<3>(c, rows, eb, pf_dist);
    } else if constexpr (N == 8) {
      if (p.W == 8 * N) return exp_rows<8>(c, rows, eb, pf_dist);
      if (p.W == 6 * N) return exp_rows<6>(c, rows, eb, pf_dist);
    }
    return exp_flat(c, rows * p.W, eb, pf_dist);
  }

  int64_t forward(int64_t begin, int64_t end, T* stats, T* div) {
    const T ninf = -__builtin_inf();
    const int64_t W = p.W, rpc = chunk_rows();
    T ones[N];  // masks the tail lanes, which exp_nonpos_fast maps to ~1e-38 rather than 0
    for (int k = 0; k < N; ++k) ones[k] = T(1);
    const bool flat = p.stride_h == W || !(p.type == ElemType::F32 || p.type == ElemType::F64);
    int64_t bad = 0;
    for (int64_t m = begin; m < end; ++m) {
      const char* base = map_base(m);
      T M = ninf;  // the maximum of the first chunk (flat path; raised when a later chunk is redone), else of the map so far
      double R = -__builtin_inf();  // the reference the sums are relative to
      double S = 0.0, SX = 0.0, SY = 0.0;
      // Adds a chunk's sums taken relative to reference rc (rescaling whichever side is smaller).
      auto merge = [&](double rc, double cs, double csx, double csy) {
        if (rc > R) {
          const double sc = __builtin_exp(R - rc);
          S *= sc;
          SX *= sc;
          SY *= sc;
          R = rc;
        } else if (rc < R) {
          const double sc = __builtin_exp(rc - R);
          cs *= sc;
          csx *= sc;
          csy *= sc;
        }
        S += cs;
        SX += csx;
        SY += csy;
      };
      for (int64_t h0 = 0; h0 < p.H; h0 += rpc) {
        const int64_t h1 = h0 + rpc < p.H ? h0 + rpc : p.H;
        convert_chunk(base, h0, h1);
        const bool prefetch = h1 < p.H && (p.type == ElemType::F32 || p.type == ElemType::F64);
        if (flat && M != ninf) {
          // Lagged reference: exp relative to the maximum of the first chunk, tracking this
          // chunk's maximum in the same loop (no separate max pass). Logits up to kHeadroom above
          // the reference are exact; further above (rare), rescale to them and redo the chunk.
          const T* c = chunk_row(base, h0, h0);
          Exp eb(M);
          ChunkSums cs = exp_chunk(c, h1 - h0, eb, prefetch ? rpc * W : 0);
          if (cs.max > M + kHeadroom) {
            M = cs.max;
            eb = Exp(M);
            cs = exp_chunk(c, h1 - h0, eb, 0);
          }
          merge(eb.ref, cs.s, cs.sx, static_cast<double>(ygrid(h0)) * cs.s + (2.0 / p.H) * cs.sr);
          continue;
        }
        V vmax0 = V::set1(ninf), vmax1 = V::set1(ninf);
        const int64_t nrows = flat ? 1 : h1 - h0, len = flat ? (h1 - h0) * W : W;
        for (int64_t h = h0; h < h0 + nrows; ++h) {
          const T* r = chunk_row(base, h0, h);
          int64_t i = 0;
          for (; i + 2 * N <= len; i += 2 * N) {
            vmax0 = V::max(vmax0, V::load(r + i));
            vmax1 = V::max(vmax1, V::load(r + i + N));
          }
          for (; i + N <= len; i += N) vmax0 = V::max(vmax0, V::load(r + i));
          if (i < len) vmax1 = V::max(vmax1, V::load_partial(r + i, static_cast<int>(len - i), ninf));
        }
        const T cmax = V::hmax(V::max(vmax0, vmax1));
        if (cmax == ninf) continue;  // a fully masked chunk adds nothing
        if (cmax > M) M = cmax;
        if (flat) {
          // The chunk's rows are contiguous: one loop over them, y from the row index within the chunk.
          const T* c = chunk_row(base, h0, h0);
          const Exp eb(M);
          const ChunkSums cs = exp_chunk(c, h1 - h0, eb, prefetch ? rpc * W : 0);
          merge(eb.ref, cs.s, cs.sx, static_cast<double>(ygrid(h0)) * cs.s + (2.0 / p.H) * cs.sr);
          continue;
        }
        const V mv = V::set1(M);
        V rs = V::set1(0), rsx = V::set1(0), rsy = V::set1(0);
        for (int64_t h = h0; h < h1; ++h) {
          const RowSums r = exp_row(chunk_row(base, h0, h), mv, prefetch ? rpc * p.stride_h : 0, ones);
          rs = rs + r.s;
          rsx = rsx + r.sx;
          rsy = V::fma(r.s, V::set1(ygrid(h)), rsy);  // y is constant along a row
        }
        merge(static_cast<double>(M), V::hsum(rs), V::hsum(rsx), V::hsum(rsy));
      }
      T* st = stats + 4 * m;
      if (M == ninf) {
        // No finite logit. A NaN among -inf entries is not a masked map: its result is NaN, as
        // torch.softmax gives (the vector max drops NaN operands, so look for one here: rare path).
        if (!map_has_nan(base)) ++bad;
        const T nan = __builtin_nan("");
        st[0] = st[1] = st[2] = st[3] = nan;
        if (div) div[m] = nan;
        continue;
      }
      // The saved reference must be exactly representable: move the sum onto the rounded one.
      st[0] = static_cast<T>(R);
      const double Ssaved = S * __builtin_exp(R - static_cast<double>(st[0]));
      st[1] = static_cast<T>(Ssaved);
      st[2] = static_cast<T>(SX / S);
      st[3] = static_cast<T>(SY / S);
      if (p.reg != DsntReg::None) div[m] = static_cast<T>(divergence(base, m, st[0], Ssaved));
    }
    return bad;
  }

  bool map_has_nan(const char* base) {
    for (int64_t h = 0; h < p.H; ++h) {
      const T* r = row(base, h);
      for (int64_t i = 0; i < p.W; ++i)
        if (r[i] != r[i]) return true;
    }
    return false;
  }

  double divergence(const char* base, int64_t m, double M, double S) {
    const T ninf = -__builtin_inf();
    const int64_t W = p.W;
    target_gaussian(static_cast<const T*>(p.target) + 2 * m);
    const V mv = V::set1(static_cast<T>(M)), inv_s = V::set1(static_cast<T>(1.0 / S));
    double acc = 0.0;
    for (int64_t h = 0; h < p.H; ++h) {
      const T* r = row(base, h);
      const V qyv = V::set1(qy[h]);
      V a = V::set1(0);
      int64_t i = 0;
      for (; i + N <= W; i += N) {
        const V pv = V::exp_nonpos(V::load(r + i) - mv) * inv_s;
        a = a + div_term(pv, V::load(qx + i) * qyv);
      }
      if (i < W) {
        const int n = static_cast<int>(W - i);
        const V pv = V::exp_nonpos(V::load_partial(r + i, n, ninf) - mv) * inv_s;
        a = a + div_term(pv, V::load_partial(qx + i, n, 0) * qyv);
      }
      acc += V::hsum(a);
    }
    return acc;
  }

  void backward(int64_t begin, int64_t end, const T* stats, const T* gcoords, const T* gdiv, void* out) {
    const T ninf = -__builtin_inf();
    const int64_t W = p.W, HW = p.H * p.W;
    const bool with_reg = p.reg != DsntReg::None && gdiv != nullptr;
    const bool direct = p.type == ElemType::F32 || p.type == ElemType::F64;
    const bool stream = p.stream_out;
    for (int64_t m = begin; m < end; ++m) {
      const char* base = map_base(m);
      const T* st = stats + 4 * m;
      const double M = st[0], S = st[1], cx = st[2], cy = st[3];
      const double gx = gcoords[2 * m], gy = gcoords[2 * m + 1];
      const double gd = with_reg ? static_cast<double>(gdiv[m]) : 0.0;
      const V mv = V::set1(static_cast<T>(M)), inv_s = V::set1(static_cast<T>(1.0 / S));
      const V gxv = V::set1(static_cast<T>(gx));
      double hbar = 0.0;
      if (with_reg && gd != 0.0) {
        // E_p[dDiv/dp], needed for the softmax Jacobian: a first sweep over the (cached) map.
        target_gaussian(static_cast<const T*>(p.target) + 2 * m);
        for (int64_t h = 0; h < p.H; ++h) {
          const T* r = row(base, h);
          const V qyv = V::set1(qy[h]);
          V a = V::set1(0);
          int64_t i = 0;
          for (; i + N <= W; i += N) {
            const V pv = V::exp_nonpos(V::load(r + i) - mv) * inv_s;
            a = V::fma(pv, div_grad(pv, V::load(qx + i) * qyv), a);
          }
          if (i < W) {
            const int n = static_cast<int>(W - i);
            const V pv = V::exp_nonpos(V::load_partial(r + i, n, ninf) - mv) * inv_s;
            a = V::fma(pv, div_grad(pv, V::load_partial(qx + i, n, 0) * qyv), a);
          }
          hbar += V::hsum(a);
        }
      }
      const bool reg_here = with_reg && gd != 0.0;
      if (!reg_here && direct && p.stride_h == W) {
        // Contiguous map, no regulariser: flat chunks, grad = e * (a x + b r + c) with the 1/S, the
        // y grid (row index r within the chunk) and the constants folded into a, b, c.
        const T* src = reinterpret_cast<const T*>(base);
        T* dst = static_cast<T*>(out) + m * HW;
        const int64_t rpc = chunk_rows();
        const Exp eb(M);
        const double is = __builtin_exp(eb.ref - M) / S;  // exp(l - M) = exp(l - eb.ref) exp(eb.ref - M)
        // w = (gx x + gy (2/H) r) / S over the chunk's tile (row_in is free: f32/f64 here), so that
        // each element costs an add and a multiply: grad = e * (w + c), c per chunk.
        T* w = row_in;
        const int64_t ntile = (rpc < p.H ? rpc : p.H) * W;
        {
          const V av = V::set1(static_cast<T>(gx * is)), bv = V::set1(static_cast<T>(gy * (2.0 / p.H) * is));
          for (int64_t i = 0; i < ntile; i += N) V::store(w + i, V::fma(av, V::load(xt + i), bv * V::load(rt + i)));
        }
        for (int64_t h0 = 0; h0 < p.H; h0 += rpc) {
          const int64_t n = (h0 + rpc < p.H ? rpc : p.H - h0) * W;
          const V cv = V::set1(static_cast<T>((gy * (static_cast<double>(ygrid(h0)) - cy) - gx * cx) * is));
          const T* s = src + h0 * W;
          T* d = dst + h0 * W;
          const T* wl = w;  // a local: the (may-alias) vector stores would force reloads of the member
          int64_t i = 0;
          // Streaming stores need aligned full vectors; the step U * N keeps the chunk's alignment.
          const bool nt = stream && V::kStreamAlign > 0 &&
                          reinterpret_cast<uintptr_t>(d) % (V::kStreamAlign > 0 ? V::kStreamAlign : 1) == 0;
          // The source 4 KiB ahead is requested explicitly: the hardware prefetcher alone leaves the
          // loop waiting on L3 (measured 12-18% slower at (32,16,64,64) with AVX-512).
          constexpr int64_t pfd = 4096 / sizeof(T);
          auto sweep = [&](auto store) {
            for (; i + U * N <= n; i += U * N) {
              for (int64_t b = 0; b < static_cast<int64_t>(U * N * sizeof(T)); b += 64)
                __builtin_prefetch(reinterpret_cast<const char*>(s + i + pfd) + b);
              V a[U];
#pragma GCC unroll 8
              for (int k = 0; k < U; ++k) a[k] = V::load(s + i + k * N);
              eb.template run<U>(a);
#pragma GCC unroll 8
              for (int k = 0; k < U; ++k) store(d + i + k * N, a[k] * (V::load(wl + i + k * N) + cv));
            }
          };
          if (nt) {
            sweep([](T* q, V v) { V::stream(q, v); });
          } else {
            sweep([](T* q, V v) { V::store(q, v); });
          }
          for (; i < n; i += N) {
            const int k = n - i < N ? static_cast<int>(n - i) : N;
            V a[1] = {V::load_partial(s + i, k, ninf)};
            eb.template run<1>(a);
            V::store_partial(d + i, k, a[0] * (V::load_partial(wl + i, k, 0) + cv));
          }
        }
        continue;
      }
      const V gdv = V::set1(static_cast<T>(gd));
      for (int64_t h = 0; h < p.H; ++h) {
        const T* r = row(base, h);
        // grad = p * (gx (x - cx) + gy (y - cy) + gd (dDiv/dp - hbar)), constant terms folded per row.
        const V cv = V::set1(static_cast<T>(gy * (ygrid(h) - cy) - gx * cx - gd * hbar));
        const V qyv = V::set1(reg_here ? qy[h] : T(0));
        T* dst = direct ? reinterpret_cast<T*>(static_cast<char*>(out) + (m * HW + h * W) * sizeof(T)) : row_out;
        int64_t i = 0;
        for (; i + N <= W; i += N) {
          const V pv = V::exp_nonpos_fast(V::load(r + i) - mv) * inv_s;
          V t = V::fma(gxv, V::load(xs + i), cv);
          if (reg_here) t = V::fma(gdv, div_grad(pv, V::load(qx + i) * qyv), t);
          V::store(dst + i, pv * t);
        }
        if (i < W) {
          const int n = static_cast<int>(W - i);
          const V pv = V::exp_nonpos(V::load_partial(r + i, n, ninf) - mv) * inv_s;
          V t = V::fma(gxv, V::load_partial(xs + i, n, 0), cv);
          if (reg_here) t = V::fma(gdv, div_grad(pv, V::load_partial(qx + i, n, 0) * qyv), t);
          V::store_partial(dst + i, n, pv * t);
        }
        if (!direct) store_row16(reinterpret_cast<uint16_t*>(out) + m * HW + h * W);
      }
    }
    // Non-temporal stores are weakly ordered: make them visible before the caller's thread join.
    if (stream) V::stream_fence();
  }
};
