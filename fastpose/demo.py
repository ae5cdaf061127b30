"""`make demo`: the build configuration and the kernel benchmark table of what exists.

The training demo (synthetic poses, float and binarized hourglasses) replaces this when it lands.
"""
import json


def run(args):
    import fastpose

    from . import kernel_table

    print("fastpose", fastpose.__version__)
    print(json.dumps(fastpose.build_info(), indent=2))
    print()
    return kernel_table.main(reps=5 if getattr(args, "quick", False) else 10)
