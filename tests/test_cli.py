"""python -m fastpose train / eval / predict / demo --quick, as a user runs them (subprocesses)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from fastpose import cli, train


def _run(*args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "fastpose", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_train_eval_predict(tmp_path):
    out = tmp_path / "run"
    _run("train", "--model", "hourglass", "--model-kwargs", "stacks=1", "features=16", "depth=2",
         "--input-size", "32", "32", "--train-samples", "16", "--val-samples", "8", "--epochs", "1",
         "--batch-size", "4", "--out", str(out), "--no-plots", "--quiet")
    hist = json.loads((out / "metrics.json").read_text())
    assert len(hist) == 1 and "loss" in hist[0] and "pck@0.2" in hist[0]
    res = json.loads(_run("eval", "--checkpoint", str(out / "best.pt"), "--val-samples", "4", "--flip-test",
                          "--output", str(tmp_path / "eval.json")))
    assert res["flip_test"] is True and 0 <= res["pck@0.2"] <= 1
    assert json.loads((tmp_path / "eval.json").read_text()) == res
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 30), (64, 64)]):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    _run("predict", *paths, "--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "pred"),
         "--json", str(tmp_path / "pred.json"))
    preds = json.loads((tmp_path / "pred.json").read_text())
    assert [len(p["keypoints"]) for p in preds] == [16, 16]
    for p in preds:
        im = Image.open(p["output"])
        assert im.size[0] >= 40 and im.format == "PNG"


def test_train_options_cover_the_config():
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--model", "hrnet_w32", "--lr-steps", "170", "200", "--no-augment",
                              "--model-kwargs", "num_joints=17", "--input-size", "192", "256", "--sigma", "2"])
    cfg = cli.config_from_args(args, train.TrainConfig)
    assert cfg.model == "hrnet_w32" and cfg.lr_steps == (170, 200) and cfg.augment is False
    assert cfg.model_kwargs == {"num_joints": 17} and cfg.input_size == (192, 256) and cfg.sigma == 2.0
    defaults = cli.config_from_args(parser.parse_args(["train"]), train.TrainConfig)
    assert defaults == train.TrainConfig()
    with pytest.raises(SystemExit):
        cli.config_from_args(parser.parse_args(["train", "--model-kwargs", "stacks"]), train.TrainConfig)


def test_demo_quick(tmp_path):
    out = _run("demo", "--quick", "--out", str(tmp_path / "demo"), timeout=600)
    for text in ("CPU ISA", "Triton", "PCK@0.2", "packed 1-bit", "packed predictions identical: True",
                 "outputs identical: True"):
        assert text in out, text
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert [r["model"] for r in summary["results"]] == ["hourglass", "binary_hpm_hourglass"]
    assert summary["model_bytes"]["binary HPM, packed 1-bit"] < summary["model_bytes"]["binary HPM, latent float weights"]
    assert summary["replay_identical"] is True and summary["replay_ms"] > 0
    for name in ("curves.png", "predictions.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
