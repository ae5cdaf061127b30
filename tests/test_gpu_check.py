"""make gpu-check's plumbing, checked without a GPU: the script's no-GPU path and its dry run, the
report writer on fake and missing benchmark JSON, bench/conftest.py without pytest-benchmark, and the
bench helpers (input rotation, the interleaved thread-scaling rounds)."""
import json
import os
import subprocess
import time
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "gpu_check.sh")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import report  # noqa: E402  (bench/report.py)

ONE_CPU_CASE = "bench/bench_upsample_add.py::test_upsample_add[cpu-8x256x64x64-float32-nchw-t1-fastpose]"


def _script(tmp_path, **env):
    e = dict(os.environ, PY=sys.executable, OUT=str(tmp_path), **env)
    return subprocess.run(["bash", SCRIPT], cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_no_gpu_still_writes_the_report(tmp_path):
    r = _script(tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    text = (tmp_path / "gpu-report.md").read_text()
    assert "| info | ok |" in text and "| tests | skipped (no CUDA GPU) |" in text
    assert "No results: the file is missing" in text


@pytest.mark.slow
def test_dry_run(tmp_path):
    r = _script(tmp_path, GPU_CHECK_DRY_RUN="1")
    assert r.returncode == 0, r.stdout + r.stderr
    text = (tmp_path / "gpu-report.md").read_text()
    for step in ("info", "tests", "bench", "sanitizer"):
        assert f"| {step} | ok |" in text, text[:2000]
    assert "### upsample_add" in text and "% of copy bw" in text
    assert json.loads((tmp_path / "bench-gpu.json").read_text())["benchmarks"]


def _fake(impl, t, device="cuda", host=None, **extra):
    info = dict(op="softmax_dsnt_fwd", impl=impl, case="(1024, 17, 64, 48)", dtype="float32", device=device,
                threads=2, bytes=214_000_000, **extra)
    if t is not None:
        info["device_time_s"] = t
    return {"name": impl, "stats": {"median": host if host is not None else 10 * (t or 1)}, "extra_info": info}


def test_report_on_fake_json(tmp_path):
    data = {"machine_info": {"cpu_name": "X", "gpu_name": "NVIDIA H200", "copy_bandwidth_gbs": {"cuda": 4280.0}},
            "benchmarks": [_fake("fastpose", 62.5e-6), _fake("eager", 250e-6), _fake("compile", 125e-6),
                           {"name": "untagged", "stats": {"median": 1.0}, "extra_info": {}}]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "r.md"
    assert report.main([str(path), "-o", str(out), "--title", "t"]) == 0
    text = out.read_text()
    row = [line for line in text.splitlines() if line.startswith("| cuda")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # CUDA-event times, not the host medians: 0.0625 ms, ratios 4x and 2x, 214 MB / 62.5 us = 3424 GB/s = 80%
    assert cells[4:7] == ["0.062", "0.250", "0.125"], cells
    assert cells[7:9] == ["4.00", "2.00"], cells
    assert cells[9:] == ["3424.0", "80%"], cells


def test_report_targets(tmp_path):
    def row(op, impl, case, t, dtype="float16", nbytes=None):
        info = dict(op=op, impl=impl, case=case, dtype=dtype, device="cuda", threads=2, device_time_s=t)
        if nbytes:
            info["bytes"] = nbytes
        return {"name": impl, "stats": {"median": 1.0}, "extra_info": info}
    data = {"machine_info": {"copy_bandwidth_gbs": {"cuda": 4000.0}}, "benchmarks": [
        row("upsample_add", "fastpose", "(32, 256, 64, 64)", 100e-6, nbytes=360_000_000),  # 3600 GB/s = 90%
        row("hr_fuse", "fastpose", "final", 10e-6), row("hr_fuse", "eager", "final", 20e-6),  # 2x of 2.5x
        row("model_hrnet_w32", "fastpose_cudagraph", "hrnet_w32 256x192 bs1 channels_last", 1.5e-3)]}
    text, _ = report.build(data)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "90%" in lines["upsample_add (32,256,64,64) f16, % of copy bw"] and "| met |" in \
        lines["upsample_add (32,256,64,64) f16, % of copy bw"]
    assert "2.00x" in lines["hr_fuse final f16, x eager"] and "MISSED by 20%" in lines["hr_fuse final f16, x eager"]
    assert "1.500" in lines["hrnet_w32 256x192 f16 bs1 (CUDA graph), ms"]
    assert "not measured" in lines["hourglass 8 stacks f16 bs32, img/s"]


def test_report_without_json_or_logs(tmp_path):
    out = tmp_path / "r.md"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert report.main([str(tmp_path / "missing.json"), str(bad), "-o", str(out), "--tests",
                        str(tmp_path / "none.log"), "--steps", str(tmp_path / "none.tsv"),
                        "--log", f"sanitizer={tmp_path / 'none2.log'}"]) == 0
    text = out.read_text()
    assert "the file is missing" in text and "unreadable" in text and "not available" in text


def test_bench_conftest_without_pytest_benchmark(tmp_path):
    # pytest-benchmark made unimportable and its plugin not loaded: the stand-in fixture runs the case
    # and writes the JSON that report.py reads.
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'pytest_benchmark':\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import pytest\n"
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {ONE_CPU_CASE!r}]))\n")
    path = tmp_path / "b.json"
    env = dict(os.environ, FASTPOSE_BENCH_JSON=str(path), FASTPOSE_BENCH_QUICK="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads(path.read_text())
    assert data["stand_in"] and data["benchmarks"][0]["extra_info"]["impl"] == "fastpose"
    text, _ = report.build(data)
    assert "### upsample_add" in text


def test_rotation_exceeds_twice_the_l2(monkeypatch):
    import _common  # bench/_common.py

    monkeypatch.setattr(_common, "l2_bytes", lambda device="cuda": 50 << 20)
    made = []
    sets = _common.rotation(lambda: made.append(1) or len(made), 30 << 20, "cuda")
    assert len(sets) == 4 and sets == [1, 2, 3, 4]  # 4 x 30 MB > 100 MB
    assert len(_common.rotation(lambda: 0, 300 << 20, "cuda")) == 1
    assert len(_common.rotation(lambda: 0, 1, "cuda")) == 64  # capped
    assert len(_common.rotation(lambda: 0, 1, "cpu")) == 1


class _FakeBenchmark:
    def __init__(self):
        self.extra_info = {}
        self.rounds = 0

    def pedantic(self, target, rounds=1, iterations=1, warmup_rounds=0):
        for _ in range(warmup_rounds + rounds):
            target()
        self.rounds += rounds


def test_thread_scaling_alternates_and_restores_threads():
    import _common  # bench/_common.py

    seen = []
    old = torch.get_num_threads()
    b = _FakeBenchmark()
    _common.thread_scaling(b, lambda: seen.append(torch.get_num_threads()), (1, 2), rounds=4, round_s=1e-4)
    sc = b.extra_info["scaling"]
    assert torch.get_num_threads() == old and b.rounds == 4
    assert sc["threads"] == [1, 2] and sc["rounds"] == 4 and sc["calls_per_round"] >= 1
    assert all(t > 0 for t in sc["min_s"]) and sc["speedup"] == pytest.approx(sc["min_s"][0] / sc["min_s"][1])
    # the calibration (1, 2), then the warm-up round and 4 rounds, the order reversed every round:
    # (1, 2) (2, 1) (1, 2) (2, 1) (1, 2); without the reversal there would be 12 runs of one count
    runs = [seen[0]]
    for t in seen[1:]:
        if t != runs[-1]:
            runs.append(t)
    assert runs == [1, 2] * 4, runs


def test_report_scaling_table(tmp_path):
    info = dict(op="xnor_conv2d_3x3", impl="fastpose_packed", case="(1, 128, 128, 16, 16)", dtype="float32",
                device="cpu", threads=2, scaling={"threads": [1, 2], "min_s": [40e-6, 25e-6], "speedup": 1.6,
                                                  "calls_per_round": 100, "rounds": 100})
    data = {"machine_info": {"cpu_name": "X"}, "benchmarks": [{"name": "s", "stats": {"median": 1.0},
                                                               "extra_info": info}]}
    text, _ = report.build(data)
    row = [line for line in text.splitlines() if line.startswith("| xnor_conv2d_3x3")][0]
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "xnor_conv2d_3x3", "fastpose_packed", "(1, 128, 128, 16, 16)", "0.040", "0.025", "1.60x", "100", "100"]
    assert "| cpu |" not in text  # not also a row of the implementations table


def test_interleaved_and_its_report_table():
    import _common  # bench/_common.py

    b = _FakeBenchmark()
    best = _common.interleaved(b, [("slow", lambda: time.sleep(2e-4), 1), ("fast", lambda: None, 1)], rounds=3,
                               round_s=1e-3)
    iv = b.extra_info["interleaved"]
    assert iv["labels"] == ["slow", "fast"] and iv["threads"] == [1, 1] and iv["rounds"] == 3
    assert best["slow"] > best["fast"] and iv["calls_per_round"][1] > iv["calls_per_round"][0]
    info = dict(op="m", impl="interleaved", case="c", dtype="float32", device="cpu", threads=1,
                interleaved={"labels": ["base", "ours"], "threads": [1, 1], "min_s": [8e-3, 1e-3],
                             "calls_per_round": [1, 4], "rounds": 12})
    text, _ = report.build({"machine_info": {}, "benchmarks": [{"name": "i", "stats": {"median": 1.0},
                                                                "extra_info": info}]})
    row = [line for line in text.splitlines() if line.startswith("| m |")][0]
    assert [c.strip() for c in row.strip("|").split("|")] == ["m", "c", "8.000", "1.000", "8.00x", "12"]
