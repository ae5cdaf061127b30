"""`make demo`: until the training demo lands, the kernel benchmark table of what exists."""


def run(args):
    import fastpose

    print(fastpose.build_info())
    return 0
