"""Loading the authors' checkpoints: key-name maps from their implementations onto the fastpose models.

Sources (the names are facts about the authors' code; the maps are ours):

* ``"pose_hrnet"`` (aliases ``"hrnet"``): HRNet/deep-high-resolution-net.pytorch, lib/models/pose_hrnet.py,
  onto ``hrnet_w32`` / ``hrnet_w48``.
* ``"pytorch_stacked_hourglass"`` (aliases ``"hourglass"``, ``"hg_pt"``): princeton-vl/pytorch_stacked_hourglass,
  models/posenet.py, onto ``hourglass``. Its residual blocks always register a ``skip_layer`` and use it
  only when the channel count changes: the unused ones (square 1x1 weights) are dropped.
* ``"fan"`` (aliases ``"face_alignment"``): 1adrianb/face-alignment, face_alignment/models/fan.py, onto
  ``hpm_hourglass``.

Wrapper prefixes (``module.`` from DataParallel, ``model.`` from HG-pt's trainer) are stripped, and a
checkpoint dict holding a ``"state_dict"`` entry is unwrapped.
"""
import re

import torch

__all__ = ["OFFICIAL_SOURCES", "convert_official", "load_official"]

_ALIASES = {"pose_hrnet": "pose_hrnet", "hrnet": "pose_hrnet",
            "pytorch_stacked_hourglass": "pytorch_stacked_hourglass", "hourglass": "pytorch_stacked_hourglass",
            "hg_pt": "pytorch_stacked_hourglass",
            "fan": "fan", "face_alignment": "fan"}
OFFICIAL_SOURCES = ("pose_hrnet", "pytorch_stacked_hourglass", "fan")

_DROP = object()


def _sub(rules, key):
    for pat, rep in rules:
        new, n = re.subn(pat, rep, key)
        if n:
            return new
    return key


# ---------------------------------------------------------------- pose_hrnet
_HRNET_RULES = [
    (r"^conv1\.", "stem.0.0."), (r"^bn1\.", "stem.0.1."),
    (r"^conv2\.", "stem.1.0."), (r"^bn2\.", "stem.1.1."),
    # new branches are Sequential(Sequential(conv, bn, relu)) in pose_hrnet, a plain Sequential here
    (r"^transition1\.1\.0\.", "transition1.1."),
    (r"^transition2\.2\.0\.", "transition2."),
    (r"^transition3\.3\.0\.", "transition3."),
    (r"^(stage\d\.\d+)\.fuse_layers\.", r"\1.fuse."),
]


def _hrnet_key(key, value):
    return _sub(_HRNET_RULES, key)


# ---------------------------------------------------------------- pytorch_stacked_hourglass
_HG_TOP = [
    (r"^pre\.0\.conv\.", "stem.0."), (r"^pre\.0\.bn\.", "stem.1."),
    (r"^pre\.1\.", "stem.3."), (r"^pre\.3\.", "stem.5."), (r"^pre\.4\.", "stem.6."),
    (r"^hgs\.(\d+)\.0\.", r"hgs.\1."),
    (r"^features\.(\d+)\.1\.conv\.", r"features.\1.1."), (r"^features\.(\d+)\.1\.bn\.", r"features.\1.2."),
    (r"^outs\.(\d+)\.conv\.", r"preds.\1."),
    (r"^merge_features\.(\d+)\.conv\.conv\.", r"merge_features.\1."),  # Merge(Conv(conv))
    (r"^merge_preds\.(\d+)\.conv\.conv\.", r"merge_preds.\1."),
]


def _hg_key(key, value):
    key = _sub(_HG_TOP, key)
    if ".skip_layer.conv." in key:
        w = value if key.endswith("weight") else None
        # a skip is used only when it changes the channel count; its bias has no shape to tell, so the
        # bias follows its weight (decided in convert_official)
        if w is not None and w.shape[0] == w.shape[1]:
            return _DROP
        key = key.replace(".skip_layer.conv.", ".skip.")
    # Residual's Conv wrappers: convK.conv.* -> convK.*
    return re.sub(r"\.(conv[123])\.conv\.", r".\1.", key)


# ---------------------------------------------------------------- face-alignment FAN
_FAN_BLOCK = [(r"\.bn([123])\.", lambda m: f".bns.{int(m.group(1)) - 1}."),
              (r"\.conv([123])\.", lambda m: f".convs.{int(m.group(1)) - 1}."),
              (r"\.downsample\.", ".shortcut.")]


def _fan_block(prefix, rest):
    """``rest`` is a ConvBlock-relative key such as ``bn1.weight``; returns our HPMBlock key."""
    rest = "." + rest
    for pat, rep in _FAN_BLOCK:
        rest = re.sub(pat, rep, rest, count=1)
    return prefix + rest


def _fan_key(key, value, depth=4):
    top, _, rest = key.partition(".")
    if top in ("conv1", "bn1"):
        return key
    m = re.fullmatch(r"conv([234])", top)
    if m:
        return _fan_block(f"stem.{int(m.group(1)) - 2}", rest)
    m = re.fullmatch(r"m(\d+)", top)
    if m:
        name, _, rest2 = rest.partition(".")
        lm = re.fullmatch(r"(b1|b2|b3|b2_plus)_(\d+)", name)
        if not lm:
            raise ValueError(f"fan: unexpected hourglass key {key!r}")
        level = int(lm.group(2))
        path = ["low2"] * (depth - level) + [{"b1": "up1", "b2": "low1", "b3": "low3", "b2_plus": "low2"}[lm.group(1)]]
        return _fan_block(f"hgs.{m.group(1)}." + ".".join(path), rest2)
    for pat, rep in ((r"top_m_(\d+)", "tops.{}"), (r"conv_last(\d+)", "heads.{}.0"), (r"bn_end(\d+)", "heads.{}.1"),
                     (r"l(\d+)", "preds.{}"), (r"bl(\d+)", "merge_features.{}"), (r"al(\d+)", "merge_preds.{}")):
        m = re.fullmatch(pat, top)
        if m:
            new = rep.format(m.group(1))
            return _fan_block(new, rest) if pat.startswith("top") else f"{new}.{rest}"
    raise ValueError(f"fan: unexpected key {key!r}")


_CONVERTERS = {"pose_hrnet": _hrnet_key, "pytorch_stacked_hourglass": _hg_key, "fan": _fan_key}


def _strip(key):
    changed = True
    while changed:
        changed = False
        for p in ("module.", "model."):
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def convert_official(state_dict, source):
    """A new state_dict with the official implementation's keys renamed to fastpose's.

    Args:
        state_dict: the official model's ``state_dict()`` (or a checkpoint dict with a ``"state_dict"``).
        source: "pose_hrnet", "pytorch_stacked_hourglass" or "fan" (see the module doc for aliases).
    Unused parameters of the official model (HG-pt's identity-case ``skip_layer``) are dropped.
    """
    if source not in _ALIASES:
        raise ValueError(f"source must be one of {OFFICIAL_SOURCES}, got {source!r}")
    conv = _CONVERTERS[_ALIASES[source]]
    if isinstance(state_dict, dict) and "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    stripped = {_strip(k): v for k, v in state_dict.items()}
    out, dropped = {}, set()
    for k, v in stripped.items():
        new = conv(k, v)
        if new is _DROP:
            dropped.add(k.rsplit(".", 1)[0])
        else:
            out[k] = (new, v)
    result = {}
    for k, (new, v) in out.items():
        if k.rsplit(".", 1)[0] in dropped:  # the bias of a dropped skip_layer
            continue
        result[new] = v
    return result


def load_official(model, state_dict, source, strict=True):
    """Loads weights saved by the authors' implementation into a fastpose model; returns the model.

    Args:
        model: from ``fastpose.models.create`` ("hrnet_w32"/"hrnet_w48" for "pose_hrnet", "hourglass" for
            "pytorch_stacked_hourglass", "hpm_hourglass" for "fan"), with matching stacks and num_joints;
            a ``head="dsnt"`` model loads into its body.
        state_dict: the official state_dict, a checkpoint dict with a ``"state_dict"`` entry, or a path
            to a file ``torch.load`` reads.
        source: which implementation wrote it (see ``OFFICIAL_SOURCES``).
        strict: as in ``load_state_dict``; missing or unexpected keys then raise ``ValueError``.
    With the same weights, the outputs equal the official model's (up to float summation order).
    """
    if isinstance(state_dict, (str, bytes)) or hasattr(state_dict, "__fspath__"):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    target = getattr(model, "body", model)
    converted = convert_official(state_dict, source)
    if strict:
        own = set(target.state_dict())
        missing, unexpected = sorted(own - set(converted)), sorted(set(converted) - own)
        if missing or unexpected:
            raise ValueError(f"load_official({source!r}): the checkpoint does not fit this model: "
                             f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
                             f"{unexpected[:5]} (check the model name, stacks and num_joints)")
    target.load_state_dict(converted, strict=strict)
    return model
