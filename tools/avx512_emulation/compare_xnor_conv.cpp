// Runs the C++ unit tests of core/xnor_conv with the (emulated) AVX-512 kernels forced.
#define main xnor_conv_unit_test_main
#include "tests/test_xnor_conv.cpp"
#undef main
int main() {
  test_pack(Isa::Avx512);
  test_gemm_block(Isa::Avx512);
  test_conv(Isa::Avx512);
  std::printf("xnor_conv [emulated avx512]: ok\n");
  return 0;
}
