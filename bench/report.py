"""Turn pytest-benchmark JSON into markdown tables: implementations side by side, ratios against
the PyTorch eager and torch.compile baselines, and the fraction of the hardware limit.

The limit is the measured copy bandwidth (bytes read + written, preallocated, measured at the start
of the benchmark session and stored in the JSON) for benchmarks that pass `bytes=`: the fraction is
(bytes / time) / bandwidth. Benchmarks that pass `macs=` and `peak_macs_per_s` (extra_info; e.g. the
binary convolution's measured popcount limit) get "% of peak" = (macs / time) / peak instead. Extra
implementations named fastpose_* also get their own ratio to eager ("eager / impl"), and `ref_ms`
(extra_info: {name: ms}, numbers quoted from elsewhere, not measured in the run) become reference
columns with ratio ref / fastpose. CUDA cases carry their CUDA-event time per call (extra_info
"device_time_s", bench/_common.py), used instead of the host-clock statistic; --stat picks that
statistic for the others (median by default; min on a loaded machine).
Usage: python bench/report.py results.json [-o report.md] [--tests log] [--steps steps.tsv]
[--log name=path] [--stat min]
A missing or unreadable JSON gives a line saying so, not a crash (make gpu-check writes its report
even when the benchmarks failed).
"""
import argparse
import collections
import json
import os
import sys


def _fmt_ms(s):
    return f"{s * 1e3:.3f}" if s is not None else "-"


def _bandwidth_key(device, threads):
    return "cuda" if device.startswith("cuda") else f"cpu:{threads}"


# Issue 12's "Fast" targets, checked on the CUDA rows present: (label, op, dtype, case, kind, args, goal).
# kind "bw": % of copy bandwidth of impl; "ratio": time(base) / time(impl); "ips": images/s of impl at
# batch; "ms": impl's time per call. Missing rows are listed as not measured.
TARGETS = [
    ("softmax_dsnt fwd (1024,17,64,48) f32, % of copy bw", "softmax_dsnt_fwd", "float32", "(1024, 17, 64, 48)",
     "bw", ("fastpose",), 80),
    ("softmax_dsnt fwd+bwd (1024,17,64,48) f32, x eager", "softmax_dsnt_fwd_bwd", "float32", "(1024, 17, 64, 48)",
     "ratio", ("fastpose", "eager"), 5),
    ("xnor_conv2d (32,256,128,64,64) incl. packing, x cuDNN f16 cl", "xnor_conv2d_3x3", "float16",
     "(32, 256, 128, 64, 64)", "ratio", ("fastpose", "cudnn_fp16_channels_last"), 3),
    ("xnor_conv2d (32,256,128,64,64) pre-packed, x cuDNN f16 cl", "xnor_conv2d_3x3", "float16",
     "(32, 256, 128, 64, 64)", "ratio", ("fastpose_packed", "cudnn_fp16_channels_last"), 6),
    ("upsample_add (32,256,64,64) f16, % of copy bw", "upsample_add", "float16", "(32, 256, 64, 64)", "bw",
     ("fastpose",), 85),
    ("upsample_add (32,256,64,64) f32, % of copy bw", "upsample_add", "float32", "(32, 256, 64, 64)", "bw",
     ("fastpose",), 85),
    ("hr_fuse final f16, x eager", "hr_fuse", "float16", "final", "ratio", ("fastpose", "eager"), 2.5),
    ("hrnet_w32 256x192 f16 bs32, img/s", "model_hrnet_w32", "float16", "hrnet_w32 256x192 bs32 channels_last",
     "ips", ("fastpose", 32), 2750),
    ("hrnet_w32 256x192 f16 bs1 (CUDA graph), ms", "model_hrnet_w32", "float16",
     "hrnet_w32 256x192 bs1 channels_last", "ms", ("fastpose_cudagraph",), 2.0),
    ("hourglass 8 stacks f16 bs32, img/s", "model_hourglass-8", "float16", "hourglass-8 256x256 bs32 channels_last",
     "ips", ("fastpose", 32), 2400),
    ("hourglass 8 stacks f16 bs1 (CUDA graph), ms", "model_hourglass-8", "float16",
     "hourglass-8 256x256 bs1 channels_last", "ms", ("fastpose_cudagraph",), 2.6),
]


def targets(groups, bw):
    """Markdown table of TARGETS against the CUDA rows of groups ({key: {impl: (time, info)}})."""
    cuda = {(k[0], k[2], k[3]): v for k, v in groups.items() if str(k[1]).startswith("cuda")}
    if not cuda:
        return []
    lines = ["### Targets of issue 12", "", "| target | goal | measured | status |", "|---|---|---|---|"]
    for label, op, dtype, case, kind, args, goal in TARGETS:
        impls = cuda.get((op, dtype, case), {})
        t = impls.get(args[0], (None, {}))[0]
        value = None
        if t:
            if kind == "bw":
                info = impls[args[0]][1]
                lim = bw.get("cuda")
                if info.get("bytes") and lim:
                    value = 100 * info["bytes"] / t / 1e9 / lim
            elif kind == "ratio":
                base = impls.get(args[1], (None,))[0]
                value = base / t if base else None
            elif kind == "ips":
                value = args[1] / t
            else:
                value = t * 1e3
        if value is None:
            lines.append(f"| {label} | {goal} | - | not measured |")
            continue
        ok = value <= goal if kind == "ms" else value >= goal
        gap = "met" if ok else f"MISSED by {abs(value - goal) / goal * 100:.0f}%"
        fmt = f"{value:.0f}%" if kind == "bw" else (f"{value:.2f}x" if kind == "ratio" else
                                                    (f"{value:.0f}" if kind == "ips" else f"{value:.3f}"))
        lines.append(f"| {label} | {goal} | {fmt} | {gap} |")
    return lines + [""]


def build(data, stat="median"):
    machine = data.get("machine_info", {})
    bw = machine.get("copy_bandwidth_gbs", {})
    groups = collections.OrderedDict()
    scaling, compared = [], []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "op" not in info:
            continue
        if "scaling" in info:
            scaling.append(info)
            continue
        if "interleaved" in info:
            compared.append(info)
            continue
        key = (info["op"], info["device"], info["dtype"], info["case"], info.get("threads"))
        t = info.get("device_time_s") or b.get("stats", {}).get(stat)
        groups.setdefault(key, {})[info["impl"]] = (t, info)
    lines = []
    dev = machine.get("gpu_name") or machine.get("cpu_name", "?")
    lines.append(f"Machine: {machine.get('cpu_name', '?')}" + (f"; GPU: {machine['gpu_name']}" if "gpu_name" in machine else ""))
    if bw:
        lines.append("Measured copy bandwidth (read + write): " +
                     ", ".join(f"{k} {v:.1f} GB/s" for k, v in bw.items()))
    fp = machine.get("fastpose", {})
    if fp:
        lines.append(f"fastpose build: CPU ISA {fp.get('cpu_isa_active', '?')}, CUDA kernels {fp.get('cuda', '?')}, "
                     f"torch {fp.get('torch', '?')}")
    lines.append("")
    lines += targets(groups, bw)
    by_op = collections.OrderedDict()
    for key, impls in groups.items():
        by_op.setdefault(key[0], []).append((key, impls))
    for op, rows in by_op.items():
        others = sorted({i for _, impls in rows for i in impls} - {"fastpose", "eager", "compile"})
        fp_others = [o for o in others if o.startswith("fastpose_")]
        refs = sorted({r for _, impls in rows for _, inf in impls.values() for r in inf.get("ref_ms", {})})
        peaked = any("peak_macs_per_s" in inf for _, impls in rows for _, inf in impls.values())
        lines.append(f"### {op}")
        lines.append("")
        head = ["device", "threads", "dtype", "case", "fastpose ms", "eager ms", "compile ms"]
        head += [f"{o} ms" for o in others] + [f"{r} ms" for r in refs]
        head += ["x eager", "x compile"] + [f"x {o}" for o in others] + [f"eager / {o}" for o in fp_others]
        head += [f"x {r}" for r in refs]
        head += ["fastpose GB/s", "% of copy bw"]
        if peaked:
            head += ["fastpose G MAC/s", "% of peak"] + [f"% of peak {o}" for o in fp_others]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for (opname, device, dtype, case, threads), impls in rows:
            f = impls.get("fastpose", (None, {}))[0]
            e = impls.get("eager", (None, {}))[0]
            c = impls.get("compile", (None, {}))[0]
            info = next(iter(impls.values()))[1]
            ref_ms = {}
            for _, inf in impls.values():
                ref_ms.update(inf.get("ref_ms", {}))
            row = [device, str(threads if not device.startswith("cuda") else "-"), dtype, case,
                   _fmt_ms(f), _fmt_ms(e), _fmt_ms(c)] + [_fmt_ms(impls.get(o, (None,))[0]) for o in others]
            row += [f"{ref_ms[r]:g}" if r in ref_ms else "-" for r in refs]
            ratio = lambda base, t=f: f"{base / t:.2f}" if (base and t) else "-"  # noqa: E731
            row += [ratio(e), ratio(c)] + [ratio(impls.get(o, (None,))[0]) for o in others]
            row += [ratio(e, impls.get(o, (None,))[0]) for o in fp_others]
            row += [ratio(ref_ms[r] * 1e-3) if r in ref_ms else "-" for r in refs]
            nbytes = info.get("bytes")
            if nbytes and f:
                gbs = nbytes / f / 1e9
                lim = bw.get(_bandwidth_key(device, threads))
                row += [f"{gbs:.1f}", f"{100 * gbs / lim:.0f}%" if lim else "-"]
            else:
                row += ["-", "-"]
            if peaked:
                def frac(name):
                    t, inf = impls.get(name, (None, {}))
                    pk, macs = inf.get("peak_macs_per_s"), inf.get("macs")
                    return f"{100 * macs / t / pk:.0f}%" if (t and pk and macs) else "-"
                macs = info.get("macs")
                row += [f"{macs / f / 1e9:.0f}" if (macs and f) else "-", frac("fastpose")]
                row += [frac(o) for o in fp_others]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += scaling_table(scaling) + interleaved_table(compared)
    return "\n".join(lines), dev


def scaling_table(rows):
    """Markdown table of the interleaved thread-scaling rows (bench/_common.py thread_scaling)."""
    if not rows:
        return []
    threads = rows[0]["scaling"]["threads"]
    lines = ["### Thread scaling, interleaved rounds", "",
             "Each thread count timed in alternating rounds of the same calls; fastest round per count.", ""]
    head = ["op", "impl", "case"] + [f"{t} thread{'s' if t > 1 else ''} ms" for t in threads]
    head += [f"speed-up {threads[0]} -> {threads[-1]}", "calls / round", "rounds"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for info in rows:
        sc = info["scaling"]
        row = [info["op"], info["impl"], info["case"]] + [_fmt_ms(t) for t in sc["min_s"]]
        row += [f"{sc['speedup']:.2f}x", str(sc["calls_per_round"]), str(sc["rounds"])]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def interleaved_table(rows):
    """Markdown table of the interleaved comparisons (bench/_common.py interleaved): each variant's
    fastest round and how many times faster than the first variant (the baseline) each other one is."""
    lines = []
    for info in rows:
        iv = info["interleaved"]
        if not lines:
            lines = ["### Interleaved comparisons", "",
                     "The variants timed in alternating rounds; fastest round each; speed-up = first / variant.", ""]
        labels, ts = iv["labels"], iv["min_s"]
        head = ["op", "case"] + [f"{lab} (t{th}) ms" for lab, th in zip(labels, iv["threads"])]
        head += [f"{lab} speed-up over {labels[0]}" for lab in labels[1:]] + ["rounds"]
        row = [info["op"], info["case"]] + [_fmt_ms(t) for t in ts]
        row += [f"{ts[0] / t:.2f}x" for t in ts[1:]] + [str(iv["rounds"])]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |", ""]
    return lines


def _tail(path, n):
    try:
        with open(path, errors="replace") as fh:
            return fh.read()[-n:]
    except OSError as e:
        return f"(not available: {e.strerror or e})"


def _steps(path):
    """steps.tsv lines 'name<TAB>status<TAB>seconds' (tools/gpu_check.sh) as a table."""
    rows = []
    try:
        with open(path) as fh:
            rows = [line.rstrip("\n").split("\t") for line in fh if line.strip()]
    except OSError as e:
        return f"(no step log: {e.strerror or e})\n"
    lines = ["| step | status | seconds |", "|---|---|---|"]
    for r in rows:
        r = (r + ["", "", ""])[:3]
        lines.append("| " + " | ".join(r) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("json", nargs="*")
    ap.add_argument("-o", "--output")
    ap.add_argument("--title", help="a heading for the report")
    ap.add_argument("--tests", help="a pytest log to append (make gpu-check)")
    ap.add_argument("--steps", help="a tab-separated step log (name, status, seconds) to put first")
    ap.add_argument("--log", action="append", default=[], metavar="NAME=PATH", help="another log's tail to append")
    ap.add_argument("--stat", default="median", choices=["median", "min", "mean"],
                    help="pytest-benchmark statistic to report (min on a loaded machine)")
    args = ap.parse_args(argv)
    parts = []
    if args.title:
        parts.append(f"# {args.title}\n")
    if args.steps:
        parts.append("## Steps\n\n" + _steps(args.steps))
    for path in args.json:
        try:
            with open(path) as fh:
                text, dev = build(json.load(fh), args.stat)
        except (OSError, ValueError, KeyError, TypeError) as e:
            why = "missing" if not os.path.exists(path) else f"unreadable ({type(e).__name__}: {e})"
            parts.append(f"## Benchmarks: {path}\n\nNo results: the file is {why}; the benchmark step failed "
                         "or did not run (see the steps and logs below).\n")
            continue
        parts.append(f"## Benchmarks: {path} ({dev})\n\n{text}")
    if args.tests:
        parts.append("## Tests\n\n```\n" + _tail(args.tests, 6000) + "\n```\n")
    for spec in args.log:
        name, _, path = spec.partition("=")
        parts.append(f"## {name}\n\n```\n" + _tail(path or name, 3000) + "\n```\n")
    out = "\n".join(parts)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(out)
    else:
        sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
