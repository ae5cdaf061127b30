"""fastpose.heatmaps: Gaussian targets and argmax decoding against loop references, coordinate
conventions, flips and the flip test."""
import math

import pytest
import torch

from fastpose import dsnt, heatmaps as hm
from fastpose.data import MPII


def _targets_loop(kp, vis, w, h, W, H, sigma):
    n, k = vis.shape
    out = torch.zeros(n, k, h, w)
    for i in range(n):
        for j in range(k):
            u = (kp[i, j, 0].item() + 0.5) * w / W - 0.5
            v = (kp[i, j, 1].item() + 0.5) * h / H - 0.5
            cu, cv = math.floor(u + 0.5), math.floor(v + 0.5)
            if vis[i, j] == 0 or not (-3 * sigma <= cu <= w - 1 + 3 * sigma and -3 * sigma <= cv <= h - 1 + 3 * sigma):
                continue
            for y in range(h):
                for x in range(w):
                    if abs(x - cu) <= 3 * sigma and abs(y - cv) <= 3 * sigma:
                        out[i, j, y, x] = math.exp(-((x - cu) ** 2 + (y - cv) ** 2) / (2 * sigma ** 2))
    return out


@pytest.mark.parametrize("sigma", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("sizes", [((16, 16), (64, 64)), ((12, 16), (48, 64)), ((7, 5), (28, 20))])
def test_gaussian_targets_match_loop(sigma, sizes):
    (w, h), (W, H) = sizes
    kp = torch.rand(3, 5, 2) * torch.tensor([W + 20.0, H + 20.0]) - 10
    vis = torch.randint(0, 3, (3, 5))
    t, wt = hm.gaussian_targets(kp, vis, (w, h), (W, H), sigma=sigma)
    ref = _targets_loop(kp, vis, w, h, W, H, sigma)
    torch.testing.assert_close(t, ref, rtol=1e-5, atol=1e-6)
    assert ((wt == 0) | (vis > 0)).all()
    assert t.dtype == torch.float32 and t.shape == (3, 5, h, w)


def test_gaussian_peak_and_cut():
    kp = torch.tensor([[[33.0, 17.0]]])  # stride 4: heatmap (8.125, 4.125) -> centre pixel (8, 4)
    t, wt = hm.gaussian_targets(kp, torch.tensor([[2]]), (16, 16), (64, 64), sigma=1.0)
    assert t[0, 0, 4, 8] == 1.0 and wt.item() == 1.0
    assert t[0, 0, 4, 12] == 0 and t[0, 0, 4, 11] > 0  # cut beyond 3 sigma
    sub, _ = hm.gaussian_targets(kp, torch.tensor([[2]]), (16, 16), (64, 64), sigma=1.0, subpixel=True)
    assert 0.9 < sub.max() < 1.0
    off, wt = hm.gaussian_targets(torch.tensor([[[500.0, 5.0]]]), torch.tensor([[2]]), (16, 16), (64, 64))
    assert off.abs().sum() == 0 and wt.item() == 0
    single, w1 = hm.gaussian_targets(kp[0], torch.tensor([2]), (16, 16), (64, 64))
    assert single.shape == (1, 16, 16) and w1.shape == (1,)


def _decode_loop(heat, shift):
    n, k, h, w = heat.shape
    out = torch.zeros(n, k, 2)
    for i in range(n):
        for j in range(k):
            idx = int(heat[i, j].flatten().argmax())
            y, x = divmod(idx, w)
            px, py = float(x), float(y)
            if 0 < x < w - 1:
                d = heat[i, j, y, x + 1] - heat[i, j, y, x - 1]
                px += shift * (1 if d > 0 else -1 if d < 0 else 0)
            if 0 < y < h - 1:
                d = heat[i, j, y + 1, x] - heat[i, j, y - 1, x]
                py += shift * (1 if d > 0 else -1 if d < 0 else 0)
            out[i, j] = torch.tensor([px, py])
    return out


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 4, 5, 9), (3, 2, 1, 7)])
def test_decode_argmax_matches_loop(shape):
    heat = torch.randn(shape)
    coords, maxvals = hm.decode_argmax(heat)
    torch.testing.assert_close(coords, _decode_loop(heat, 0.25))
    torch.testing.assert_close(maxvals, heat.flatten(2).amax(-1))
    c0, _ = hm.decode_argmax(heat, shift=0)
    torch.testing.assert_close(c0, _decode_loop(heat, 0.0))


def test_targets_decode_round_trip():
    W = H = 64
    kp = torch.rand(4, 16, 2) * 60 + 2
    vis = torch.full((4, 16), 2)
    t, _ = hm.gaussian_targets(kp, vis, (16, 16), (W, H), sigma=1.0)
    dec, _ = hm.decode_heatmaps(t, (W, H))
    # rounding to the heatmap grid costs at most half a heatmap pixel (2 px) per axis
    assert (dec - kp).abs().max() <= 2.0 + 1e-4


def test_coordinate_conversions():
    c = torch.rand(2, 5, 2) * 2 - 1
    px = hm.normalized_to_pixels(c, (64, 48))
    torch.testing.assert_close(px, dsnt.normalized_to_pixel_coordinates(c, (48, 64)))
    torch.testing.assert_close(hm.pixels_to_normalized(px, (64, 48)), c)
    p = torch.rand(3, 2) * 50
    torch.testing.assert_close(hm.heatmap_to_image(hm.image_to_heatmap(p, 4), 4), p)
    # pixel centres line up: heatmap pixel 0 at stride 4 covers image pixels 0..3, centre 1.5
    assert hm.heatmap_to_image(torch.zeros(2), 4).tolist() == [1.5, 1.5]


def test_flip_heatmaps_matches_targets_of_flipped_keypoints():
    W = H = 64
    kp = torch.rand(2, 16, 2) * 60 + 2
    kp[..., 0] = kp[..., 0].round() + 0.3  # stay away from rounding ties
    vis = torch.full((2, 16), 2)
    t, _ = hm.gaussian_targets(kp, vis, (16, 16), (W, H), sigma=1.0)
    kpf = hm.flip_coords(kp, MPII, width=W)
    tf, _ = hm.gaussian_targets(kpf, vis, (16, 16), (W, H), sigma=1.0)
    torch.testing.assert_close(hm.flip_heatmaps(t, MPII), tf)
    assert torch.equal(hm.flip_heatmaps(hm.flip_heatmaps(t, "mpii"), "mpii"), t)
    shifted = hm.flip_heatmaps(t, MPII, shift=1)
    assert torch.equal(shifted[..., 1:], hm.flip_heatmaps(t, MPII)[..., :-1])


def test_flip_test_heatmaps_and_dsnt():
    perm = MPII.flip_index
    x = torch.randn(2, 3, 32, 32)

    class Symmetric(torch.nn.Module):  # an equivariant "model": flip test changes nothing
        def forward(self, images):
            h = torch.nn.functional.avg_pool2d(images, 2)[:, :1].expand(-1, 16, -1, -1)
            h = h + h.flip(-1)
            return [h * 0, h]

    out = hm.flip_test(Symmetric(), x, perm)
    torch.testing.assert_close(out, Symmetric()(x)[-1])

    class Dsnt(torch.nn.Module):
        def forward(self, images):
            logits = torch.nn.functional.avg_pool2d(images, 2)[:, :1].expand(-1, 16, -1, -1).contiguous()
            return dsnt.dsnt(dsnt.flat_softmax(logits)), logits

    coords, logits = hm.flip_test(Dsnt(), x, perm)
    c1, _ = Dsnt()(x)
    c2, _ = Dsnt()(x.flip(-1))
    torch.testing.assert_close(coords, (c1 + hm.flip_coords(c2, perm)) / 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="keypoints"):
        hm.gaussian_targets(torch.zeros(3), torch.zeros(3), 16, 64)
    with pytest.raises(ValueError, match="visibility"):
        hm.gaussian_targets(torch.zeros(2, 3, 2), torch.zeros(2, 4), 16, 64)
    with pytest.raises(ValueError, match="sigma"):
        hm.gaussian_targets(torch.zeros(2, 3, 2), torch.zeros(2, 3), 16, 64, sigma=0)
    with pytest.raises(ValueError, match="heatmaps"):
        hm.decode_argmax(torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match="flip_index"):
        hm.flip_heatmaps(torch.zeros(1, 3, 4, 4), [0, 0, 1])
