"""dsntnn's public API (same names, signatures, defaults and conventions), backed by fastpose's
fused softmax + DSNT kernel where it applies.

Swap ``import dsntnn`` for ``from fastpose import dsnt as dsntnn``. Conventions (from dsntnn):
coordinates are (x, y) in the last dimension, on the normalised pixel-centre grid
``(2i + 1)/n - 1``; ``size`` arguments are (H, W); ``sigma_t`` is in pixels.

Where the fusion applies: ``flat_softmax`` returns ordinary probabilities but remembers the logits
they came from; ``dsnt``/``soft_argmax`` and ``kl_reg_losses``/``js_reg_losses`` given such
probabilities (2D maps, unmodified since) compute from the logits with the fused kernel, so no
extra pass over the heatmaps and no saved probabilities are needed for their backward. Under
torch.compile, or for 1D/3D heatmaps, the plain PyTorch definitions run. For the fully fused path
without materialising heatmaps, call :func:`fastpose.ops.softmax_dsnt` on logits directly.
"""
import torch

from ._checks import check_floating, check_positive_finite
from .ops.softmax_dsnt import softmax_dsnt, softmax_dsnt_with_reg

__all__ = [
    "flat_softmax", "dsnt", "soft_argmax", "linear_expectation", "normalized_linspace",
    "euclidean_losses", "l1_losses", "mse_losses", "make_gauss", "kl_reg_losses", "js_reg_losses",
    "variance_reg_losses", "average_loss", "normalized_to_pixel_coordinates",
    "pixel_to_normalized_coordinates", "sharpen_heatmaps",
]


def _compiling():
    return torch.compiler.is_compiling()


def _fused_logits(heatmaps):
    """The logits heatmaps were made from by flat_softmax, if neither changed since."""
    src = getattr(heatmaps, "_fastpose_logits", None)
    if src is None or _compiling():
        return None
    logits, hv, lv = src
    if heatmaps._version != hv or logits._version != lv or heatmaps.dim() != 4:
        return None
    return logits


def normalized_linspace(length, dtype=None, device=None):
    """Pixel-centre coordinates of an axis of ``length`` cells on (-1, 1): (2i + 1)/length - 1.

    ``length`` may be an int or a 0-dim tensor (as in dsntnn).
    """
    if isinstance(length, torch.Tensor):
        length = length.to(device=device, dtype=dtype)
    first = -(length - 1.0) / length
    return torch.arange(length, dtype=dtype, device=device) * (2.0 / length) + first


def flat_softmax(inp):
    """Softmax over all spatial dimensions jointly, per (batch, channel): (B, L, *spatial)."""
    _check_heatmaps("inp", inp)
    flat = inp.reshape(inp.shape[0], inp.shape[1], inp.shape[2:].numel())
    out = torch.softmax(flat, -1).view_as(inp)
    if inp.dim() == 4 and not _compiling():
        out._fastpose_logits = (inp, out._version, inp._version)
    return out


def _check_heatmaps(name, heatmaps):
    check_floating(name, heatmaps)
    if heatmaps.dim() < 3 or min(heatmaps.shape[2:]) < 1:
        raise ValueError(f"{name} must be (B, L, *spatial) with one or more spatial dimensions, each >= 1, got "
                         f"shape {tuple(heatmaps.shape)}")


def linear_expectation(probs, values):
    """Expectation of ``values[i]`` under the marginal of ``probs`` (B, L, *spatial) along spatial axis i.

    As in dsntnn, ``values[0]`` belongs to the first spatial axis (dim 2 of ``probs``: H of an (H, W)
    map) and the result (B, L, len(values)) is in spatial-axis order, e.g. (y, x); ``values[i]`` is
    (n_i,) or anything that broadcasts against the (B, L, n_i) marginal.
    """
    _check_heatmaps("probs", probs)
    nd = probs.dim() - 2
    if len(values) != nd:
        raise ValueError(f"values must hold one tensor per spatial dimension of probs ({nd}), got {len(values)}")
    expectations = []
    for i, v in enumerate(values):
        marg = probs
        for d in range(probs.dim() - 1, 1, -1):  # dsntnn's order of the sums: the same rounding
            if d != i + 2:
                marg = marg.sum(d)
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"values[{i}] must be a torch.Tensor, got {type(v).__name__}")
        if v.dim() and v.shape[-1] not in (1, marg.shape[-1]):
            raise ValueError(f"values[{i}] has {v.shape[-1]} entries but spatial dimension {i} of probs has "
                             f"{marg.shape[-1]}")
        expectations.append((marg * v).sum(-1))
    return torch.stack(expectations, -1)


def _reversed_last(t):
    # the reverse of the last dimension from standard ops (ONNX and TorchScript see no aten::flip)
    return torch.stack(t.unbind(-1)[::-1], -1)


def soft_argmax(heatmaps, normalized_coordinates=True):
    """Expected (x, y[, z]) of heatmaps (B, L, *spatial) holding probabilities. (B, L, D)."""
    _check_heatmaps("heatmaps", heatmaps)
    logits = _fused_logits(heatmaps) if normalized_coordinates else None
    if logits is not None:
        return softmax_dsnt(logits).to(heatmaps.dtype)
    sizes = heatmaps.shape[2:]
    if normalized_coordinates:
        values = [normalized_linspace(n, heatmaps.dtype, heatmaps.device) for n in sizes]
    else:
        values = [torch.arange(n, dtype=heatmaps.dtype, device=heatmaps.device) for n in sizes]
    return _reversed_last(linear_expectation(heatmaps, values))


def dsnt(heatmaps, normalized_coordinates=True):
    """Differentiable spatial to numerical transform (alias of :func:`soft_argmax`)."""
    return soft_argmax(heatmaps, normalized_coordinates=normalized_coordinates)


def _check_same_size(actual, target):
    check_floating("actual", actual)
    check_floating("target", target)
    if actual.shape != target.shape:
        raise ValueError(f"actual and target must have the same shape, got {tuple(actual.shape)} and "
                         f"{tuple(target.shape)}")


def euclidean_losses(actual, target):
    """||actual - target||_2 per point (not squared): (B, L, D) -> (B, L)."""
    _check_same_size(actual, target)
    return torch.norm(actual - target, p=2, dim=-1)


def l1_losses(actual, target):
    """Mean absolute error over the D coordinates: (B, L, D) -> (B, L)."""
    _check_same_size(actual, target)
    return (actual - target).abs().mean(-1)


def mse_losses(actual, target):
    """Mean squared error over the D coordinates: (B, L, D) -> (B, L)."""
    _check_same_size(actual, target)
    return ((actual - target) ** 2).mean(-1)


def make_gauss(means, size, sigma, normalize=True):
    """Gaussians on the pixel-centre grid at normalised ``means`` (..., D) with ``sigma`` in pixels.

    ``size`` is (H, W) (or (D, H, W), or (W,)), while ``means`` end in (x, y[, z]); the result
    (..., *size) sums to 1 per map (+1e-24) when ``normalize``. Differentiable with respect to means.
    """
    check_floating("means", means)
    size = tuple(int(n) for n in size)
    nd = len(size)
    if nd == 0 or any(n < 1 for n in size):
        raise ValueError(f"size must hold one or more positive spatial sizes, got {size}")
    if means.dim() == 0 or means.shape[-1] != nd:
        raise ValueError(f"means must end in {nd} coordinates for size {size}, got {tuple(means.shape)}")
    if not isinstance(sigma, torch.Tensor):
        check_positive_finite("sigma", sigma)
    gauss = None
    for axis in range(nd):  # axis 0 is x, the last spatial dimension
        n = size[nd - 1 - axis]
        grid = normalized_linspace(n, means.dtype, means.device)
        k = -0.5 * (1 / (2 * sigma / n)) ** 2  # sigma in normalised units is 2 sigma / n
        g = ((grid - means[..., axis:axis + 1]) ** 2 * k).exp()
        g = g.reshape(tuple(means.shape[:-1]) + (1,) * (nd - 1 - axis) + (n,) + (1,) * axis)
        gauss = g if gauss is None else gauss * g
    if not normalize:
        return gauss
    total = gauss
    for d in range(-1, -nd - 1, -1):
        total = total.sum(d, keepdim=True)
    return gauss / (total + 1e-24)


def _divergence(heatmaps, mu_t, sigma_t, kind):
    _check_heatmaps("heatmaps", heatmaps)
    check_floating("mu_t", mu_t)
    if not isinstance(sigma_t, torch.Tensor):
        check_positive_finite("sigma_t", sigma_t)
    if mu_t.dim() != 3 or heatmaps.dim() != mu_t.shape[-1] + 2 or heatmaps.shape[:2] != mu_t.shape[:2]:
        raise ValueError(f"heatmaps (B, L, *spatial) and mu_t (B, L, D) do not match: {tuple(heatmaps.shape)} "
                         f"and {tuple(mu_t.shape)}")
    logits = _fused_logits(heatmaps)
    if logits is not None and not mu_t.requires_grad and mu_t.dtype in (torch.float32, torch.float64):
        return softmax_dsnt_with_reg(logits, mu_t, sigma_t, kind)[1].to(heatmaps.dtype)
    q = make_gauss(mu_t, heatmaps.shape[2:], sigma_t)

    def kl(p, r):  # dsntnn's order of the sums
        t = p * ((p + 1e-24).log() - (r + 1e-24).log())
        for _ in range(heatmaps.dim() - 2):
            t = t.sum(-1)
        return t

    if kind == "kl":
        return kl(heatmaps, q)
    m = 0.5 * (heatmaps + q)
    return 0.5 * kl(heatmaps, m) + 0.5 * kl(q, m)


def kl_reg_losses(heatmaps, mu_t, sigma_t):
    """KL(heatmap || N(mu_t, sigma_t)) per map: (B, L). mu_t normalised, sigma_t in pixels."""
    return _divergence(heatmaps, mu_t, sigma_t, "kl")


def js_reg_losses(heatmaps, mu_t, sigma_t):
    """Jensen-Shannon divergence between each heatmap and N(mu_t, sigma_t): (B, L)."""
    return _divergence(heatmaps, mu_t, sigma_t, "js")


def variance_reg_losses(heatmaps, sigma_t):
    """sum over axes of (Var_pixels - sigma_t^2)^2, Var_pixels = Var_normalised * (n / 2)^2: (B, L).

    The variance is E[(X - E[X])^2] (two passes, as dsntnn computes it; E[X^2] - E[X]^2 would cancel
    catastrophically in float32 for a peaked map).
    """
    _check_heatmaps("heatmaps", heatmaps)
    sizes = heatmaps.shape[2:]
    values = [normalized_linspace(n, heatmaps.dtype, heatmaps.device) for n in sizes]
    mean = linear_expectation(heatmaps, values)
    centred = [(v - m.unsqueeze(-1)) ** 2 for v, m in zip(values, mean.unbind(-1))]
    var = linear_expectation(heatmaps, centred)
    scale = torch.tensor(list(sizes), dtype=var.dtype, device=var.device)
    return ((var * (scale / 2) ** 2 - sigma_t ** 2) ** 2).sum(-1)


def average_loss(losses, mask=None):
    """sum(losses * mask) / max(sum(mask), 1); without a mask, the mean over all elements."""
    check_floating("losses", losses)
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
        if mask.shape != losses.shape:
            raise ValueError(f"mask must have the shape of losses {tuple(losses.shape)}, got {tuple(mask.shape)}")
        return (losses * mask).sum() / mask.sum().clamp(min=1)
    return losses.sum() / max(losses.numel(), 1)


def _coord_sizes(coords, size):
    if not isinstance(coords, torch.Tensor):
        raise TypeError(f"coords must be a torch.Tensor, got {type(coords).__name__}")
    size = list(size)
    if coords.dim() == 0 or coords.shape[-1] != len(size):
        raise ValueError(f"size {tuple(size)} must give one length per coordinate of coords {tuple(coords.shape)}")
    return torch.tensor(size[::-1], dtype=coords.dtype, device=coords.device)


def normalized_to_pixel_coordinates(coords, size):
    """((c + 1) * n - 1) / 2 per axis; ``size`` is (H, W), coords are (x, y)."""
    sizes = _coord_sizes(coords, size)
    return ((coords + 1) * sizes - 1) / 2


def pixel_to_normalized_coordinates(coords, size):
    """(2p + 1) / n - 1 per axis; ``size`` is (H, W), coords are (x, y)."""
    sizes = _coord_sizes(coords, size)
    return (2 * coords + 1) / sizes - 1


def sharpen_heatmaps(heatmaps, alpha):
    """p ** alpha renormalised over the spatial dimensions of each map (fastpose's; not in dsntnn)."""
    _check_heatmaps("heatmaps", heatmaps)
    sharp = heatmaps ** alpha
    dims = tuple(range(2, heatmaps.dim()))
    return sharp / sharp.sum(dims, keepdim=True)
