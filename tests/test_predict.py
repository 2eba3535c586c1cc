"""``predict`` on workloads: folders, bad files among good ones, streamed outputs, videos, pipes."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cnnvision.apps.predict import rle
from cnnvision.benchmark import demo_photos
from cnnvision.cli import main


def with_face(folder) -> str:
    """The first of the drawn photos in which the shipped pipeline finds a face."""
    from cnnvision.apps.faces import FacePipeline
    pipeline = FacePipeline.pretrained()
    for photo in sorted(folder.rglob("p*.jpg")):
        if pipeline(str(photo)):
            return str(photo)
    pytest.fail("the pipeline found no face in any drawn photo")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three drawn photos (one face each) in a nested folder, a corrupt one, and a text file."""
    root = tmp_path_factory.mktemp("photos")
    (root / "a" / "b").mkdir(parents=True)
    for i, photo in enumerate(demo_photos(3, 640, 480, seed=2)):
        photo.save(root / "a" / ("b" if i else "") / f"p{i}.jpg")
    (root / "a" / "b" / "broken.jpg").write_bytes(b"not an image")
    (root / "a" / "notes.txt").write_text("not an image either, and not looked at")
    return root


def test_folder_with_a_bad_file_writes_the_good_ones_and_exits_1(folder, tmp_path, capsys):
    jsonl, table, crops = tmp_path / "r.jsonl", tmp_path / "r.csv", tmp_path / "crops"
    rc = main(["predict", str(folder), str(tmp_path / "missing.jpg"), "--jsonl", str(jsonl), "--csv", str(table),
               "--crops", str(crops), "--out", str(tmp_path / "ov")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert err.count("skipped") == 2 and "broken.jpg: cannot decode image" in err and "missing.jpg: no such file" in err
    assert "Traceback" not in err
    assert out.count("\n") == 1 and "3 photos" in out and "2 skipped" in out  # a summary, not the data
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["path"] for r in lines] == sorted(r["path"] for r in lines) and len(lines) == 3
    faces = sum(len(r["faces"]) for r in lines)
    assert faces >= 1
    rows = list(csv.reader(table.open()))
    assert len(rows) == 1 + faces and len(rows[0]) == 8 + 136
    assert len(list(crops.glob("*.png"))) == faces and len(list((tmp_path / "ov").glob("*.png"))) == 3
    for crop in crops.glob("*.png"):
        assert Image.open(crop).size == (112, 112)


def test_json_to_stdout_or_file(folder, tmp_path, capsys):
    photo = with_face(folder)
    assert main(["predict", photo, "--no-overlay", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == [photo] and data[photo][0]["keypoints"].__len__() == 68
    assert main(["predict", photo, "--no-overlay", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cnnvision predict: 1 photos") and json.loads((tmp_path / "r.json").read_text()) == data


def test_parts_are_in_the_json_run_length_encoded(folder, capsys):
    assert main(["predict", with_face(folder), "--no-overlay", "--parts"]) == 0
    face = next(iter(json.loads(capsys.readouterr().out).values()))[0]
    parts = face["parts"]
    counts = parts["rle"][1::2]
    assert sum(counts) == parts["size"][0] * parts["size"][1] and parts["classes"][0] == "background"
    assert set(parts["rle"][0::2]) <= set(range(len(parts["classes"])))


def test_run_length_round_trip():
    mask = np.array([[0, 0, 1], [1, 1, 2]], np.uint8)
    assert rle(mask) == [0, 2, 1, 3, 2, 1]


def test_bad_frame_options_are_usage_errors(folder, capsys):
    assert main(["predict", str(folder), "--every", "0"]) == 2
    assert "--every 0: must be 1 or more" in capsys.readouterr().err


def test_video_frames_stream_as_json_lines_and_an_annotated_video(tmp_path, capsys):
    av = pytest.importorskip("av")
    video = tmp_path / "clip.mp4"
    photos = demo_photos(3, 320, 240, seed=5)
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(12):
            for packet in stream.encode(av.VideoFrame.from_image(photos[i % 3])):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    lines_path = tmp_path / "v.jsonl"
    assert main(["predict", str(video), "--every", "2", "--max-frames", "4", "--jsonl", str(lines_path),
                 "--out", str(tmp_path / "ov")]) == 0
    lines = [json.loads(line) for line in lines_path.read_text().splitlines()]
    assert [r["frame"] for r in lines] == [0, 2, 4, 6]
    assert [round(r["time"], 2) for r in lines] == [0.0, 0.2, 0.4, 0.6]
    with av.open(str(tmp_path / "ov" / "clip_faces.mp4")) as annotated:
        assert sum(1 for _ in annotated.decode(video=0)) == 4
    assert "4 frames" in capsys.readouterr().out
    gif = tmp_path / "anim.gif"
    photos[0].save(gif, save_all=True, append_images=photos[1:], duration=100, loop=0)
    assert main(["predict", str(gif), "--no-overlay", "--json", "-"]) == 0
    assert [f["frame"] for f in json.loads(capsys.readouterr().out)[str(gif)]] == [0, 1, 2]


def test_a_closed_pipe_ends_quietly(folder):
    done = subprocess.run(f"{sys.executable} -m cnnvision predict {folder / 'a' / 'p0.jpg'} --no-overlay | head -c 5",
                          shell=True, capture_output=True, text=True, timeout=120)
    assert done.stdout == '{"' + str(folder)[:3] and "Traceback" not in done.stderr and "Error" not in done.stderr
