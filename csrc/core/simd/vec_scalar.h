// One-lane "vector" for the portable paths. Included inside an anonymous namespace of a kernel file;
// includes nothing itself (the includer provides <cmath>, dtypes.h).
template <class Scalar>
struct VecScalar {
  using T = Scalar;
  static constexpr int N = 1;
  Scalar v;
  static inline VecScalar set1(Scalar x) { return {x}; }
  static inline VecScalar load(const Scalar* p) { return {*p}; }
  static inline VecScalar load_partial(const Scalar* p, int n, Scalar fill) { return {n > 0 ? *p : fill}; }
  static inline void store(Scalar* p, VecScalar a) { *p = a.v; }
  static inline void store_partial(Scalar* p, int n, VecScalar a) {
    if (n > 0) *p = a.v;
  }
  static constexpr int kStreamAlign = 0;  // no streaming stores: stream() is a plain store
  static inline void stream(Scalar* p, VecScalar a) { *p = a.v; }
  static inline void stream_fence() {}
  inline VecScalar operator+(VecScalar b) const { const VecScalar& a = *this; return {a.v + b.v}; }
  inline VecScalar operator-(VecScalar b) const { const VecScalar& a = *this; return {a.v - b.v}; }
  inline VecScalar operator*(VecScalar b) const { const VecScalar& a = *this; return {a.v * b.v}; }
  inline VecScalar operator/(VecScalar b) const { const VecScalar& a = *this; return {a.v / b.v}; }
  static inline VecScalar fma(VecScalar a, VecScalar b, VecScalar c) { return {a.v * b.v + c.v}; }
  static inline VecScalar max(VecScalar a, VecScalar b) { return {a.v > b.v ? a.v : b.v}; }
  static inline Scalar hsum(VecScalar a) { return a.v; }
  static inline Scalar hmax(VecScalar a) { return a.v; }
  // exp for x <= 0; -inf gives exactly 0, NaN stays NaN.
  static inline VecScalar exp_nonpos(VecScalar a) { return {static_cast<Scalar>(__builtin_exp(a.v))}; }
  static inline VecScalar exp_nonpos_fast(VecScalar a) { return exp_nonpos(a); }
  // The interface of VecAvx2::ExpBlock without the table: exp(l - ref), ref the given reference.
  static constexpr int kUnroll = 1;
  struct ExpBlock {
    double ref;
    Scalar m;
    explicit ExpBlock(double mm) : ref(static_cast<double>(static_cast<Scalar>(mm))), m(static_cast<Scalar>(mm)) {}
    template <int U>
    inline void run(VecScalar* a) const {
      for (int k = 0; k < U; ++k) a[k] = exp_nonpos_fast({a[k].v - m});
    }
  };
  static inline VecScalar log(VecScalar a) { return {static_cast<Scalar>(__builtin_log(a.v))}; }
};
