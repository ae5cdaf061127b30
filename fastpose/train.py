"""Training and evaluation: ``python -m fastpose train|eval|predict`` and the functions behind them.

One loop serves every model of the zoo with two losses:
- heatmap head: MSE against Gaussian targets (``fastpose.heatmaps.gaussian_targets``) on every stack or
  stage (intermediate supervision), masked by the joints' weights;
- DSNT head (``head="dsnt"``): the Euclidean distance between DSNT coordinates and the targets on the
  normalised grid plus ``js_weight`` times the Jensen-Shannon regulariser (sigma_t in heatmap pixels),
  computed by the fused ``fastpose.ops.softmax_dsnt_with_reg`` on every stack, masked by visibility.

Adam or RMSprop with a step schedule (``lr_steps`` epochs, factor ``lr_gamma``); AMP (float16 autocast
and a gradient scaler) on CUDA; checkpoints (``DIR/last.pt`` every epoch, ``DIR/best.pt`` at the best
validation PCK) that ``resume`` continues from; ``DIR/metrics.json`` with one record per epoch; PNG plots
(loss and PCK curves, predictions on validation images). Launched by ``torchrun`` the loop runs
DistributedDataParallel (gloo on CPU, nccl on CUDA): each process takes ``batch_size / world_size``
samples of a DistributedSampler shard; rank 0 evaluates, logs and writes files.
"""
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from . import heatmaps as hm
from . import metrics, models
from .data import skeletons
from .nn import XNORConv2d, clip_binary_weights


@dataclass
class TrainConfig:
    """Everything a run needs; saved in every checkpoint (``python -m fastpose train --help`` lists them)."""

    model: str = "hourglass"
    model_kwargs: dict = field(default_factory=dict)
    head: str = "heatmap"                 # "heatmap" or "dsnt"
    backend: str = "fastpose"
    data: str = "synthetic"               # "synthetic", "coco:PATH" or "mpii:PATH"
    skeleton: str = "mpii"                # synthetic data: "mpii" or "coco"
    input_size: tuple = (64, 64)          # (W, H)
    train_samples: int = 8000             # synthetic only
    val_samples: int = 500                # synthetic only (and a cap for the others: 0 = all)
    epochs: int = 10
    batch_size: int = 32                  # global batch: split over DDP processes
    optimizer: str = "adam"               # "adam" or "rmsprop"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_steps: tuple = ()                  # epochs at which lr *= lr_gamma
    lr_gamma: float = 0.1
    warmup_iters: int = 0                 # linear lr warm-up over the first iterations
    sigma: float = 2.0                    # Gaussian target sigma, heatmap pixels (2: HRNet/hourglass at 64x64)
    js_weight: float = 1.0                # DSNT: weight of the JS regulariser
    sigma_t: float = 1.0                  # DSNT: regulariser's target sigma, heatmap pixels
    augment: bool = True                  # flip (all data) + rotation/scale (COCO/MPII) augmentation
    flip_test: bool = False
    pck_alpha: float = 0.2
    channels_last: bool = True           # oneDNN's faster path on the CPU, tensor-core layout on CUDA
    amp: bool = True                      # float16 autocast on CUDA (ignored on the CPU)
    device: str = "auto"
    workers: int = 0
    threads: int = 0                      # torch threads per process; 0 = cores / local processes
    seed: int = 0
    out: str = "runs/fastpose"
    resume: str = ""                      # path of a checkpoint, or "auto" for OUT/last.pt
    plots: bool = True
    quiet: bool = False
    clip_binary: float = 1.0              # binary models: clip latent weights to +-this after each step
    max_batches: int = 0                  # stop each epoch after this many batches (0 = all): smoke tests

    def validate(self):
        if self.head not in ("heatmap", "dsnt"):
            raise ValueError(f"head must be 'heatmap' or 'dsnt', got {self.head!r}")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {self.optimizer!r}")
        if self.model not in models.names():
            raise ValueError(f"model must be one of {models.names()}, got {self.model!r}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        kind = self.data.split(":", 1)[0]
        if kind not in ("synthetic", "coco", "mpii") or (kind != "synthetic" and ":" not in self.data):
            raise ValueError(f"data must be 'synthetic', 'coco:PATH' or 'mpii:PATH', got {self.data!r}")
        self.input_size = tuple(int(s) for s in self.input_size)
        self.lr_steps = tuple(int(s) for s in self.lr_steps)
        return self


# ----------------------------------------------------------------------------------------------- data

def data_skeleton(cfg):
    kind = cfg.data.split(":", 1)[0]
    return skeletons.get({"coco": "coco", "mpii": "mpii"}.get(kind, cfg.skeleton))


def build_dataset(cfg, split):
    """The dataset of ``cfg.data`` for split "train" or "val", transformed to ``cfg.input_size``."""
    from . import data

    kind, _, path = cfg.data.partition(":")
    train = split == "train"
    skel = data_skeleton(cfg)
    if kind == "synthetic":
        # Each figure is already drawn at a random scale, rotation and position: only flips are added.
        tf = RandomFlip(skel) if train and cfg.augment else None
        n = cfg.train_samples if train else cfg.val_samples
        # Held-out images come from another seed than the training ones.
        return data.SyntheticPoses(n, image_size=cfg.input_size, skeleton=skel, seed=cfg.seed * 2 + (0 if train else 1),
                                   transform=tf, cache=True)
    tf = data.TopDownAffine(cfg.input_size, skeleton=skel, train=train and cfg.augment)
    if kind == "coco":
        name = "train2017" if train else "val2017"
        ds = data.COCOKeypoints(os.path.join(path, "annotations", f"person_keypoints_{name}.json"),
                                os.path.join(path, name), transform=tf)
    else:
        ds = data.MPIIAnnotations(os.path.join(path, "annot", "train.json" if train else "valid.json"),
                                  os.path.join(path, "images"), transform=tf)
    if not train and cfg.val_samples and len(ds) > cfg.val_samples:
        ds = torch.utils.data.Subset(ds, range(cfg.val_samples))
    return ds


class RandomFlip:
    """Horizontal flip with probability ``p``, swapping left and right joints (whole image, no crop)."""

    def __init__(self, skeleton, p=0.5):
        self.skeleton = skeletons.get(skeleton)
        self.p = p

    def __call__(self, sample):
        from .data import flip_keypoints, transform_boxes, transform_points

        if torch.rand(()) >= self.p:
            return sample
        w = sample["image"].shape[-1]
        mirror = torch.tensor([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
        out = dict(sample, image=sample["image"].flip(-1))
        out["keypoints"], out["visibility"] = flip_keypoints(sample["keypoints"], sample["visibility"], w,
                                                             self.skeleton)
        for key in ("head_box", "bbox"):
            if key in sample:
                out[key] = transform_boxes(sample[key], mirror)
        if "center" in sample:
            out["center"] = transform_points(sample["center"], mirror)
        return out


def _collate(samples):
    out = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


# ---------------------------------------------------------------------------------------------- model

def build_model(cfg, num_joints):
    kw = dict(cfg.model_kwargs)
    kw.setdefault("num_joints", num_joints)
    return models.create(cfg.model, backend=cfg.backend, head=cfg.head if cfg.head == "dsnt" else None, **kw)


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def compute_loss(cfg, output, batch, image_size):
    """The training loss of one batch (see the module docstring), a scalar tensor."""
    kp, vis = batch["keypoints"], batch["visibility"]
    if cfg.head == "dsnt":
        from .ops import softmax_dsnt_with_reg

        _, logits = output
        logits = _as_list(logits)
        target = hm.pixels_to_normalized(kp.float(), image_size)
        mask = (vis > 0).float()
        # A joint off the image has no meaningful target on the normalised grid: leave it out.
        mask = mask * (target.abs() <= 1).all(-1).float()
        denom = mask.sum().clamp(min=1)
        loss = 0.0
        for lg in logits:
            # The regulariser's target Gaussian lives on the heatmap: clamp targets onto its extent.
            coords, reg = softmax_dsnt_with_reg(lg.float(), target.clamp(-1, 1), sigma_t=cfg.sigma_t, kind="js")
            eucl = torch.linalg.vector_norm(coords - target, dim=-1)
            loss = loss + ((eucl + cfg.js_weight * reg) * mask).sum() / denom
        return loss
    outs = _as_list(output)
    h, w = outs[0].shape[-2:]
    targets, weights = hm.gaussian_targets(kp, vis, (w, h), image_size, sigma=cfg.sigma)
    loss = 0.0
    for o in outs:
        err = (o.float() - targets) ** 2 * weights[..., None, None]
        loss = loss + err.mean() * 0.5 * 1000  # x1000: keeps the loss readable for peak-1 targets
    return loss


# ------------------------------------------------------------------------------------------ inference

@torch.no_grad()
def predict_batch(model, images, head, flip_index=None, image_size=None):
    """Image pixel coordinates (N, K, 2) and confidences (N, K) for a batch of images (N, 3, H, W)."""
    if flip_index is not None:
        out = hm.flip_test(model, images, flip_index)
        out = out if isinstance(out, tuple) else [out]
    else:
        out = model(images)
    size = image_size or (images.shape[-1], images.shape[-2])
    if head == "dsnt":
        coords, logits = out
        coords, logits = _as_list(coords)[-1], _as_list(logits)[-1]
        return hm.normalized_to_pixels(coords.float(), size), hm.soft_argmax_confidence(logits)
    return hm.decode_heatmaps(_as_list(out)[-1].float(), size)


@torch.no_grad()
def evaluate(model, dataset, cfg, device, batch_size=64, max_batches=0):
    """Validation metrics of ``model`` on ``dataset``; returns (metrics dict, predictions (N, K, 2)).

    - ``pck@<alpha>``: PCK at ``cfg.pck_alpha`` normalised by the person's size, the longer side of the
      tight box of its labelled keypoints (``metrics.bbox_size``), a joint correct at distance <= alpha L,
      pooled over all labelled joints;
    - MPII layout: ``pck@0.2_torso`` (normalised by the left-shoulder to right-hip distance, samples with
      both labelled) and ``pckh@0.5`` where head boxes are known (HRNet's convention, ``metrics.pckh``);
    - ``mean_px_error`` over labelled joints. All in the pixels of the (cropped) input images.
    """
    model.eval()
    skel = data_skeleton(cfg)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=cfg.workers,
                                         collate_fn=_collate)
    preds, confs, gts, vis, heads, affines = [], [], [], [], [], []
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        images = batch["image"].to(device)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(cfg, device):
            p, c = predict_batch(model, images, cfg.head, skel.flip_index if cfg.flip_test else None)
        preds.append(p.float().cpu())
        confs.append(c.float().cpu())
        gts.append(batch["keypoints"].float())
        vis.append(batch["visibility"])
        heads.append(batch["head_box"].float())
        if "affine" in batch:
            affines.append(batch["affine"])
    if not preds:
        return {}, torch.empty(0, skel.num_joints, 2)
    pred, gt, v = torch.cat(preds), torch.cat(gts), torch.cat(vis)
    head = torch.cat(heads)
    out = {}
    def usable(norm):  # samples whose normaliser is undefined (e.g. one labelled joint) are left out
        ok = torch.isfinite(norm) & (norm > 0)
        return torch.where(ok[:, None], v, torch.zeros_like(v)), torch.where(ok, norm, torch.ones_like(norm))

    vb, norm = usable(torch.as_tensor(metrics.bbox_size(gt, v)))
    out[f"pck@{cfg.pck_alpha:g}"] = float(metrics.pck(pred, gt, vb, norm, alpha=cfg.pck_alpha).mean)
    if skel is skeletons.MPII:
        both = (v[:, [13, 2]] > 0).all(-1)
        vt, norm = usable(torch.where(both, torch.as_tensor(metrics.torso_diameter(gt, skel)), torch.nan))
        out["pck@0.2_torso"] = float(metrics.pck(pred, gt, vt, norm, alpha=0.2).mean)
        if torch.isfinite(head).all():
            out["pckh@0.5"] = float(metrics.pckh(pred, gt, v, head, threshold=0.5).mean)
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    if affines and hasattr(base, "ann_file") and hasattr(base, "ann_ids"):
        out.update(_coco_ap(base, dataset, pred, torch.cat(confs), torch.cat(affines)))
    labelled = v > 0
    out["mean_px_error"] = float((pred - gt).norm(dim=-1)[labelled].mean()) if labelled.any() else float("nan")
    return out, pred


def _coco_ap(base, dataset, pred, conf, affine):
    """COCO keypoint AP of top-down predictions on ground-truth person boxes, in source-image pixels
    (fastpose.metrics.coco_keypoint_ap, cocoeval's rules), over the images the evaluated persons are in."""
    from .data import invert_affine, transform_points

    src = transform_points(pred, invert_affine(affine)).to(torch.float64)
    indices = dataset.indices if isinstance(dataset, torch.utils.data.Subset) else range(len(dataset))
    image_ids = [int(base.image_ids[i]) for i in indices][: len(src)]
    results = [{"image_id": iid, "category_id": 1, "score": float(c.mean()),
                "keypoints": torch.cat([p, c[:, None].to(p.dtype)], 1).flatten().tolist()}
               for iid, p, c in zip(image_ids, src, conf)]
    with open(base.ann_file) as f:
        wanted = set(image_ids)
        gts = [a for a in json.load(f)["annotations"] if a["image_id"] in wanted and "keypoints" in a]
    ap = metrics.coco_keypoint_ap(results, gts, image_ids=sorted(wanted))
    return {f"coco_{k}": float(v) for k, v in ap.items()}


# ------------------------------------------------------------------------------------------- training

def _autocast(cfg, device):
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


def _device(cfg):
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _dist_init(device):
    """(rank, world, device, owned): owned is True when this call created the process group, which
    the caller must then destroy (a group left alive at interpreter exit lets gloo's threads abort the
    process with "terminate called without an active exception")."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device, False
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        return dist.get_rank(), dist.get_world_size(), device, owned
    except BaseException:
        if owned:
            dist.destroy_process_group()
        raise


def _dist_teardown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _optimizer(cfg, params):
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path, model, cfg, epoch, optimizer=None, scheduler=None, scaler=None, history=()):
    state = {"config": dataclasses.asdict(cfg), "model": _unwrap(model).state_dict(), "epoch": epoch,
             "history": list(history), "fastpose_version": __import__("fastpose").__version__}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-save never leaves a truncated checkpoint behind


def load_checkpoint(path, device="cpu"):
    """(model, config, checkpoint dict) from a checkpoint written by ``train``; the model in eval mode."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path!r} is not a fastpose training checkpoint (no 'config'/'model' entries)")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in fields}).validate()
    model = build_model(cfg, data_skeleton(cfg).num_joints if "num_joints" not in cfg.model_kwargs
                        else cfg.model_kwargs["num_joints"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, ckpt


def train(cfg, return_model=False):
    """Train ``cfg.model`` on ``cfg.data``; returns the list of per-epoch metric records (every rank gets
    the full list), and the trained model too with ``return_model=True``.

    Under ``torchrun`` the process group is created here unless one exists already; one created here
    is destroyed before ``train`` returns or raises, one the caller created is left to the caller."""
    cfg = cfg.validate()
    device = _device(cfg)
    rank, world, device, owned = _dist_init(device)
    try:
        return _train(cfg, return_model, rank, world, device)
    finally:  # every exit path: normal end, exception, KeyboardInterrupt
        if owned:
            _dist_teardown()


def _train(cfg, return_model, rank, world, device):
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif world > 1 and device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    torch.manual_seed(cfg.seed)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes {world}")
    is_main = rank == 0
    if is_main:
        os.makedirs(cfg.out, exist_ok=True)

    skel = data_skeleton(cfg)
    train_set, val_set = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    model = build_model(cfg, skel.num_joints).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(cfg, model.parameters())
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_steps), gamma=cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    start_epoch, history = 0, []
    resume = os.path.join(cfg.out, "last.pt") if cfg.resume == "auto" else cfg.resume
    if resume and os.path.isfile(resume):
        ckpt = torch.load(resume, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, history = ckpt["epoch"] + 1, list(ckpt.get("history", []))
        if is_main and not cfg.quiet:
            print(f"resumed from {resume} at epoch {start_epoch}")
    elif cfg.resume and cfg.resume != "auto":
        raise FileNotFoundError(f"resume checkpoint {cfg.resume!r} does not exist")

    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp_model = model
    sampler = (torch.utils.data.distributed.DistributedSampler(train_set, num_replicas=world, rank=rank,
                                                               shuffle=True, seed=cfg.seed, drop_last=True)
               if world > 1 else None)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size // world, shuffle=sampler is None,
                                         sampler=sampler, num_workers=cfg.workers, collate_fn=_collate,
                                         drop_last=True, generator=gen, persistent_workers=cfg.workers > 0)
    binary = any(isinstance(m, XNORConv2d) for m in model.modules())
    from tqdm.auto import tqdm

    best = max((r.get(f"pck@{cfg.pck_alpha:g}", -1) for r in history), default=-1.0)
    it = start_epoch * len(loader)
    for epoch in range(start_epoch, cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        ddp_model.train()
        t0, seen, loss_sum, nb = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(loader, desc=f"{cfg.model} epoch {epoch + 1}/{cfg.epochs}", disable=not is_main or cfg.quiet,
                   leave=False, dynamic_ncols=True)
        for bi, batch in enumerate(bar):
            if cfg.max_batches and bi >= cfg.max_batches:
                break
            if cfg.warmup_iters and it < cfg.warmup_iters:
                for g in optimizer.param_groups:
                    g["lr"] = g["initial_lr"] * (it + 1) / cfg.warmup_iters
            images = batch["image"].to(device, non_blocking=True)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            with _autocast(cfg, device):
                output = ddp_model(images)
            loss = compute_loss(cfg, output, batch, cfg.input_size)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, batch {bi}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if binary and cfg.clip_binary:
                clip_binary_weights(model, cfg.clip_binary)
            it += 1
            seen += images.shape[0] * world
            loss_sum += float(loss.detach())
            nb += 1
            bar.set_postfix(loss=f"{loss_sum / nb:.4f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
        bar.close()
        train_time = time.perf_counter() - t0
        epoch_lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        mean_loss = loss_sum / max(nb, 1)
        if world > 1:
            t = torch.tensor([mean_loss], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            mean_loss = float(t) / world
        if is_main:
            val, _ = evaluate(model, val_set, cfg, device, max_batches=cfg.max_batches)
            record = {"epoch": epoch + 1, "loss": mean_loss, "lr": epoch_lr,
                      "images_per_s": seen / max(train_time, 1e-9), "train_time_s": train_time, **val}
            history.append(record)
            with open(os.path.join(cfg.out, "metrics.json"), "w") as f:
                json.dump(history, f, indent=1)
            save_checkpoint(os.path.join(cfg.out, "last.pt"), model, cfg, epoch, optimizer, scheduler, scaler, history)
            key = f"pck@{cfg.pck_alpha:g}"
            if record.get(key, -1) > best:
                best = record[key]
                save_checkpoint(os.path.join(cfg.out, "best.pt"), model, cfg, epoch, history=history)
            if not cfg.quiet:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in ("epoch", "lr", "train_time_s"))
                print(f"[{cfg.model}] epoch {epoch + 1}/{cfg.epochs}: {shown}", flush=True)
        if world > 1:
            dist.barrier()
    if is_main and cfg.plots and history:
        from . import plots

        plots.training_curves(history, os.path.join(cfg.out, "curves.png"), title=cfg.model,
                              pck_key=f"pck@{cfg.pck_alpha:g}")
        val_batch = _collate([val_set[i] for i in range(min(16, len(val_set)))])
        pred, _ = predict_batch(model.eval(), val_batch["image"].to(device), cfg.head)
        plots.prediction_grid(val_batch["image"], pred.cpu(), skel, os.path.join(cfg.out, "predictions.png"),
                              gt=val_batch["keypoints"], visibility=val_batch["visibility"])
    if world > 1:
        dist.barrier()
        box = [history]
        dist.broadcast_object_list(box, src=0)  # only rank 0 evaluates: share its records
        history = box[0]
    return (history, model) if return_model else history
