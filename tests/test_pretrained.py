"""The shipped keypoint model: small, loadable, and as accurate as the README says."""
import json

import pytest

from cnnvision import checkpoint
from cnnvision.cli import main
from cnnvision.solver import cpu_has_bf16


def test_keypoints15_is_small_and_self_describing():
    path = checkpoint.pretrained_path("keypoints15")
    assert path.stat().st_size <= 12 * 2**20  # 2.8 M float32 weights of the hourglass
    net = checkpoint.load_net(pretrained="keypoints15")
    assert net.cfg.layout == "kaggle15" and net.cfg.image_size == 96 and net.cfg.in_channels == 1
    state = checkpoint.load(path)
    assert "optimizer" not in state  # weights only
    sources = state["config"]["data"]  # the proxy, with Kaggle-style crops of the 300-W photos beside it
    assert sources[0].endswith("proxy_training.csv.gz") and sources[1].endswith("faces-300w/training_keypoints.csv")


def test_keypoints15_on_people_it_never_saw(shared, tmp_path, capsys):
    report = tmp_path / "m.json"
    assert main(["evaluate", "--pretrained", "keypoints15", "--data", str(shared / "kaggle-fkd" / "proxy_training.csv.gz"),
                 "--split", "val", "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert metrics["count"] == 535
    # the README's figures: bf16 where the CPU has it, fp32 elsewhere (model card, keypoints15)
    assert metrics["rmse"] == pytest.approx(1.741 if cpu_has_bf16() else 1.753, abs=0.003)
