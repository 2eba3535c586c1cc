"""The CLI end to end on synthetic data, in-process, and its one-line errors."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from cnnvision.cli import main
from cnnvision.data.kaggle import write_kaggle_csv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny keypoint run on synthetic faces: train, then the run folder."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--synthetic-count", "60", "--net", "basic_cnn", "--epochs", "2", "--batch-size", "16",
                 "--out", str(out), "--log-every", "2"])
    assert code == 0
    return out


def test_train_writes_everything(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "metrics.csv", "last.pt", "best.pt", "predictions.png", "metrics.json", "tb"} <= names
    config = json.loads((trained / "config.json").read_text())
    assert config["net"]["arch"] == "basic_cnn" and config["val_people"] > 0
    assert Image.open(trained / "predictions.png").size[0] > 0


def test_train_refuses_to_overwrite_a_run(trained, capsys):
    assert main(["train", "--synthetic-count", "60", "--out", str(trained)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and err.count("\n") == 1


def test_resume_extends_a_run(trained, capsys):
    assert main(["train", "--out", str(trained), "--resume", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "epoch 3:" in out
    assert len((trained / "metrics.csv").read_text().splitlines()) == 4


def test_augment_flag_is_recorded_and_kept_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--synthetic-count", "40", "--net", "basic_cnn", "--epochs", "1", "--batch-size", "16",
            "--out", str(out), "--augment", "rotate=3,flip=0"]
    assert main(args) == 0
    stored = json.loads((out / "config.json").read_text())["augment"]
    assert stored["rotate"] == 3.0 and stored["flip"] is False and stored["scale"] == 0.08
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert json.loads((out / "config.json").read_text())["augment"] == stored
    assert main(args[:-2] + ["--out", str(tmp_path / "b"), "--augment", "rotate=3", "--no-augment"]) == 2
    assert capsys.readouterr().err.strip().endswith("--augment and --no-augment contradict each other; give one")


def test_evaluate_and_json(trained, tmp_path, faces96, capsys):
    data = tmp_path / "training.csv"
    write_kaggle_csv(faces96, data)
    report = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(trained / "best.pt"), "--data", str(data), "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert set(metrics) == {"rmse", "count"} and metrics["count"] == len(faces96) and metrics["rmse"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == metrics


def test_predict_any_image(trained, tmp_path, capsys):
    paths = []
    for i, (mode, size) in enumerate([("L", (96, 96)), ("RGB", (150, 90)), ("RGBA", (40, 70))]):
        p = tmp_path / f"face{i}.png"
        Image.new(mode, size, 128).save(p)
        paths.append(str(p))
    out_json = tmp_path / "kp.json"
    assert main(["predict", "--checkpoint", str(trained / "best.pt"), *paths, "--out", str(tmp_path / "ov"),
                 "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert list(result) == paths
    (w, h) = (150, 90)
    face = result[paths[1]][0]
    assert face["box"] == [0, 0, w, h] and len(face["keypoints"]) == 15
    assert len(list((tmp_path / "ov").glob("*.png"))) == 3


def test_submit_against_a_lookup(trained, tmp_path, faces96):
    test = tmp_path / "test.csv"
    write_kaggle_csv(faces96.subset(range(3)), test, test=True)
    lookup = tmp_path / "IdLookupTable.csv"
    lookup.write_text("RowId,ImageId,FeatureName,Location\r\n1,1,left_eye_center_x\r\n2,3,nose_tip_y\r\n")
    sub = tmp_path / "submission.csv"
    assert main(["submit", "--checkpoint", str(trained / "best.pt"), "--test", str(test), "--lookup", str(lookup),
                 "--out", str(sub)]) == 0
    rows = list(csv.reader(open(sub)))
    assert rows[0] == ["RowId", "Location"] and [r[0] for r in rows[1:]] == ["1", "2"]
    assert all(0 <= float(r[1]) <= 96 for r in rows[1:])


def test_submit_unknown_image_in_lookup(trained, tmp_path, faces96, capsys):
    test = tmp_path / "test.csv"
    write_kaggle_csv(faces96.subset(range(2)), test, test=True)
    lookup = tmp_path / "lookup.csv"
    lookup.write_text("RowId,ImageId,FeatureName,Location\n1,9,left_eye_center_x\n")
    sub = tmp_path / "submission.csv"
    assert main(["submit", "--checkpoint", str(trained / "best.pt"), "--test", str(test), "--lookup", str(lookup),
                 "--out", str(sub)]) == 2
    assert "row 2: unknown image 9" in capsys.readouterr().err
    assert not sub.exists()  # nothing half-written


def test_submission_for_the_real_lookup_table(trained, tmp_path, shared):
    """1783 stand-in test faces, the real IdLookupTable: every RowId of the sample submission."""
    from cnnvision.data.synthetic import synthetic_faces
    test = tmp_path / "test.csv"
    write_kaggle_csv(synthetic_faces(1783, people=50), test, test=True)
    sub = tmp_path / "submission.csv"
    assert main(["submit", "--checkpoint", str(trained / "best.pt"), "--test", str(test),
                 "--lookup", str(shared / "kaggle-fkd" / "IdLookupTable.csv"), "--out", str(sub)]) == 0
    ours = list(csv.reader(open(sub)))
    sample = list(csv.reader(open(shared / "kaggle-fkd" / "SampleSubmission.csv")))
    assert ours[0] == sample[0] == ["RowId", "Location"]
    assert [r[0] for r in ours] == [r[0] for r in sample] and len(ours) == 27125
    values = np.array([float(r[1]) for r in ours[1:]])
    assert values.min() >= 0 and values.max() <= 96 and values.std() > 1


def test_benchmark_json(tmp_path):
    out = tmp_path / "b.json"
    assert main(["benchmark", "--net", "basic_cnn", "--batch-size", "4", "--steps", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["train_examples_per_sec"] > 0 and result["infer_examples_per_sec"] > 0
    assert result["precision_used"] in ("bf16", "fp32") and "cpu_capability" in result["machine"]


def test_benchmark_rates_are_examples_over_the_timed_seconds(monkeypatch):
    """With a clock that moves one second per reading, every timed span is one second, so each
    rate must be exactly the number of examples it timed."""
    from cnnvision import benchmark
    ticks = iter(range(10**6))
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: float(next(ticks)))
    result = benchmark.benchmark("basic_cnn", batch_size=4, steps=3, warmup=2)
    assert result["train_examples_per_sec"] == 12.0 and result["infer_examples_per_sec"] == 12.0
    assert result["infer_flip_examples_per_sec"] == 12.0


@pytest.mark.parametrize("args,message", [
    (["evaluate", "--checkpoint", "{tmp}/missing.pt", "--data", "{tmp}/x.csv"], "missing.pt: no such file"),
    (["evaluate", "--checkpoint", "{tmp}/junk.pt", "--data", "{tmp}/x.csv"], "junk.pt: not a cnnvision checkpoint"),
    (["evaluate", "--pretrained", "nope", "--data", "{tmp}/x.csv"], "unknown pretrained model 'nope'"),
    (["predict", "--checkpoint", "{best}", "{tmp}/junk.pt"], "junk.pt: cannot decode image"),
    (["predict", "--checkpoint", "{best}", "{tmp}/none.jpg"], "none.jpg: no such file"),
    (["evaluate", "--checkpoint", "{best}", "--data", "{tmp}/junk.pt"], "junk.pt: not a text CSV"),
    (["evaluate", "--checkpoint", "{best}", "--data", "{tmp}/empty.csv"], "empty.csv: file is empty"),
    (["train", "--data", "{tmp}/empty.csv", "--out", "{tmp}/r"], "empty.csv: file is empty"),
    (["train", "--data", "{tmp}/nothing.csv", "--out", "{tmp}/r"], "nothing.csv: no such file"),
])
def test_bad_input_gives_one_line_and_status_2(trained, tmp_path, capsys, args, message):
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01garbage\xff")
    (tmp_path / "empty.csv").write_bytes(b"")
    args = [a.format(tmp=tmp_path, best=trained / "best.pt") for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_68_point_data_end_to_end(tmp_path, capsys):
    """A 68-point CSV + image folder: colour crops, training, then rmse, nme and count."""
    from test_data import write_faces68
    csv_path, images = write_faces68(tmp_path, n=12)
    out = tmp_path / "run68"
    assert main(["train", "--data", str(csv_path), "--images", str(images), "--net", "kpheat", "--image-size", "32",
                 "--channels", "3", "--epochs", "1", "--batch-size", "4", "--out", str(out), "--val-fraction", "0.3"]) == 0
    report = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--data", str(csv_path), "--images", str(images),
                 "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert {"rmse", "nme", "count", "failure8", "failure10", "auc8", "detected", "nme_detected"} <= set(metrics)
    assert metrics["count"] == 12 and metrics["nme"] > 0 and metrics["rmse"] > 0
    # noise pictures hold no face the detector finds: nothing to score through it, written as null
    assert metrics["detected"] == 0 and metrics["nme_detected"] is None


def test_predict_help_states_the_pipelines_own_defaults(capsys):
    """The help gives --threshold's and --max-spread's defaults as text: it must follow the
    pipeline's values when a reshipped detector changes them."""
    from cnnvision.apps.faces import MAX_SPREAD, THRESHOLD
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {THRESHOLD})" in text and f"(default {MAX_SPREAD};" in text


def test_l1_nme_loss_on_data_without_68_points_is_one_clear_line(tmp_path, capsys):
    assert main(["train", "--loss", "l1_nme", "--synthetic-count", "60", "--max-steps", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--loss l1_nme" in err and "kaggle15" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_heatmap_loss_is_for_keypoint_heatmap_nets_only(tmp_path, capsys):
    for flags in (["--net", "kpnet"], ["--task", "detection"], ["--net", "hourglass", "--heatmap-loss", "-1"]):
        args = ["train", "--heatmap-loss", "0.1", "--synthetic-count", "60", "--max-steps", "1", *flags]
        assert main([*args, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert "--heatmap-loss" in err and err.count("\n") == 1
        assert not (tmp_path / "run").exists()


def test_benchmark_names_a_limit_on_onednn(monkeypatch):
    from cnnvision.benchmark import machine
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert "onednn_max_isa" not in machine()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # how compare_speed.py emulates a CPU without AVX-512
    assert machine()["onednn_max_isa"] == "AVX2"


def test_the_command_line_offers_every_runtime():
    from cnnvision import cli, runtime
    assert set(cli.RUNTIMES) == {*runtime.RUNTIMES, "auto"}


def test_a_run_reports_its_best_checkpoint_in_the_precision_it_trained_in(trained, tmp_path, monkeypatch, capsys):
    """metrics.json measures best.pt as the epochs were measured: an fp32 run on a CPU with BF16
    is not reported in bf16 (auto's choice there)."""
    import shutil

    from cnnvision import solver
    run = shutil.copytree(trained, tmp_path / "run")  # the module's run keeps its metrics.json
    asked = {}

    def evaluate(net, data, **how):
        asked.update(how)
        return {"rmse": 1.0}
    monkeypatch.setattr(solver, "evaluate", evaluate)
    best, metrics = solver.report_best(run, None, solver.SolverConfig(precision="fp32", channels_last=False), flip=True)
    assert asked == {"device": solver.torch.device("cpu"), "precision": "fp32", "flip": True, "channels_last": False}
    assert metrics == {"rmse": 1.0} and json.loads((run / "metrics.json").read_text()) == metrics
    assert next(best.parameters()).device.type == "cpu"
