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

from .ops.softmax_dsnt import (
    divergence_reference,
    gaussian_reference,
    softmax_dsnt,
    softmax_dsnt_with_reg,
)

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
    """Pixel-centre coordinates of an axis of ``length`` cells on (-1, 1): (2i + 1)/length - 1."""
    first = -(length - 1.0) / length
    return torch.arange(length, dtype=dtype, device=device) * (2.0 / length) + first


def flat_softmax(inp):
    """Softmax over all spatial dimensions jointly, per (batch, channel): (B, L, *spatial)."""
    if inp.dim() < 3:
        raise ValueError(f"inp must be (B, L, *spatial), got shape {tuple(inp.shape)}")
    flat = inp.reshape(inp.shape[0], inp.shape[1], -1)
    out = torch.softmax(flat, -1).view_as(inp)
    if inp.dim() == 4 and not _compiling():
        out._fastpose_logits = (inp, out._version, inp._version)
    return out


def linear_expectation(probs, values):
    """Per-axis expectations of the marginals of ``probs`` (B, L, *spatial); values[i] for axis -(i+1)."""
    expectations = []
    for i, v in enumerate(values):
        dim = probs.dim() - 1 - i
        others = [d for d in range(2, probs.dim()) if d != dim]
        marg = probs.sum(dim=others) if others else probs  # sum(dim=[]) would reduce everything
        expectations.append((marg * v).sum(-1))
    return torch.stack(expectations, -1)


def soft_argmax(heatmaps, normalized_coordinates=True):
    """Expected (x, y[, z]) of heatmaps (B, L, *spatial) holding probabilities. (B, L, D)."""
    logits = _fused_logits(heatmaps) if normalized_coordinates else None
    if logits is not None:
        return softmax_dsnt(logits).to(heatmaps.dtype)
    sizes = heatmaps.shape[2:][::-1]
    if normalized_coordinates:
        values = [normalized_linspace(n, heatmaps.dtype, heatmaps.device) for n in sizes]
    else:
        values = [torch.arange(n, dtype=heatmaps.dtype, device=heatmaps.device) for n in sizes]
    return linear_expectation(heatmaps, values)


def dsnt(heatmaps, normalized_coordinates=True):
    """Differentiable spatial to numerical transform (alias of :func:`soft_argmax`)."""
    return soft_argmax(heatmaps, normalized_coordinates=normalized_coordinates)


def _check_same_size(actual, target):
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

    ``size`` is (H, W) (or (D, H, W)); the result sums to 1 per map (+1e-24) when ``normalize``.
    """
    size = tuple(size)
    if means.shape[-1] != len(size):
        raise ValueError(f"means must end in {len(size)} coordinates for size {size}, got {tuple(means.shape)}")
    if len(size) == 2 and normalize:
        return gaussian_reference(means, size, sigma, means.dtype)
    grids = [normalized_linspace(n, means.dtype, means.device) for n in reversed(size)]
    gauss = None
    nd = len(size)
    for axis, (grid, n) in enumerate(zip(grids, reversed(size))):
        k = -0.5 / (2.0 * sigma / n) ** 2
        g = torch.exp(k * (grid - means[..., axis:axis + 1]) ** 2)
        shape = list(means.shape[:-1]) + [1] * nd
        shape[len(means.shape) - 1 + nd - 1 - axis] = n
        g = g.reshape(shape)
        gauss = g if gauss is None else gauss * g
    if not normalize:
        return gauss
    dims = tuple(range(-nd, 0))
    return gauss / (gauss.sum(dims, keepdim=True) + 1e-24)


def _divergence(heatmaps, mu_t, sigma_t, kind):
    if heatmaps.dim() != mu_t.shape[-1] + 2 or heatmaps.shape[:2] != mu_t.shape[:2]:
        raise ValueError(f"heatmaps (B, L, *spatial) and mu_t (B, L, D) do not match: {tuple(heatmaps.shape)} "
                         f"and {tuple(mu_t.shape)}")
    logits = _fused_logits(heatmaps)
    if logits is not None and not mu_t.requires_grad:
        return softmax_dsnt_with_reg(logits, mu_t, sigma_t, kind)[1].to(heatmaps.dtype)
    if heatmaps.dim() == 4:
        return divergence_reference(heatmaps, mu_t, sigma_t, kind)
    q = make_gauss(mu_t, heatmaps.shape[2:], sigma_t)
    dims = tuple(range(2, heatmaps.dim()))

    def kl(p, r):
        return (p * ((p + 1e-24).log() - (r + 1e-24).log())).sum(dims)

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
    """sum over axes of (Var_pixels - sigma_t^2)^2, Var_pixels = Var_normalised * (n / 2)^2: (B, L)."""
    sizes = heatmaps.shape[2:][::-1]
    values = [normalized_linspace(n, heatmaps.dtype, heatmaps.device) for n in sizes]
    mean = linear_expectation(heatmaps, values)
    sq = linear_expectation(heatmaps, [v ** 2 for v in values])
    var = sq - mean ** 2
    scale = torch.tensor([(n / 2.0) ** 2 for n in sizes], dtype=heatmaps.dtype, device=heatmaps.device)
    return ((var * scale - sigma_t ** 2) ** 2).sum(-1)


def average_loss(losses, mask=None):
    """sum(losses * mask) / max(sum(mask), 1); without a mask, the mean over all elements."""
    if mask is not None:
        if mask.shape != losses.shape:
            raise ValueError(f"mask must have the shape of losses {tuple(losses.shape)}, got {tuple(mask.shape)}")
        return (losses * mask).sum() / mask.sum().clamp(min=1)
    return losses.sum() / max(losses.numel(), 1)


def normalized_to_pixel_coordinates(coords, size):
    """((c + 1) * n - 1) / 2 per axis; ``size`` is (H, W), coords are (x, y)."""
    sizes = torch.tensor(list(size)[::-1], dtype=coords.dtype, device=coords.device)
    return ((coords + 1) * sizes - 1) / 2


def pixel_to_normalized_coordinates(coords, size):
    """(2p + 1) / n - 1 per axis; ``size`` is (H, W), coords are (x, y)."""
    sizes = torch.tensor(list(size)[::-1], dtype=coords.dtype, device=coords.device)
    return (2 * coords + 1) / sizes - 1


def sharpen_heatmaps(heatmaps, alpha):
    """p ** alpha renormalised over the spatial dimensions of each map."""
    sharp = heatmaps ** alpha
    dims = tuple(range(2, heatmaps.dim()))
    return sharp / sharp.sum(dims, keepdim=True)
