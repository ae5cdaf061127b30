"""Compile-check every csrc/cuda/*.cu with nvcc for sm_80 and sm_90.

A CPU build of torch cannot link CUDA code, but its headers compile CUDA sources, so CUDA code that
does not compile never lands even on machines without a GPU. Usage: python tools/nvcc_check.py [files].
Exit status 0 when every file compiles (or nvcc is absent and --require is not given).
"""
import argparse
import concurrent.futures as cf
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = ("80", "90")


def nvcc_path():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def command(nvcc, src, obj):
    from torch.utils.cpp_extension import include_paths

    cmd = [nvcc, "-c", src, "-o", obj, "-std=c++17", "-O3", "--use_fast_math", "-Xcompiler", "-fPIC",
           "-DFASTPOSE_WITH_CUDA=1", "-DTORCH_EXTENSION_NAME=_C", "-D_GLIBCXX_USE_CXX11_ABI=1",
           "--expt-relaxed-constexpr", "-I" + os.path.join(ROOT, "csrc"), "-I" + sysconfig.get_paths()["include"]]
    for p in include_paths():
        cmd += ["-isystem", p]
    for a in ARCHS:
        cmd += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    return cmd


def check(files, jobs):
    nvcc = nvcc_path()
    if nvcc is None:
        return None
    results = {}
    with tempfile.TemporaryDirectory() as tmp, cf.ThreadPoolExecutor(jobs) as pool:
        futs = {}
        for f in files:
            obj = os.path.join(tmp, os.path.basename(f) + ".o")
            futs[pool.submit(subprocess.run, command(nvcc, f, obj), capture_output=True, text=True)] = f
        for fut in cf.as_completed(futs):
            r = fut.result()
            results[futs[fut]] = (r.returncode, r.stdout + r.stderr)
    return results


def cuda_sources():
    return sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("files", nargs="*")
    ap.add_argument("--require", action="store_true", help="fail when nvcc is not installed")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    files = args.files or cuda_sources()
    results = check(files, args.jobs)
    if results is None:
        print("nvcc not found: CUDA compile check skipped")
        return 1 if args.require else 0
    bad = 0
    for f, (rc, log) in sorted(results.items()):
        print(("ok   " if rc == 0 else "FAIL ") + os.path.relpath(f, ROOT) + " (sm_" + ", sm_".join(ARCHS) + ")")
        if rc != 0:
            bad += 1
            print(log)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
