"""The training loop: losses, a tiny end-to-end run with checkpoints/metrics/plots, resume, overfitting
a batch, evaluation, checkpoint loading, and DistributedDataParallel with 2 CPU processes (gloo)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from fastpose import heatmaps as hm
from fastpose import train
from fastpose.data import SyntheticPoses

TINY_HG = dict(model="hourglass", model_kwargs=dict(stacks=2, features=16, depth=2))
TINY_BIN = dict(model="binary_hpm_hourglass", head="dsnt", model_kwargs=dict(stacks=1, features=16, depth=2))


def _cfg(tmp_path, **kw):
    base = dict(input_size=(32, 32), train_samples=16, val_samples=8, epochs=1, batch_size=4, quiet=True,
                out=str(tmp_path / "run"), plots=False, **TINY_HG)
    base.update(kw)
    return train.TrainConfig(**base)


def _batch(n=4, size=32):
    ds = SyntheticPoses(n, image_size=size, seed=9)
    return train._collate([ds[i] for i in range(n)])


@pytest.mark.parametrize("spec", [TINY_HG, TINY_BIN], ids=["heatmap", "dsnt"])
def test_loss_is_finite_and_ignores_unlabelled_joints(tmp_path, spec):
    cfg = _cfg(tmp_path, **spec).validate()
    model = train.build_model(cfg, 16)
    batch = _batch()
    loss = train.compute_loss(cfg, model(batch["image"]), batch, cfg.input_size)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    # moving an unlabelled joint changes nothing
    b2 = dict(batch)
    b2["visibility"] = batch["visibility"].clone()
    b2["visibility"][:, 3] = 0
    b3 = dict(b2)
    b3["keypoints"] = b2["keypoints"].clone()
    b3["keypoints"][:, 3] += 5.0
    with torch.no_grad():
        out = model(batch["image"])
        assert torch.equal(train.compute_loss(cfg, out, b2, cfg.input_size), train.compute_loss(cfg, out, b3, cfg.input_size))


def test_heatmap_loss_is_zero_at_the_targets(tmp_path):
    cfg = _cfg(tmp_path).validate()
    batch = _batch()
    t, _ = hm.gaussian_targets(batch["keypoints"], batch["visibility"], (8, 8), (32, 32), sigma=cfg.sigma)
    assert train.compute_loss(cfg, [t, t], batch, (32, 32)).item() == 0


def test_overfits_one_batch(tmp_path):
    cfg = _cfg(tmp_path, lr=3e-3).validate()
    torch.manual_seed(0)
    model = train.build_model(cfg, 16)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batch = _batch(8)
    losses = []
    for _ in range(40):
        loss = train.compute_loss(cfg, model(batch["image"]), batch, cfg.input_size)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def test_train_end_to_end_resume_and_eval(tmp_path):
    cfg = _cfg(tmp_path, epochs=2, plots=True)
    hist = train.train(cfg)
    out = tmp_path / "run"
    assert [r["epoch"] for r in hist] == [1, 2]
    for r in hist:
        for key in ("loss", "pck@0.2", "pck@0.2_torso", "pckh@0.5", "mean_px_error", "images_per_s", "lr"):
            assert key in r and r[key] == r[key], key  # present and not NaN
        assert 0 <= r["pck@0.2"] <= 1
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(hist))
    for name in ("last.pt", "best.pt", "curves.png", "predictions.png"):
        assert (out / name).stat().st_size > 0, name
    # resume continues at epoch 3 with the saved history
    hist3 = train.train(_cfg(tmp_path, epochs=3, resume="auto"))
    assert [r["epoch"] for r in hist3] == [1, 2, 3] and hist3[:2] == hist
    model, cfg2, ckpt = train.load_checkpoint(str(out / "last.pt"))
    assert ckpt["epoch"] == 2 and cfg2.epochs == 3 and not model.training
    res, pred = train.evaluate(model, train.build_dataset(cfg2, "val"), cfg2, torch.device("cpu"))
    assert pred.shape == (8, 16, 2) and res["pck@0.2"] == pytest.approx(hist3[-1]["pck@0.2"])
    res_flip, _ = train.evaluate(model, train.build_dataset(cfg2, "val"), train.TrainConfig(**{**cfg2.__dict__, "flip_test": True}),
                                 torch.device("cpu"))
    assert 0 <= res_flip["pck@0.2"] <= 1


def test_binary_dsnt_run_clips_latent_weights(tmp_path):
    hist = train.train(_cfg(tmp_path, epochs=1, **{**TINY_BIN, "model_kwargs": TINY_BIN["model_kwargs"]}, lr=0.5))
    model, _, _ = train.load_checkpoint(str(tmp_path / "run" / "last.pt"))
    from fastpose.nn import XNORConv2d

    w = [m.weight for m in model.modules() if isinstance(m, XNORConv2d)]
    assert w and all(float(x.detach().abs().max()) <= 1.0 for x in w)
    assert "pck@0.2" in hist[0]


def test_rmsprop_and_lr_steps(tmp_path):
    hist = train.train(_cfg(tmp_path, optimizer="rmsprop", lr=1e-3, lr_steps=(1, 2), lr_gamma=0.5, max_batches=1,
                             epochs=3))
    assert [r["lr"] for r in hist] == pytest.approx([1e-3, 5e-4, 2.5e-4])  # the lr each epoch ran at


def test_config_errors(tmp_path):
    for kw, msg in ((dict(head="x"), "head"), (dict(optimizer="sgd"), "optimizer"), (dict(model="nope"), "model"),
                    (dict(data="coco"), "data"), (dict(data="imagenet:/x"), "data")):
        with pytest.raises(ValueError, match=msg):
            _cfg(tmp_path, **kw).validate()
    with pytest.raises(FileNotFoundError, match="resume"):
        train.train(_cfg(tmp_path, resume=str(tmp_path / "missing.pt")))
    with pytest.raises(FileNotFoundError):
        train.load_checkpoint(str(tmp_path / "missing.pt"))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a fastpose training checkpoint"):
        train.load_checkpoint(str(tmp_path / "other.pt"))


_DDP_SCRIPT = r"""
import sys, torch, torch.distributed as dist
from fastpose import train
out = sys.argv[1]
cfg = train.TrainConfig(model="hourglass", model_kwargs=dict(stacks=1, features=16, depth=2), input_size=(32, 32),
                        train_samples=32, val_samples=8, epochs=2, batch_size=8, quiet=True, plots=False, out=out)
# 1. train() creates the process group and must destroy it before returning
hist, model = train.train(cfg, return_model=True)
rank = int(__import__("os").environ["RANK"])
torch.save(torch.cat([p.detach().flatten() for p in model.parameters()]), f"{out}/params{rank}.pt")
owned_left = dist.is_initialized()
# (A group the caller created is kept: test_process_group_torn_down_on_every_exit_path, in process.
# Re-initialising a group here after train() destroyed its own reuses torchrun's store keys and can hang.)
# one file per rank (the two processes' stdout interleave), written last: a rank that got here is done
with open(f"{out}/rank{rank}.txt", "w") as f:
    f.write(f"epochs {len(hist)} owned_left {owned_left}")
"""


def test_ddp_two_processes_gloo(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: the rendezvous store binds port 0, so concurrent runs never collide on a port.
    # The limit is generous: on a loaded 2-core machine the two ranks share one core with the others.
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "--monitor-interval", "0.5", str(script), str(out)],
                          capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "terminate called" not in proc.stderr, proc.stderr[-4000:]
    for rank in (0, 1):
        assert (out / f"rank{rank}.txt").read_text() == "epochs 2 owned_left False", rank
    # DDP keeps the replicas identical
    p0, p1 = (torch.load(out / f"params{r}.pt") for r in (0, 1))
    assert p0.numel() > 0 and torch.equal(p0, p1)
    hist = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in hist] == [1, 2]
    # 32 samples, global batch 8 over 2 processes: 4 steps per epoch, 32 images counted per epoch
    assert all(r["images_per_s"] > 0 for r in hist)


_REAL_INIT_PG = torch.distributed.init_process_group


def _single_process_group(store_file):
    _REAL_INIT_PG("gloo", init_method=f"file://{store_file}", rank=0, world_size=1)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_process_group_torn_down_on_every_exit_path(tmp_path, monkeypatch, exc):
    import torch.distributed as dist

    # train() sees WORLD_SIZE > 1 and creates the group itself (here a 1-process gloo group on a file store)
    monkeypatch.setenv("WORLD_SIZE", "2")
    stores = iter(tmp_path / f"store{i}" for i in range(10))  # a fresh file store for every group
    monkeypatch.setattr(train.dist, "init_process_group", lambda backend: _single_process_group(next(stores)))

    def boom(cfg, split):
        raise exc("interrupted")

    with monkeypatch.context() as m:
        m.setattr(train, "build_dataset", boom)
        with pytest.raises(exc):
            train.train(_cfg(tmp_path))
    assert not dist.is_initialized()
    hist = train.train(_cfg(tmp_path, max_batches=1))  # normal end
    assert len(hist) == 1 and not dist.is_initialized()
    # a group the caller created survives train(), on success and on error
    _single_process_group(tmp_path / "caller_store")
    try:
        with monkeypatch.context() as m:
            m.setattr(train, "build_dataset", boom)
            with pytest.raises(exc):
                train.train(_cfg(tmp_path))
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_example_script_runs():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    try:
        import train_synthetic
    finally:
        sys.path.pop(0)
    pck = train_synthetic.main(["--steps", "3", "--batch-size", "4", "--size", "32", "--features", "16"])
    assert 0 <= pck <= 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", [TINY_HG, TINY_BIN], ids=["heatmap", "dsnt"])
def test_train_cuda_amp(tmp_path, spec):
    hist = train.train(_cfg(tmp_path, device="cuda", amp=True, epochs=2, **spec))
    assert len(hist) == 2 and all(r["loss"] == r["loss"] for r in hist)
    model, cfg, _ = train.load_checkpoint(str(tmp_path / "run" / "last.pt"), device="cuda")
    res, _ = train.evaluate(model, train.build_dataset(cfg, "val"), cfg, torch.device("cuda"))
    assert 0 <= res["pck@0.2"] <= 1
