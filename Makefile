# The README's commands. `make demo` and `make test` do all set-up on a fresh machine.
PY_SYS  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
JOBS    ?= $(shell nproc)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# Concurrent builds in one tree (several shells, several developers) would clobber build/: serialise.
LOCK    := flock /tmp/fastpose-build-$(shell id -u).lock

.PHONY: all venv build test pytest ctest asan-test nvcc-check demo bench bench-avx2 gpu-check gpu-check-dry clean

all: build

# A venv of its own; torch pinned to the CPU wheel unless a torch is already importable, in which
# case the venv sees the system's packages and uses that torch (e.g. a CUDA torch on a GPU machine).
$(VENV)/.ready: pyproject.toml
	@if $(PY_SYS) -c "import torch" 2>/dev/null; then \
	  echo "using the importable torch: $$($(PY_SYS) -c 'import torch; print(torch.__version__)')"; \
	  $(PY_SYS) -m venv --system-site-packages $(VENV); \
	else \
	  $(PY_SYS) -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip && \
	  $(PY) -m pip install -q $(TORCH_PIN); \
	fi
	$(PY) -m pip install -q setuptools wheel pybind11 ninja numpy
	touch $@

venv: $(VENV)/.ready

# Editable install builds the extension in place; later builds are incremental (ninja).
build: $(VENV)/.ready
	$(LOCK) $(PY) -m pip install -q --no-build-isolation -e .[test,train]
	$(PY) -c "import fastpose; print(fastpose.build_info())"

test: build
	$(PY) -m pytest -q
	$(MAKE) ctest

pytest: build
	$(PY) -m pytest -q

# The torch-free kernel core and its C++ unit tests, under AddressSanitizer and UBSan.
ctest:
	cmake -S . -B build/cmake-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DFASTPOSE_SANITIZE=ON -DFASTPOSE_NVCC_CHECK=OFF >/dev/null
	cmake --build build/cmake-asan -j $(JOBS)
	cd build/cmake-asan && ctest --output-on-failure

# The Python-level tests against an extension built with AddressSanitizer + UBSan (FASTPOSE_SANITIZE=1),
# in a copy of the tree (build/asan/tree: the normal build is untouched; rebuilds are incremental).
# torch is not instrumented: libasan is preloaded and leaks are not checked. ASAN_TESTS picks the tests.
ASAN_DIR   := build/asan/tree
ASAN_TESTS ?= tests/test_bad_input.py tests/test_xnor_conv.py tests/test_binarize_pack.py tests/test_softmax_dsnt.py \
              tests/test_upsample_add.py tests/test_hr_fuse.py tests/test_binary_layers.py tests/test_hpm_packed.py \
              tests/test_cpu_allocator.py
ASAN_ENV    = LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:detect_odr_violation=0:alloc_dealloc_mismatch=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
asan-test: $(VENV)/.ready
	mkdir -p $(ASAN_DIR)
	git ls-files -co --exclude-standard -z | xargs -0 tar -cf - | tar -xf - -C $(ASAN_DIR)
	cd $(ASAN_DIR) && FASTPOSE_SANITIZE=1 MAX_JOBS=$(JOBS) $(LOCK) $(abspath $(PY)) setup.py -q build_ext --inplace
	cd $(ASAN_DIR) && $(ASAN_ENV) $(abspath $(PY)) -c "import fastpose._C as c; assert 'build/asan' in c.__file__, c.__file__"
	cd $(ASAN_DIR) && $(ASAN_ENV) $(abspath $(PY)) -m pytest -q -p no:cacheprovider $(ASAN_TESTS)

# Every csrc/cuda/*.cu compiled by nvcc for sm_80 and sm_90 (also part of pytest when nvcc exists).
nvcc-check: $(VENV)/.ready
	$(PY) tools/nvcc_check.py

demo: build
	$(PY) -m fastpose demo

bench: build
	$(PY) -m pip install -q onnx onnxruntime  # the bench extra's baselines (float model under onnxruntime)
	mkdir -p reports
	$(PY) -m pytest bench -q -p no:randomly --benchmark-only --benchmark-json=reports/bench-cpu.json -m "not cuda"
	$(PY) bench/report.py reports/bench-cpu.json -o reports/bench-cpu.md
	cat reports/bench-cpu.md

# What an AVX2-only machine runs, on an AVX-512 one: fastpose's AVX2 kernels against PyTorch eager and
# oneDNN restricted to AVX2 (both read at start-up, hence a process of its own). The CPU kernels'
# benchmarks at 1 thread; BENCH_AVX2_K narrows them.
BENCH_AVX2_K ?= t1 and not avx2
bench-avx2: build
	mkdir -p reports
	# Inductor's cache key leaves out ATEN_CPU_CAPABILITY: a kernel compiled here and reloaded by a later
	# AVX-512 run corrupts the heap (seen with torch 2.13), so this run compiles into a cache of its own.
	TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/build/inductor-avx2 \
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FASTPOSE_ISA=avx2 $(PY) -m pytest -q -p no:randomly \
	  bench/bench_softmax_dsnt.py bench/bench_xnor_conv.py --benchmark-only -m "not cuda" \
	  -k "$(BENCH_AVX2_K)" --benchmark-json=reports/bench-cpu-avx2.json
	$(PY) bench/report.py reports/bench-cpu-avx2.json -o reports/bench-cpu-avx2.md
	cat reports/bench-cpu-avx2.md

# One command for a GPU machine (offline: the machine's python3, torch and triton; no venv, no
# download): build for sm_90 with every core, pytest -m cuda, the gpu_quick benchmarks, and
# compute-sanitizer memcheck, each step time-limited inside about 8 minutes; everything goes into
# $$OUT (else reports/) as it goes, and gpu-report.md is rewritten after every step. See tools/gpu_check.sh.
gpu-check:
	PY=$(PY_SYS) bash tools/gpu_check.sh

# The same script on a machine without a GPU: CPU stand-ins for each step (what can be checked here).
gpu-check-dry: $(VENV)/.ready
	PY=$(PY) GPU_CHECK_DRY_RUN=1 bash tools/gpu_check.sh

clean:
	rm -rf build *.egg-info fastpose/_C*.so
