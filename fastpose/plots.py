"""PNG plots for training runs: loss and PCK curves, and skeletons drawn on images (matplotlib, Agg)."""
import numpy as np
import torch

from .data import skeletons


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on training machines
    import matplotlib.pyplot as plt

    return plt


def training_curves(history, path, title="", pck_key="pck@0.2", others=None):
    """Loss (log scale) and validation PCK per epoch from ``metrics.json`` records; ``others`` is an
    optional {label: history} to draw more runs on the same axes (the demo's side-by-side plot)."""
    plt = _plt()
    runs = {title or "run": history, **(others or {})}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, hist in runs.items():
        ep = [r["epoch"] for r in hist]
        ax1.plot(ep, [r["loss"] for r in hist], marker="o", label=label)
        if all(pck_key in r for r in hist):
            ax2.plot(ep, [r[pck_key] for r in hist], marker="o", label=label)
    ax1.set_yscale("log")
    ax1.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax2.set(xlabel="epoch", ylabel=pck_key, title=f"validation {pck_key}", ylim=(0, 1))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_skeleton(ax, keypoints, skeleton, visibility=None, color="yellow", joint_color="red", lw=2):
    """Limbs and joints of one pose (K, 2) on a matplotlib axis; joints with visibility 0 are skipped."""
    skel = skeletons.get(skeleton)
    kp = np.asarray(keypoints, dtype=np.float64)
    vis = np.ones(len(kp), bool) if visibility is None else np.asarray(visibility) > 0
    for a, b in skel.limbs:
        if vis[a] and vis[b]:
            ax.plot([kp[a, 0], kp[b, 0]], [kp[a, 1], kp[b, 1]], color=color, lw=lw)
    ax.scatter(kp[vis, 0], kp[vis, 1], s=12, c=joint_color, zorder=3)


def _hwc(image):
    img = image.detach().float().cpu()
    if img.dim() == 3 and img.shape[0] in (1, 3):
        img = img.permute(1, 2, 0)
    return img.clamp(0, 1).numpy()


def prediction_grid(images, preds, skeleton, path, gt=None, visibility=None, cols=4, title=None):
    """Predicted skeletons (yellow) over images (N, 3, H, W); with ``gt``, ground-truth joints as green dots."""
    plt = _plt()
    n = len(images)
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = _hwc(images[i])
        ax.imshow(img, extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
        if gt is not None:
            v = np.ones(gt.shape[1], bool) if visibility is None else visibility[i].numpy() > 0
            g = torch.as_tensor(gt[i]).numpy()
            ax.scatter(g[v, 0], g[v, 1], s=10, c="lime", marker="x", zorder=4)
        draw_skeleton(ax, torch.as_tensor(preds[i]).numpy(), skeleton)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_on_image(image, keypoints, skeleton, path, visibility=None):
    """One image (3, H, W) in [0, 1] with the skeleton drawn, written as a PNG at the image's size."""
    plt = _plt()
    img = _hwc(image)
    h, w = img.shape[:2]
    dpi = 100
    scale = max(1.0, 256 / max(h, w))
    fig = plt.figure(figsize=(w * scale / dpi, h * scale / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(img, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.axis("off")
    draw_skeleton(ax, keypoints, skeleton, visibility, lw=max(1, min(h, w) / 128))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
