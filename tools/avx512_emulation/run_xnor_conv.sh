#!/usr/bin/env bash
# Checks the AVX-512 XNOR kernels (popcount GEMM, bit packing) on a machine without AVX-512: compiles it against SIMDe's
# emulation of the intrinsics (Debian: apt-get install libsimde-dev) and runs the core unit tests on it.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f /usr/include/simde/x86/avx512.h ] || { echo "needs libsimde-dev (SIMDe headers)"; exit 77; }
out=$(mktemp -d)
g++ -O1 -std=c++17 -Wno-psabi -Icsrc tools/avx512_emulation/xnor_conv_avx512_emulated.cpp csrc/core/xnor_conv.cpp \
  csrc/core/xnor_fused.cpp   csrc/core/xnor_conv_avx2.cpp csrc/core/isa.cpp tools/avx512_emulation/compare_xnor_conv.cpp -o "$out/cmp"
"$out/cmp"
