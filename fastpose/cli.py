"""Command line: ``python -m fastpose {info,bench-table,demo,train,eval,predict}``.

``train`` takes one option per field of ``fastpose.train.TrainConfig`` (``--model``, ``--data``,
``--epochs``, ``--out`` ...), generated from the dataclass so the two cannot drift apart.
"""
import argparse
import dataclasses
import json
import os

_HELP = {
    "model": "model name (fastpose.models.names())",
    "model_kwargs": "constructor arguments as KEY=VALUE (e.g. stacks=1 features=128 depth=3)",
    "head": "'heatmap' (MSE on Gaussian targets) or 'dsnt' (DSNT Euclidean loss + JS regulariser)",
    "data": "'synthetic', 'coco:PATH' (annotations/person_keypoints_{train,val}2017.json, {train,val}2017/) "
            "or 'mpii:PATH' (annot/{train,valid}.json, images/)",
    "input_size": "model input W H",
    "lr_steps": "epochs at which the learning rate is multiplied by --lr-gamma",
    "resume": "checkpoint to resume from, or 'auto' for OUT/last.pt when it exists",
    "out": "output directory: metrics.json, last.pt, best.pt, curves.png, predictions.png",
    "batch_size": "global batch size (split over torchrun processes)",
    "max_batches": "stop each epoch (and evaluation) after this many batches; 0 = all",
}


def _parse_value(text):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _kv_pairs(items):
    out = {}
    for item in items or ():
        if "=" not in item:
            raise SystemExit(f"--model-kwargs expects KEY=VALUE pairs, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = _parse_value(v)
    return out


def add_config_arguments(parser, cls, skip=()):
    """One ``--flag`` per dataclass field, typed from its default."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = _HELP.get(f.name, "") + f" (default: {default!r})"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif isinstance(default, dict):
            parser.add_argument(flag, nargs="*", metavar="KEY=VALUE", default=None, help=help_)
        elif isinstance(default, tuple):
            elem = type(default[0]) if default else int
            parser.add_argument(flag, nargs="*", type=elem, default=None, help=help_)
        else:
            parser.add_argument(flag, type=type(default), default=None, help=help_)


def config_from_args(args, cls, base=None):
    """A ``cls`` instance from parsed args: given flags override ``base`` (or the defaults)."""
    values = dataclasses.asdict(base) if base is not None else {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        values[f.name] = _kv_pairs(v) if isinstance(default, dict) else (tuple(v) if isinstance(default, tuple) else v)
    return cls(**values)


def _info(args):
    import fastpose

    print(json.dumps(fastpose.build_info(), indent=2))
    return 0


def _train(args):
    from . import train

    cfg = config_from_args(args, train.TrainConfig)
    history = train.train(cfg)
    if history and not cfg.quiet and int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {os.path.join(cfg.out, 'metrics.json')}; best checkpoint {os.path.join(cfg.out, 'best.pt')}")
    return 0


def _eval(args):
    import torch

    from . import train

    model, cfg, _ = train.load_checkpoint(args.checkpoint)
    overrides = {k: v for k, v in (("data", args.data), ("val_samples", args.val_samples),
                                   ("flip_test", args.flip_test), ("device", args.device)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides).validate()
    device = train._device(cfg)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    result, _ = train.evaluate(model, train.build_dataset(cfg, "val"), cfg, device)
    result = {"checkpoint": args.checkpoint, "data": cfg.data, "flip_test": cfg.flip_test, **result}
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _predict(args):
    import torch

    from . import plots, train
    from .data import TopDownAffine, invert_affine, load_image, transform_points

    model, cfg, _ = train.load_checkpoint(args.checkpoint)
    skel = train.data_skeleton(cfg)
    crop = TopDownAffine(cfg.input_size, skeleton=skel, train=False)
    os.makedirs(args.out, exist_ok=True)
    results = []
    for path in args.images:
        image = load_image(path)
        sample = crop({"image": image})
        with torch.no_grad():
            coords, conf = train.predict_batch(model, sample["image"][None], cfg.head,
                                               skel.flip_index if args.flip_test else None)
        coords = transform_points(coords[0], invert_affine(sample["affine"]))  # back to the file's pixels
        name = os.path.splitext(os.path.basename(path))[0] + "_pose.png"
        out_path = plots.draw_on_image(image, coords, skel, os.path.join(args.out, name))
        results.append({"image": path, "output": out_path, "keypoints": coords.tolist(),
                        "confidence": conf[0].tolist(), "joints": list(skel.joints)})
        print(f"{path} -> {out_path}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def build_parser():
    from .train import TrainConfig

    p = argparse.ArgumentParser(prog="python -m fastpose", description="fastpose command line")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("info", help="print the build configuration (CUDA, CPU ISA, Triton)")
    s.set_defaults(func=_info)
    s = sub.add_parser("bench-table", help="a short kernel benchmark table: fastpose against PyTorch eager")
    s.set_defaults(func=lambda a: __import__("fastpose.kernel_table", fromlist=["main"]).main())
    s = sub.add_parser("demo", help="the demo: build info, kernel table, float and binary models trained side by side")
    s.add_argument("--quick", action="store_true", help="a smoke run: a few batches per model (seconds)")
    s.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    s.add_argument("--minutes", type=float, default=None, help="training time budget per model, minutes")
    s.set_defaults(func=lambda a: __import__("fastpose.demo", fromlist=["run"]).run(a))
    s = sub.add_parser("train", help="train a model (one option per TrainConfig field)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(s, TrainConfig)
    s.set_defaults(func=_train)
    s = sub.add_parser("eval", help="evaluate a checkpoint on its validation data (or --data)")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--data", default=None, help="override the checkpoint's data spec")
    s.add_argument("--val-samples", type=int, default=None)
    s.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--device", default=None)
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--output", default=None, help="also write the metrics to this JSON file")
    s.set_defaults(func=_eval)
    s = sub.add_parser("predict", help="draw predicted skeletons on images (PNG per image)")
    s.add_argument("images", nargs="+", help="image files (the whole image is fitted to the model's input)")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", default="predictions", help="output directory (default: predictions)")
    s.add_argument("--flip-test", action="store_true")
    s.add_argument("--json", default=None, help="also write the keypoints to this JSON file")
    s.set_defaults(func=_predict)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)
