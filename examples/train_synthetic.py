"""A training loop of your own on fastpose's pieces: SyntheticPoses, a model from the zoo with a DSNT
head, the fused softmax + DSNT + JS loss, and PCK on held-out images.

    python examples/train_synthetic.py --steps 300

(`python -m fastpose train` does the same with checkpoints, logs, plots, DDP and AMP.)
"""
import argparse

import torch

import fastpose
from fastpose import heatmaps, metrics
from fastpose.data import SyntheticPoses


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--features", type=int, default=64)
    args = p.parse_args(argv)

    size = (args.size, args.size)
    train_set = SyntheticPoses(args.steps * args.batch_size, image_size=size, seed=0)  # fresh images every step
    val_set = SyntheticPoses(128, image_size=size, seed=1)
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size)
    model = fastpose.models.create("hourglass", head="dsnt", stacks=1, features=args.features, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=2.5e-3)

    model.train()
    for step, batch in enumerate(loader):
        coords, logits = model(batch["image"])
        target = heatmaps.pixels_to_normalized(batch["keypoints"], size)
        mask = (batch["visibility"] > 0).float()
        loss = 0.0
        for lg in logits:  # every stack: Euclidean + Jensen-Shannon, fused in one kernel
            c, js = fastpose.ops.softmax_dsnt_with_reg(lg, target.clamp(-1, 1), sigma_t=1.0, kind="js")
            loss = loss + (((c - target).norm(dim=-1) + js) * mask).sum() / mask.sum().clamp(min=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.4f}")

    model.eval()
    batch = next(iter(torch.utils.data.DataLoader(val_set, batch_size=len(val_set))))
    with torch.no_grad():
        coords, _ = model(batch["image"])
    pred = heatmaps.normalized_to_pixels(coords[-1], size)
    gt, vis = batch["keypoints"], batch["visibility"]
    pck = metrics.pck(pred, gt, vis, metrics.bbox_size(gt, vis), alpha=0.2).mean
    print(f"held-out PCK@0.2 (person-size normaliser): {pck:.3f}")
    return pck


if __name__ == "__main__":
    main()
