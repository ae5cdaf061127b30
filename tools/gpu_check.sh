#!/usr/bin/env bash
# `make gpu-check`: the quick GPU bring-up of issue 12 for an offline GPU machine (an H200 with 16
# cores: about 8 minutes, build included). Uses the machine's python3 with its torch and triton: no
# venv, no download. Steps, each under a time limit inside one overall budget:
#   info       nvidia-smi, torch / triton / CUDA versions
#   build      the extension for sm_90 only (TORCH_CUDA_ARCH_LIST), MAX_JOBS = all cores
#   tests      pytest -m cuda tests
#   bench      the gpu_quick subset of bench/ (one case per target of the issue), few rounds
#   sanitizer  compute-sanitizer --tool memcheck on one small case of every kernel
# Everything is written into $OUT when it is set (else reports/) as it goes, and gpu-report.md is
# rewritten after every step, so a report exists whatever fails or is killed. Exit status: 0 when
# every step passed, 1 when one failed, 3 when there is no usable CUDA GPU (the report says so).
# Knobs: PY (python3), GPU_CHECK_BUDGET_S (470), GPU_CHECK_SKIP_BUILD=1 (use the installed build),
#        GPU_CHECK_ARCH (9.0), FASTPOSE_GPU_CHECK_COMPILE=1 (add torch.compile of the models),
#        GPU_CHECK_DRY_RUN=1 (no GPU needed: the same steps with CPU stand-ins: the CUDA tests and
#        benchmarks collected, one CPU benchmark through the JSON and the report, the sanitizer
#        cases compiled; tests/test_gpu_check.py runs it).
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PY:-python3}
OUTDIR=${OUT:-$ROOT/reports}
WORK=$(mktemp -d)  # the step table and the report writer's errors: not among $OUT's files
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUTDIR"
STEPS=$WORK/gpu-steps.tsv
: >"$STEPS"
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-470}
JOBS=$(nproc 2>/dev/null || echo 4)
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-$JOBS} FASTPOSE_BENCH_QUICK=1
failed=0

report() {
  "$PY" bench/report.py "$OUTDIR/bench-gpu.json" -o "$OUTDIR/gpu-report.md" \
    --title "fastpose gpu-check ($(date -u +%Y-%m-%dT%H:%MZ), $(( $(date +%s) - START )) s so far)" \
    --steps "$STEPS" --tests "$OUTDIR/tests.log" --log "info=$OUTDIR/info.log" \
    --log "build=$OUTDIR/build.log" --log "bench log=$OUTDIR/bench.log" --log "sanitizer=$OUTDIR/sanitizer.log" \
    >/dev/null 2>"$WORK/report-error.txt" || {
    # the report writer itself failed (no python?): still leave a readable file
    { echo "# fastpose gpu-check"; echo; echo "bench/report.py failed:"; cat "$WORK/report-error.txt"
      echo; cat "$STEPS"; } >"$OUTDIR/gpu-report.md"
  }
  return 0
}

# step NAME LIMIT_S CMD...: runs CMD under min(LIMIT_S, what is left of the budget), logs into
# $OUTDIR/NAME.log, records the status and the seconds, rewrites the report.
step() {
  local name=$1 limit=$2 left t0 rc status
  shift 2
  left=$(( START + BUDGET - $(date +%s) ))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    printf '%s\tskipped (budget spent)\t0\n' "$name" >>"$STEPS"; failed=1; report; return 1
  fi
  t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  timeout -k 10 "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="TIMEOUT after ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  printf '%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" >>"$STEPS"
  echo "   $status"
  report
  [ $rc -eq 0 ] || failed=1
  return $rc
}

skip() {  # skip NAME WHY
  printf '%s\tskipped (%s)\t0\n' "$1" "$2" >>"$STEPS"
  report
}

rm -f "$OUTDIR/bench-gpu.json" "$OUTDIR"/{info,build,tests,bench,sanitizer}.log
report

step info 30 bash -c "nvidia-smi 2>&1 | head -20; \"$PY\" -c 'import sys, torch; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available()); print(torch.cuda.get_device_name() if torch.cuda.is_available() else \"no CUDA device\")'; \"$PY\" -c 'import triton; print(\"triton\", triton.__version__)'; command -v compute-sanitizer nvcc; nproc"

if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
  skip build "dry run"
  step tests 120 "$PY" -m pytest -q --collect-only -m cuda tests -p no:randomly -p no:cacheprovider
  step bench 120 "$PY" -m pytest -q -p no:randomly -p no:cacheprovider --benchmark-only \
    --benchmark-json="$OUTDIR/bench-gpu.json" \
    "bench/bench_upsample_add.py::test_upsample_add[cpu-8x256x64x64-float32-nchw-t1-fastpose]" \
    "bench/bench_upsample_add.py::test_upsample_add[cpu-8x256x64x64-float32-nchw-t1-eager]"
  step sanitizer 60 bash -c "\"$PY\" -m py_compile tools/gpu_sanitize.py && \"$PY\" -m pytest -q --collect-only -m 'cuda and gpu_quick' bench -p no:randomly"
  echo "dry run: report $OUTDIR/gpu-report.md"
  exit $failed
fi

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  echo "no CUDA GPU visible to $PY: the GPU steps are skipped"
  for s in build tests bench sanitizer; do skip $s "no CUDA GPU"; done
  exit 3
fi

if [ "${GPU_CHECK_SKIP_BUILD:-0}" = 1 ]; then
  skip build "GPU_CHECK_SKIP_BUILD=1"
else
  # sm_90 only; --no-index: offline, nothing to download (--no-build-isolation, --no-deps).
  step build 240 env TORCH_CUDA_ARCH_LIST="${GPU_CHECK_ARCH:-${TORCH_CUDA_ARCH_LIST:-9.0}}" FORCE_CUDA=1 \
    "$PY" -m pip install --no-build-isolation --no-deps --no-index -e .
fi
if ! "$PY" -c "import fastpose, sys; i = fastpose.build_info(); print(i); sys.exit(0 if i['cuda'] else 1)" \
    >>"$OUTDIR/build.log" 2>&1; then
  echo "fastpose has no CUDA kernels: tests and benchmarks skipped"
  printf 'build\tFAILED (no CUDA kernels in fastpose._C)\t0\n' >>"$STEPS"
  for s in tests bench sanitizer; do skip $s "no CUDA build"; done
  exit 1
fi

timeout_opt=()
"$PY" -c "import pytest_timeout" 2>/dev/null && timeout_opt=(--timeout 120)
# Several workers share the GPU: most of the time is Triton's and nvrtc's compiling on the CPU.
xdist_opt=()
"$PY" -c "import xdist" 2>/dev/null && xdist_opt=(-n "${GPU_CHECK_TEST_WORKERS:-6}")
step tests 170 "$PY" -m pytest -q -m cuda tests -p no:randomly -p no:cacheprovider -rfE "${xdist_opt[@]}" \
  "${timeout_opt[@]}"

if "$PY" -c "import pytest_benchmark" 2>/dev/null; then
  step bench 150 "$PY" -m pytest bench -q -p no:randomly -p no:cacheprovider -m "cuda and gpu_quick" \
    --benchmark-only --benchmark-json="$OUTDIR/bench-gpu.json" "${timeout_opt[@]}"
else  # bench/conftest.py's stand-in fixture writes the JSON
  step bench 150 env FASTPOSE_BENCH_JSON="$OUTDIR/bench-gpu.json" "$PY" -m pytest bench -q -p no:randomly \
    -p no:cacheprovider -m "cuda and gpu_quick"
fi

if command -v compute-sanitizer >/dev/null 2>&1; then
  step sanitizer 120 compute-sanitizer --tool memcheck --error-exitcode 1 --print-limit 20 "$PY" tools/gpu_sanitize.py
else
  skip sanitizer "compute-sanitizer not on PATH"
fi

echo "report: $OUTDIR/gpu-report.md ($(( $(date +%s) - START )) s)"
exit $failed
