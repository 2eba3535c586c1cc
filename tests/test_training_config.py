"""Each task's training config: built by keyword, stored in the checkpoint, rebuilt on --resume."""
import json
from dataclasses import asdict, fields

import pytest

from cnnvision.apps.classify import ClassifierTraining
from cnnvision.apps.detect import DetectorTraining
from cnnvision.apps.keypoints import KeypointTraining
from cnnvision.apps.segment import SegmenterTraining
from cnnvision.cli import main
from cnnvision.runs import resumed
from cnnvision.solver import solver_config


def tiny_runs(tmp_path):
    """(task, training class, CLI arguments with every setting away from its default)."""
    from test_classify import write_mnist
    from test_data import write_faces68
    write_mnist(tmp_path / "mnist")
    csv_path, images = write_faces68(tmp_path, n=9)
    solver = ["--epochs", "1", "--batch-size", "8", "--lr", "3e-3", "--optimizer", "adam", "--schedule", "step",
              "--weight-decay", "0.001", "--seed", "7", "--log-every", "3", "--ema", "0.99"]
    return [
        ("keypoints", KeypointTraining,
         ["--net", "hourglass", "--depth", "1", "--synthetic-count", "80", "--image-size", "48", "--width", "8",
          "--loss", "mse",
          "--val-fraction", "0.2", "--augment", "rotate=5,shift=0.02"]),
        ("segmentation", SegmenterTraining,
         ["--task", "segmentation", "--data", str(csv_path), "--images", str(images), "--image-size", "32",
          "--width", "4", "--depth", "2", "--loss", "ce_dice", "--class-weights", "1,2,2,2,2",
          "--aux-points", "0.5", "--val-fraction", "0.34", "--no-augment", "--no-cache"]),
        ("detection", DetectorTraining,
         ["--task", "detection", "--data", str(csv_path), "--images", str(images), "--scene-count", "8",
          "--image-size", "64", "--width", "4", "--depth", "2", "--strided", "1", "--loss", "l2",
          "--val-fraction", "0.34", "--augment", "flip=0", "--enlarge-most", "1.5"]),
        ("classification", ClassifierTraining,
         ["--task", "classification", "--data", str(tmp_path / "mnist"), "--net", "mlp", "--no-augment"]),
    ], solver


GIVEN = {  # the settings tiny_runs moves away from their defaults
    "keypoints": {"net", "synthetic_count", "image_size", "width", "depth", "loss", "val_fraction", "augment",
                  "solver"},
    "segmentation": {"data", "images", "image_size", "width", "depth", "loss", "class_weights", "aux_points",
                     "val_fraction", "augment", "use_cache", "solver"},
    "detection": {"data", "images", "scene_count", "image_size", "width", "depth", "strided", "objectness_loss",
                  "val_fraction", "augment", "enlarge_most", "solver"},
    "classification": {"data", "net", "augment", "solver"},
}


def test_resume_of_every_task_restores_every_stored_setting(tmp_path):
    runs, solver = tiny_runs(tmp_path)
    for task, cls, args in runs:
        out = tmp_path / task
        assert main(["train", *args, *solver, "--out", str(out)]) == 0, task
        # What --resume alone gives the app: defaults everywhere, epochs extended.
        given = cls(solver={"epochs": 2})
        back = resumed(given, out, task)
        stored = json.loads((out / "config.json").read_text())
        for f in fields(cls):
            if f.name == "solver":
                assert back.solver == {**stored["solver"], "epochs": 2, "max_steps": 0}, task
            elif f.name == "net":
                assert back.net == stored["net"]["arch"], task
            elif f.name == "class_weights":
                assert list(back.class_weights) == stored["class_weights"], task
            elif f.name == "augment":  # stored: the fields used, or None for none
                assert back.augment == (stored["augment"] or False), task
            else:
                assert getattr(back, f.name) == stored[f.name], (task, f.name)
        changed = {f.name for f in fields(cls) if getattr(back, f.name) != getattr(cls(), f.name)}
        assert GIVEN[task] <= changed, (task, GIVEN[task] - changed)  # not merely the defaults coming back
        assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 0, task
        again = json.loads((out / "config.json").read_text())
        assert {k: v for k, v in again.items() if k != "solver"} == {k: v for k, v in stored.items() if k != "solver"}
        assert again["solver"] == {**stored["solver"], "epochs": 2}, task


def test_a_setting_that_is_not_a_field_is_refused():
    with pytest.raises(TypeError, match="lr"):
        KeypointTraining(lr=1e-3)
    with pytest.raises(ValueError, match="unknown solver setting.*learning_rate"):
        solver_config({"learning_rate": 1e-3})


def test_older_runs_without_the_training_record_resume_from_their_net_config(tmp_path):
    """Runs of earlier versions kept width and loss only inside the net's config."""
    import torch
    out = tmp_path / "old"
    assert main(["train", "--net", "kpnet", "--synthetic-count", "80", "--image-size", "48", "--width", "8",
                 "--loss", "mse", "--epochs", "1", "--batch-size", "16", "--out", str(out)]) == 0
    state = torch.load(out / "last.pt", weights_only=True)
    for key in ("width", "loss", "use_cache", "net"):
        state["config"].pop(key)
    state["config"]["net"] = {"arch": "kpnet", "width": 8, "loss": "mse", "image_size": 48}
    torch.save(state, out / "last.pt")
    back = resumed(KeypointTraining(), out, "keypoints")
    assert (back.net, back.width, back.loss, back.image_size) == ("kpnet", 8, "mse", 48)
    assert asdict(back)["synthetic_count"] == 80
