"""Fused softmax + DSNT (work in progress: being written now)."""


def softmax_dsnt(logits):
    raise NotImplementedError


def softmax_dsnt_with_reg(logits, target, sigma_t=1.0, kind="js"):
    raise NotImplementedError
