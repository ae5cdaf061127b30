"""Fused softmax + DSNT: heatmap logits (B, J, H, W) to coordinates (B, J, 2) in one pass.

The op ``torch.ops.fastpose.softmax_dsnt`` has C++ (CPU) and CUDA kernels; this module holds its fake
(meta) kernels, its autograd, a pure-PyTorch reference and the public functions. Conventions follow
dsntnn: coordinates are (x, y) on the normalised pixel-centre grid x_i = (2i + 1)/W - 1.
"""
import torch

from .._checks import check_positive_finite, check_tensor
from .._tracing import exporting

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_REG_KINDS = {"kl": 1, "js": 2}
_EPS = 1e-24  # dsntnn's epsilon inside the divergences' logs


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------- reference (slow, obviously correct)

def normalized_grid(n, dtype=torch.float32, device=None):
    """Pixel centres of an axis of length n on (-1, 1): (2i + 1)/n - 1."""
    return (torch.arange(n, dtype=torch.float64, device=device) * 2 + 1).div(n).sub(1).to(dtype)


def softmax_dsnt_reference(logits):
    """softmax over each map's H*W positions, then the expected (x, y), in float32 (float64 for float64)."""
    B, J, H, W = logits.shape
    acc = _acc_dtype(logits.dtype)
    p = torch.softmax(logits.to(acc).reshape(B, J, H * W), dim=-1).reshape(B, J, H, W)
    x = (p.sum(2) * normalized_grid(W, acc, logits.device)).sum(-1)
    y = (p.sum(3) * normalized_grid(H, acc, logits.device)).sum(-1)
    return torch.stack([x, y], dim=-1).to(logits.dtype)


def gaussian_reference(mu, size, sigma, dtype):
    """dsntnn's make_gauss for 2D: normalised Gaussians at mu (B, J, 2) with sigma in pixels."""
    H, W = size
    xs = normalized_grid(W, dtype, mu.device)
    ys = normalized_grid(H, dtype, mu.device)
    kx = -0.5 / (2.0 * sigma / W) ** 2
    ky = -0.5 / (2.0 * sigma / H) ** 2
    gx = torch.exp(kx * (xs - mu[..., 0:1].to(dtype)) ** 2)  # (B, J, W)
    gy = torch.exp(ky * (ys - mu[..., 1:2].to(dtype)) ** 2)  # (B, J, H)
    g = gy.unsqueeze(-1) * gx.unsqueeze(-2)
    return g / (g.sum((-2, -1), keepdim=True) + _EPS)


def _kl(p, q):
    return (p * ((p + _EPS).log() - (q + _EPS).log())).sum((-2, -1))


def divergence_reference(probs, mu, sigma, kind):
    """KL(p || q) or JS(p, q) per map, q the target Gaussian (dsntnn's kl_reg_losses / js_reg_losses)."""
    q = gaussian_reference(mu, probs.shape[-2:], sigma, probs.dtype)
    if kind == "kl":
        return _kl(probs, q)
    m = 0.5 * (probs + q)
    return 0.5 * _kl(probs, m) + 0.5 * _kl(q, m)


def softmax_dsnt_with_reg_reference(logits, target, sigma_t=1.0, kind="js"):
    B, J, H, W = logits.shape
    acc = _acc_dtype(logits.dtype)
    p = torch.softmax(logits.to(acc).reshape(B, J, H * W), dim=-1).reshape(B, J, H, W)
    coords = softmax_dsnt_reference(logits)
    div = divergence_reference(p, target.to(acc), sigma_t, kind)
    return coords, div.to(logits.dtype)


# ---------------------------------------------------------------- fake kernels

@torch.library.register_fake("fastpose::softmax_dsnt")
def _softmax_dsnt_fake(logits):
    B, J = logits.shape[:2]
    return logits.new_empty((B, J, 2)), logits.new_empty((B, J, 4), dtype=_acc_dtype(logits.dtype))


@torch.library.register_fake("fastpose::softmax_dsnt_backward")
def _softmax_dsnt_backward_fake(grad_coords, logits, stats):
    return logits.new_empty(logits.shape)


@torch.library.register_fake("fastpose::softmax_dsnt_reg")
def _softmax_dsnt_reg_fake(logits, target, sigma, reg):
    B, J = logits.shape[:2]
    return (logits.new_empty((B, J, 2)), logits.new_empty((B, J)),
            logits.new_empty((B, J, 4), dtype=_acc_dtype(logits.dtype)))


@torch.library.register_fake("fastpose::softmax_dsnt_reg_backward")
def _softmax_dsnt_reg_backward_fake(grad_coords, grad_div, logits, target, stats, sigma, reg):
    return logits.new_empty(logits.shape)


# ---------------------------------------------------------------- autograd

def _double_backward_grad(logits, fn, grads):
    # create_graph=True (double backward): differentiate the reference so the returned gradient is
    # itself differentiable. The fused backward op is used whenever no graph is being built.
    with torch.enable_grad():
        outs = fn(logits)
        outs = [o for o, g in zip(outs, grads) if g is not None]
        grads = [g for g in grads if g is not None]
        return torch.autograd.grad(outs, logits, grads, create_graph=True)[0]


# softmax_dsnt's autograd is registered in C++ (csrc/autograd/softmax_dsnt.cpp: no Python objects per
# training step); the regularised op's stays here.


def _setup_reg(ctx, inputs, output):
    logits, target, sigma, reg = inputs
    _, _, stats = output
    ctx.mark_non_differentiable(stats)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(logits, target, stats)
    ctx.sigma, ctx.reg = sigma, reg


def _backward_reg(ctx, grad_coords, grad_div, _grad_stats):
    logits, target, stats = ctx.saved_tensors
    if not ctx.needs_input_grad[0] or (grad_coords is None and grad_div is None):
        return None, None, None, None
    if torch.is_grad_enabled() and logits.requires_grad:
        kind = "kl" if ctx.reg == 1 else "js"
        g = _double_backward_grad(
            logits, lambda x: softmax_dsnt_with_reg_reference(x, target.detach(), ctx.sigma, kind),
            (grad_coords, grad_div))
        return g, None, None, None
    B, J = logits.shape[:2]
    if grad_coords is None:
        grad_coords = logits.new_zeros((B, J, 2))
    if grad_div is None:
        grad_div = logits.new_zeros((B, J))
    g = torch.ops.fastpose.softmax_dsnt_reg_backward(grad_coords, grad_div, logits, target, stats,
                                                     ctx.sigma, ctx.reg)
    return g, None, None, None


torch.library.register_autograd("fastpose::softmax_dsnt_reg", _backward_reg, setup_context=_setup_reg)


# ---------------------------------------------------------------- public API

def _check_logits(logits):
    check_tensor("logits", logits, ndim=4, dtypes=_FLOATS)
    if logits.shape[2] < 1 or logits.shape[3] < 1:
        raise ValueError(f"logits must have H >= 1 and W >= 1, got shape {tuple(logits.shape)}")


def softmax_dsnt(logits):
    """Coordinates of the softmax of each heatmap, in one fused pass.

    Args:
        logits: (B, J, H, W) float32, float16, bfloat16 (or float64) heatmap logits; any strides.
            ``-inf`` entries are allowed (masked positions); a map whose entries are all ``-inf``
            raises ``ValueError``.
    Returns:
        (B, J, 2) coordinates (x, y) in the logits' dtype, on the normalised pixel-centre grid
        ``(2i + 1)/n - 1`` (dsntnn's convention). Accumulation is in float32 (float64 for float64).

    Equivalent to ``dsntnn.dsnt(dsntnn.flat_softmax(logits))`` but reads the logits once and stores
    no probabilities for the backward pass (only a per-map max, sum and the coordinates).
    """
    _check_logits(logits)
    if exporting():  # the PyTorch reference: standard ops only
        return softmax_dsnt_reference(logits)
    coords, _ = torch.ops.fastpose.softmax_dsnt(logits)
    return coords


def softmax_dsnt_with_reg(logits, target, sigma_t=1.0, kind="js"):
    """Coordinates plus dsntnn's divergence regulariser, computed in the same kernel.

    Args:
        logits: (B, J, H, W) heatmap logits (see :func:`softmax_dsnt`).
        target: (B, J, 2) target coordinates (x, y) in normalised units; treated as data (no gradient).
        sigma_t: standard deviation of the target Gaussian in pixels (dsntnn's ``sigma_t``).
        kind: ``"js"`` (Jensen-Shannon, dsntnn's ``js_reg_losses``) or ``"kl"`` (``kl_reg_losses``).
    Returns:
        ``(coords, divergence)``: (B, J, 2) and (B, J), both in the logits' dtype.
    """
    _check_logits(logits)
    check_tensor("target", target, ndim=3, dtypes=_FLOATS)
    B, J = logits.shape[:2]
    if tuple(target.shape) != (B, J, 2):
        raise ValueError(f"target must have shape (B, J, 2) = ({B}, {J}, 2), got {tuple(target.shape)}")
    if kind not in _REG_KINDS:
        raise ValueError(f"kind must be 'js' or 'kl', got {kind!r}")
    sigma_t = check_positive_finite("sigma_t", sigma_t)
    if target.device != logits.device:
        raise ValueError(f"target must be on the logits' device {logits.device}, got {target.device}")
    if exporting():  # the PyTorch reference: standard ops only
        return softmax_dsnt_with_reg_reference(logits, target.detach(), float(sigma_t), kind)
    coords, div, _ = torch.ops.fastpose.softmax_dsnt_reg(logits, target.detach(), float(sigma_t),
                                                          _REG_KINDS[kind])
    return coords, div


def _register_cuda_fallback():
    # Without compiled CUDA kernels (a CPU-only build used with a CUDA torch), the references keep
    # the ops working on CUDA tensors.
    from .. import _C

    if _C.build_info()["cuda"]:
        return

    def fwd(logits):
        acc = _acc_dtype(logits.dtype)
        B, J, H, W = logits.shape
        x = logits.to(acc).reshape(B, J, H * W)
        m = x.amax(-1)
        s = torch.exp(x - m.unsqueeze(-1)).sum(-1)
        coords = softmax_dsnt_reference(logits)
        return coords, torch.stack([m, s, coords[..., 0].to(acc), coords[..., 1].to(acc)], -1)

    def bwd(grad_coords, logits, stats):
        with torch.enable_grad():
            x = logits.detach().requires_grad_()
            return torch.autograd.grad(softmax_dsnt_reference(x), x, grad_coords)[0].contiguous()

    torch.library.register_kernel("fastpose::softmax_dsnt", "cuda", fwd)
    torch.library.register_kernel("fastpose::softmax_dsnt_backward", "cuda", bwd)


if torch.cuda.is_available():  # pragma: no cover - GPU machines only
    _register_cuda_fallback()
