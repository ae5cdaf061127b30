#!/usr/bin/env bash
# Checks the AVX-512 kernels on a machine without AVX-512: compiles them against SIMDe's emulation
# of the intrinsics (Debian: apt-get install libsimde-dev) and compares them with the portable path.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f /usr/include/simde/x86/avx512.h ] || { echo "needs libsimde-dev (SIMDe headers)"; exit 77; }
out=$(mktemp -d)
g++ -O1 -std=c++17 -Wno-psabi -Icsrc tools/avx512_emulation/softmax_dsnt_avx512_emulated.cpp csrc/core/softmax_dsnt.cpp \
  csrc/core/softmax_dsnt_avx2.cpp csrc/core/isa.cpp tools/avx512_emulation/compare_softmax_dsnt.cpp -o "$out/cmp"
"$out/cmp"
