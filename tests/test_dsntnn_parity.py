"""fastpose.dsnt against dsntnn (PyPI), the library whose API it reproduces: every public function, values
and gradients, float32 and float64, 1D/2D/3D and rectangular heatmaps, B = 1 and larger, every option.

Tolerances are float rounding (a few ulp): where fastpose computes as dsntnn does the results are usually
bit-identical; the fused softmax+DSNT path accumulates differently and is held to the same few ulp.
"""
import pytest
import torch

from fastpose import dsnt as D

dsntnn = pytest.importorskip("dsntnn")

DTYPES = [torch.float32, torch.float64]
# (B, L, *spatial): 1D, square and rectangular 2D (both orientations), B = 1 (dsntnn's squeeze(0) path), 3D
SHAPES = [(2, 3, 7), (2, 3, 8, 8), (3, 2, 5, 9), (2, 2, 11, 4), (1, 4, 6, 7), (2, 2, 4, 5, 6), (1, 1, 3, 1, 5)]
SHAPE_IDS = ["1d", "2d-square", "2d-wide", "2d-tall", "2d-b1", "3d", "3d-thin"]


def tol(dtype, scale=1.0):
    # float32: a few ulp of values O(1) (sums over up to a few hundred cells); float64 likewise
    if dtype == torch.float32:
        return dict(rtol=4e-6 * scale, atol=2e-7 * scale)
    return dict(rtol=1e-12 * scale, atol=1e-14 * scale)


def close(a, b, dtype, scale=1.0):
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    torch.testing.assert_close(a, b, **tol(dtype, scale))


def gen(seed):
    return torch.Generator().manual_seed(seed)


def logits_like(shape, dtype, seed=0):
    return (torch.randn(shape, generator=gen(seed), dtype=torch.float64) * 2).to(dtype)


def mu_for(shape, dtype, seed=1):
    nd = len(shape) - 2
    return (torch.rand(shape[:2] + (nd,), generator=gen(seed), dtype=torch.float64) * 1.6 - 0.8).to(dtype)


def grads(fn, *inputs, seed=5):
    """Value of fn and the gradient of a random weighting of it with respect to every input."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    w = torch.randn(out.shape, generator=gen(seed), dtype=torch.float64).to(out.dtype)
    return (out.detach(), *torch.autograd.grad((out * w).sum(), leaves))


def probs_of(fast, logits):
    """fastpose's flat_softmax (tagged: the fused path for 4D maps) or untagged probabilities."""
    if fast == "fused":
        return D.flat_softmax(logits)
    return torch.softmax(logits.reshape(logits.shape[0], logits.shape[1], -1), -1).view_as(logits)


# the functions compared below, one test each (sharpen_heatmaps against its definition: not in dsntnn)
COMPARED = {"normalized_linspace", "flat_softmax", "dsnt", "soft_argmax", "linear_expectation", "euclidean_losses",
            "l1_losses", "mse_losses", "make_gauss", "kl_reg_losses", "js_reg_losses", "variance_reg_losses",
            "average_loss", "normalized_to_pixel_coordinates", "pixel_to_normalized_coordinates", "sharpen_heatmaps"}


def test_every_public_function_is_compared():
    assert set(D.__all__) == COMPARED
    assert COMPARED - {"sharpen_heatmaps"} <= set(dir(dsntnn))


# ------------------------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("length", [1, 2, 4, 7, 64])
def test_normalized_linspace(dtype, length):
    close(D.normalized_linspace(length, dtype=dtype), dsntnn.normalized_linspace(length, dtype=dtype), dtype, 0)
    t = torch.tensor(length)
    close(D.normalized_linspace(t, dtype=dtype), dsntnn.normalized_linspace(t, dtype=dtype), dtype, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_flat_softmax(dtype, shape):
    x = logits_like(shape, dtype)
    ours = grads(D.flat_softmax, x)
    ref = grads(dsntnn.flat_softmax, x)
    for a, b in zip(ours, ref):
        close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("path", ["fused", "plain"])
@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("name", ["dsnt", "soft_argmax"])
def test_dsnt_and_soft_argmax(dtype, shape, path, normalized, name):
    x = logits_like(shape, dtype)
    ours = grads(lambda t: getattr(D, name)(probs_of(path, t), normalized_coordinates=normalized), x)
    ref = grads(lambda t: getattr(dsntnn, name)(dsntnn.flat_softmax(t), normalized_coordinates=normalized), x)
    scale = 1.0 if normalized else max(shape[2:])  # pixel coordinates are larger by n / 2
    for a, b in zip(ours, ref):
        close(a, b, dtype, scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_linear_expectation_pairs_values_with_spatial_axes_in_order(dtype, shape):
    x = logits_like(shape, dtype)
    values = [torch.randn(n, generator=gen(10 + i), dtype=torch.float64).to(dtype) for i, n in enumerate(shape[2:])]

    def run(mod):
        return lambda p, *v: mod.linear_expectation(p, list(v))

    ours = grads(run(D), torch.softmax(x.flatten(2), -1).view_as(x), *values)
    ref = grads(run(dsntnn), torch.softmax(x.flatten(2), -1).view_as(x), *values)
    for a, b in zip(ours, ref):
        close(a, b, dtype)
    # values broadcasting against the (B, L, n) marginal, e.g. centred per map as variance_reg_losses does
    per_map = [torch.randn(shape[:2] + (n,), generator=gen(20 + i), dtype=dtype) for i, n in enumerate(shape[2:])]
    p = dsntnn.flat_softmax(x)
    close(D.linear_expectation(p, per_map), dsntnn.linear_expectation(p, per_map), dtype)


def test_linear_expectation_rejects_wrong_value_lengths():
    p = dsntnn.flat_softmax(torch.randn(2, 3, 5, 9))
    with pytest.raises(ValueError, match=r"values\[0\]"):
        D.linear_expectation(p, [D.normalized_linspace(9), D.normalized_linspace(5)])  # the old (x, y) order
    with pytest.raises(ValueError, match="values"):
        D.linear_expectation(p, [D.normalized_linspace(5)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["euclidean_losses", "l1_losses", "mse_losses"])
@pytest.mark.parametrize("shape", [(2, 3, 2), (1, 5, 1), (4, 2, 3), (3, 7)], ids=["2d", "1d", "3d", "no-batch"])
def test_coordinate_losses(dtype, name, shape):
    a = torch.randn(shape, generator=gen(3), dtype=dtype)
    t = torch.randn(shape, generator=gen(4), dtype=dtype)
    ours = grads(getattr(D, name), a, t)
    ref = grads(getattr(dsntnn, name), a, t)
    for x, y in zip(ours, ref):
        close(x, y, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [(9,), (8, 8), (5, 9), (12, 3), (4, 5, 6)], ids=["1d", "square", "wide", "tall", "3d"])
@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.5])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("lead", [(2, 3), (1,), ()], ids=["BL", "B", "none"])
def test_make_gauss(dtype, size, sigma, normalize, lead):
    mu = (torch.rand(lead + (len(size),), generator=gen(6), dtype=torch.float64) * 1.6 - 0.8).to(dtype)
    ours = grads(lambda m: D.make_gauss(m, size, sigma, normalize=normalize), mu)
    ref = grads(lambda m: dsntnn.make_gauss(m, size, sigma, normalize=normalize), mu)
    for a, b in zip(ours, ref):
        close(a, b, dtype, 4)  # the gradient sums over the map


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("path", ["fused", "plain"])
@pytest.mark.parametrize("sigma", [0.8, 2.0])
@pytest.mark.parametrize("name", ["kl_reg_losses", "js_reg_losses"])
def test_divergence_regularisers(dtype, shape, path, sigma, name):
    x, mu = logits_like(shape, dtype), mu_for(shape, dtype)
    # mu_t as data (the fused kernel applies on 2D maps) and as a variable (differentiated, plain path)
    ours = grads(lambda t: getattr(D, name)(probs_of(path, t), mu, sigma), x)
    ref = grads(lambda t: getattr(dsntnn, name)(dsntnn.flat_softmax(t), mu, sigma), x)
    for a, b in zip(ours, ref):
        close(a, b, dtype, 4)
    ours = grads(lambda t, m: getattr(D, name)(probs_of(path, t), m, sigma), x, mu)
    ref = grads(lambda t, m: getattr(dsntnn, name)(dsntnn.flat_softmax(t), m, sigma), x, mu)
    for a, b in zip(ours, ref):
        close(a, b, dtype, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("peaked", [False, True])
def test_variance_reg_losses(dtype, shape, sigma, peaked):
    x = logits_like(shape, dtype) * (6 if peaked else 1)  # peaked maps: where E[X^2] - E[X]^2 cancels
    ours = grads(lambda t: D.variance_reg_losses(D.flat_softmax(t), sigma), x)
    ref = grads(lambda t: dsntnn.variance_reg_losses(dsntnn.flat_softmax(t), sigma), x)
    for a, b in zip(ours, ref):
        close(a, b, dtype)


def test_variance_reg_losses_float32_is_float64_rounded():
    # the cases of the issue: a 3D map and a rectangular 2D map in float32
    for shape in ((2, 3, 4, 5, 6), (2, 3, 5, 9)):
        x = torch.randn(shape, generator=gen(8), dtype=torch.float64)
        exact = dsntnn.variance_reg_losses(dsntnn.flat_softmax(x), 1.5)
        ours = D.variance_reg_losses(D.flat_softmax(x.float()), 1.5)
        torch.testing.assert_close(ours, exact.float(), rtol=4e-6, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", ["none", "float", "bool-as-float", "all-zero"])
def test_average_loss(dtype, mask):
    losses = torch.rand(3, 5, generator=gen(9), dtype=dtype)
    m = {"none": None, "float": torch.rand(3, 5, generator=gen(10), dtype=dtype),
         "bool-as-float": (torch.rand(3, 5, generator=gen(11)) > 0.5).to(dtype),
         "all-zero": torch.zeros(3, 5, dtype=dtype)}[mask]
    ours = grads(lambda t: D.average_loss(t, m), losses)
    ref = grads(lambda t: dsntnn.average_loss(t, m), losses)
    for a, b in zip(ours, ref):
        close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [(7,), (48, 64), (5, 9), (4, 5, 6)], ids=["1d", "2d", "rect", "3d"])
@pytest.mark.parametrize("name", ["normalized_to_pixel_coordinates", "pixel_to_normalized_coordinates"])
def test_coordinate_conversions(dtype, size, name):
    c = torch.randn(2, 3, len(size), generator=gen(12), dtype=dtype)
    ours = grads(lambda t: getattr(D, name)(t, size), c)
    ref = grads(lambda t: getattr(dsntnn, name)(t, size), c)
    for a, b in zip(ours, ref):
        close(a, b, dtype, max(size))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("alpha", [0.5, 2.0, 3.0])
def test_sharpen_heatmaps(dtype, shape, alpha):
    # not in dsntnn: fastpose's extra (the DSNT paper's sharpening), against its definition
    x = logits_like(shape, dtype)

    def reference(t):
        p = dsntnn.flat_softmax(t) ** alpha
        return p / p.flatten(2).sum(-1).view(p.shape[:2] + (1,) * (p.dim() - 2))

    ours = grads(lambda t: D.sharpen_heatmaps(D.flat_softmax(t), alpha), x)
    ref = grads(reference, x)
    for a, b in zip(ours, ref):
        close(a, b, dtype, 4)
