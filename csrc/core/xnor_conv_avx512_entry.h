// The AVX-512 kernels' external entry points (declared in xnor_conv.h), forwarding to the bodies of
// xnor_conv_avx512_kernel.h. Included, after that header's anonymous namespace, by the real AVX-512
// translation unit and by the SIMDe emulation build (tools/avx512_emulation), so both define the same.
void xnor_gemm_block_avx512(const uint64_t* x, const int64_t* xoff, int nk, const uint64_t* w, int64_t wstride,
                            const int64_t* woff, int nout, int npix, int32_t* S, int64_t s_ostride) {
  xnor512_run(x, xoff, nk, w, wstride, woff, nout, npix, S, s_ostride);
}

void pack_row_nchw_f32_avx512(const float* src, int64_t C, int64_t W, int64_t sc, uint64_t* dst, int64_t ps,
                              int64_t ks) {
  xnor512_pack_row_nchw(src, C, W, sc, dst, ps, ks);
}

void pack_row_nhwc_f32_avx512(const float* src, int64_t C, int64_t W, int64_t sw, uint64_t* dst, int64_t ps,
                              int64_t ks) {
  xnor512_pack_row_nhwc(src, C, W, sw, dst, ps, ks);
}
