"""Command line: python -m fastpose {demo,info}."""
import argparse
import json


def _info(args):
    import fastpose

    print(json.dumps(fastpose.build_info(), indent=2))
    return 0


def _demo(args):
    from . import demo

    return demo.run(args)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m fastpose", description="fastpose command line")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("info", help="print the build configuration (CUDA, CPU ISA, Triton)")
    s.set_defaults(func=_info)
    s = sub.add_parser("bench-table", help="a short kernel benchmark table: fastpose against PyTorch eager")
    s.set_defaults(func=lambda a: __import__("fastpose.kernel_table", fromlist=["main"]).main())
    s = sub.add_parser("demo", help="run the demo on the embedded defaults")
    s.add_argument("--quick", action="store_true", help="fewer repetitions")
    s.set_defaults(func=_demo)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)
