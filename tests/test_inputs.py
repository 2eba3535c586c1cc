"""Bad input found by probing: each is one clear line naming the file and what is wrong, a
non-zero exit and no traceback."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from cnnvision.cli import main
from cnnvision.data import kaggle
from test_data import write_faces68


def kaggle_csv(path, pixels="1 " * 9215 + "2", x="30.0"):
    columns = ",".join(kaggle.KEYPOINT_COLUMNS)
    values = ",".join([x] + ["40.0"] * 29)
    path.write_text(f"{columns},Image\n{values},{pixels}\n{values},{'3 ' * 9216}\n")
    return path


def one_line(capsys, message):
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("inputs") / "run"
    assert main(["train", "--synthetic-count", "40", "--net", "basic_cnn", "--epochs", "1", "--batch-size", "16",
                 "--out", str(out)]) == 0
    return out


def test_pixel_values_too_large_for_an_integer(tmp_path, capsys):
    path = kaggle_csv(tmp_path / "big.csv", pixels="99999999999 " * 9216)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "r"), "--no-cache"]) == 2
    one_line(capsys, "big.csv: row 2: has pixel values outside 0-255")


@pytest.mark.parametrize("value,message", [("inf", "infinite keypoint value"), ("1e30", "lies outside the image"),
                                           ("-500", "lies outside the image")])
def test_keypoints_outside_the_image_are_refused_naming_the_row(tmp_path, capsys, value, message):
    path = kaggle_csv(tmp_path / "pts.csv", x=value)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "r"), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "pts.csv: row 2: " in err and message in err and err.count("\n") == 1


def test_68_point_coordinates_far_outside_the_image(tmp_path, capsys):
    csv_path, images = write_faces68(tmp_path, n=6)
    lines = csv_path.read_text().splitlines()
    fields = lines[3].split(",")
    fields[5] = "99999"
    lines[3] = ",".join(fields)
    csv_path.write_text("\n".join(lines) + "\n")
    assert main(["train", "--data", str(csv_path), "--images", str(images), "--out", str(tmp_path / "r")]) == 2
    one_line(capsys, "points.csv: row 4 (Person_C_02.jpg): keypoint value 99999 lies outside the image")


def test_a_row_too_long_is_refused_before_it_is_read_whole(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(kaggle, "MAX_ROW_BYTES", 1000)
    (tmp_path / "one_line.csv").write_text("Image," + "1 " * 5000)
    assert main(["train", "--data", str(tmp_path / "one_line.csv"), "--out", str(tmp_path / "r")]) == 2
    one_line(capsys, "one_line.csv: row 1 is longer than")


def test_submit_out_naming_a_folder(run, tmp_path, capsys):
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("ImageId,Image\n1," + "5 " * 9216 + "\n")
    lookup = tmp_path / "lookup.csv"
    lookup.write_text("RowId,ImageId,FeatureName,Location\n1,1,nose_tip_x,\n")
    assert main(["submit", "--checkpoint", str(run / "best.pt"), "--test", str(test_csv), "--lookup", str(lookup),
                 "--out", str(tmp_path)]) == 2
    one_line(capsys, f"{tmp_path}: Is a directory")


def test_run_folder_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", "--synthetic-count", "20", "--epochs", "1", "--out", str(tmp_path / "file" / "run")]) == 2
    one_line(capsys, "Not a directory")


def test_resume_of_another_task_or_a_run_without_settings(run, tmp_path, capsys):
    assert main(["train", "--task", "detection", "--resume", "--out", str(run)]) == 2
    one_line(capsys, "is a keypoints run, not a detection one")
    weights_only = tmp_path / "w"
    weights_only.mkdir()
    state = torch.load(run / "best.pt", weights_only=True)
    state.pop("config")
    torch.save(state, weights_only / "last.pt")
    assert main(["train", "--resume", "--out", str(weights_only)]) == 2
    one_line(capsys, "holds no training settings to resume from")


def test_pixel_limit_with_an_option_to_raise_it(tmp_path, capsys):
    photo = tmp_path / "wide.png"
    Image.fromarray(np.zeros((100, 300, 3), np.uint8)).save(photo)
    assert main(["predict", str(photo), "--no-overlay", "--max-pixels", "20000"]) == 1  # skipped, named
    err = capsys.readouterr().err
    assert "wide.png: 300x100 is 30,000 pixels, over the limit of 20,000 (raise it with --max-pixels)" in err
    assert main(["predict", str(photo), "--no-overlay", "--max-pixels", "40000"]) == 0
    from cnnvision import images
    images.set_max_pixels(40_000_000)  # back to the default for the other tests


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("command", [
    ["evaluate", "--checkpoint", "{ckpt}", "--data", "{csv}"],
    ["predict", "--checkpoint", "{ckpt}", "{csv}"],
    ["export", "--checkpoint", "{ckpt}", "--onnx", "{tmp}/m.onnx"],
    ["submit", "--checkpoint", "{ckpt}", "--test", "{csv}", "--lookup", "{csv}", "--out", "{tmp}/s.csv"],
    ["train", "--init", "{ckpt}", "--synthetic-count", "20", "--epochs", "1", "--out", "{tmp}/r"],
    ["train", "--resume", "--out", "{tmp}"],
])
def test_checkpoints_that_would_run_code_are_refused_everywhere(tmp_path, capsys, command):
    ckpt = tmp_path / "last.pt"
    with open(ckpt, "wb") as f:
        pickle.dump({"format": "cnnvision-checkpoint", "net": Payload(), "model": {}}, f)
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    args = [a.format(ckpt=ckpt, csv=tmp_path / "x.csv", tmp=tmp_path) for a in command]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert "code ran" not in out and "not a cnnvision checkpoint" in err and "Traceback" not in err


def test_export_without_the_onnx_extra_names_it(run, tmp_path, capsys, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert main(["export", "--checkpoint", str(run / "best.pt"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    one_line(capsys, 'export needs the onnx extra: pip install "cnnvision[onnx]"')


def test_resume_honours_a_new_max_steps(run, tmp_path, capsys):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["train", "--resume", "--epochs", "3", "--max-steps", "4", "--out", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "stopped at --max-steps 4" in out
    assert torch.load(copy / "last.pt", weights_only=True)["step"] == 4


def test_help_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys; from cnnvision.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False"


def test_a_file_that_cannot_be_read_is_one_line(tmp_path, capsys, monkeypatch):
    """Root reads every file, so the refusal a user meets is simulated where files are opened."""
    csv_path = kaggle_csv(tmp_path / "locked.csv")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(kaggle, "open", refuse, raising=False)
    assert main(["train", "--data", str(csv_path), "--out", str(tmp_path / "r"), "--no-cache"]) == 2
    one_line(capsys, "locked.csv: Permission denied")
