"""Turn pytest-benchmark JSON into markdown tables: implementations side by side, ratios against
the PyTorch eager and torch.compile baselines, and the fraction of the hardware limit.

The limit is the measured copy bandwidth (bytes read + written, preallocated, measured at the start
of the benchmark session and stored in the JSON) for benchmarks that pass `bytes=`: the fraction is
(bytes / time) / bandwidth. Benchmarks that pass `macs=` and `peak_macs_per_s` (extra_info; e.g. the
binary convolution's measured popcount limit) get "% of peak" = (macs / time) / peak instead. Extra
implementations named fastpose_* also get their own ratio to eager ("eager / impl"), and `ref_ms`
(extra_info: {name: ms}, numbers quoted from elsewhere, not measured in the run) become reference
columns with ratio ref / fastpose. --stat picks the pytest-benchmark statistic (median by default; min
on a loaded machine). Usage: python bench/report.py results.json [-o report.md] [--tests log] [--stat min]
"""
import argparse
import collections
import json
import sys


def _fmt_ms(s):
    return f"{s * 1e3:.3f}" if s is not None else "-"


def _bandwidth_key(device, threads):
    return "cuda" if device.startswith("cuda") else f"cpu:{threads}"


def build(data, stat="median"):
    machine = data.get("machine_info", {})
    bw = machine.get("copy_bandwidth_gbs", {})
    groups = collections.OrderedDict()
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "op" not in info:
            continue
        key = (info["op"], info["device"], info["dtype"], info["case"], info.get("threads"))
        groups.setdefault(key, {})[info["impl"]] = (b["stats"][stat], info)
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
    return "\n".join(lines), dev


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("json", nargs="+")
    ap.add_argument("-o", "--output")
    ap.add_argument("--tests", help="a pytest log to append (make gpu-check)")
    ap.add_argument("--stat", default="median", choices=["median", "min", "mean"],
                    help="pytest-benchmark statistic to report (min on a loaded machine)")
    args = ap.parse_args(argv)
    parts = []
    for path in args.json:
        with open(path) as fh:
            text, dev = build(json.load(fh), args.stat)
        parts.append(f"## Benchmarks: {path} ({dev})\n\n{text}")
    if args.tests:
        with open(args.tests) as fh:
            log = fh.read()
        parts.append("## Tests\n\n```\n" + log[-6000:] + "\n```\n")
    out = "\n".join(parts)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(out)
    else:
        sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
