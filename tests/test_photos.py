"""Real photos: several keypoint sources at once, validation by photo, photo augmentation, the
300-W figures, face boxes, crops of photos with ignored regions, and the web-faces reader."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnvision.boxes import box_iou, encode
from cnnvision.data import load_sources
from cnnvision.data.augment import AugmentConfig, augment, degrade, parse_augment
from cnnvision.data.dataset import hold_out_people, identities_from_names, join
from cnnvision.data.faces68 import load_faces68
from cnnvision.data.photos import (drawn_box, drawn_extent, extent_of, face_box, framing_of, group_by_photo,
                                   label_box, photo_crops, read_web_faces, split_photos)
from cnnvision.errors import InputError
from cnnvision.nets.detect import DetectorConfig, DetectorNet
from cnnvision.nets.keypoints import nme_summary
from test_data import write_faces68


def write_photos68(folder, photos=8, size=80):
    """A 68-point CSV of photos named like faces-300w (no person in the name), two faces on some."""
    rng = np.random.default_rng(1)
    (folder / "photos").mkdir()
    lines = ["," + ",".join(str(i) for i in range(136))]
    for i in range(photos):
        name = f"helen_{1000 + i}_1.jpg" if i % 2 else f"lfpw_image_{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / "photos" / name)
        for _ in range(1 + (i % 3 == 0)):
            pts = rng.uniform(10, 70, (68, 2))
            lines.append(name + "," + ",".join(f"{v:.1f}" for v in pts.flatten()))
    (folder / "photos.csv").write_text("\n".join(lines) + "\n")
    return folder / "photos.csv", folder / "photos"


def test_groups_are_people_where_names_carry_them_else_photos():
    frames = [f"Person_{k}_{i:02d}.jpg" for k in range(30) for i in range(10)]
    assert identities_from_names(frames) == ([f"Person_{k}" for k in range(30) for _ in range(10)], "identity")
    photos = [f"lfpw_image_{i:04d}.jpg" for i in range(200)] + [f"afw_{i}.jpg" for i in range(100)]
    groups, kind = identities_from_names(photos)
    assert kind == "photo" and groups == photos


def test_photo_split_keeps_every_face_of_a_photo_on_one_side(tmp_path):
    csv_path, images = write_photos68(tmp_path, photos=40)
    data = load_faces68(csv_path, images, size=32)
    train, val = hold_out_people(data, 0.25, csv_path)
    assert not set(train.names) & set(val.names)
    assert len(train) + len(val) == len(data) and len(val) > 0


def test_joined_sources_split_each_as_alone_and_fill_their_shares(tmp_path):
    frames_csv, frames_dir = write_faces68(tmp_path, n=30)
    (tmp_path / "p").mkdir()
    photos_csv, photos_dir = write_photos68(tmp_path / "p", photos=30)
    alone = load_faces68(frames_csv, frames_dir, size=32)
    both = load_sources([str(photos_csv), str(frames_csv)], [str(photos_dir), str(frames_dir)], size=32,
                        shares=[3, 1])
    assert both.shares == (0.75, 0.25) and both.sources.tolist().count(1) == len(alone)
    _, val_alone = hold_out_people(alone, 0.2, frames_csv)
    _, val_both = hold_out_people(both, 0.2, [photos_csv, frames_csv])
    assert val_both.source(1).names == val_alone.names  # the frames' held-out people are unchanged
    order = both.epoch_order(torch.Generator().manual_seed(0))
    share = (both.sources[order] == 0).float().mean()
    assert abs(len(order) - len(both)) <= 2 and abs(float(share) - 0.75) < 0.02


def test_sources_that_do_not_fit_together_are_refused(tmp_path):
    frames_csv, frames_dir = write_faces68(tmp_path, n=6)
    with pytest.raises(InputError, match="--share has 1 values for 2"):
        load_sources([str(frames_csv)] * 2, [str(frames_dir)] * 2, size=32, shares=[1])
    with pytest.raises(InputError, match="one --images per"):
        load_sources([str(frames_csv)], [str(frames_dir)] * 2, size=32)
    a = load_faces68(frames_csv, frames_dir, size=32)
    b = load_faces68(frames_csv, frames_dir, size=48)
    with pytest.raises(InputError, match="layout or crop size"):
        join([a, b])


def test_photo_troubles_change_pixels_not_points(faces32):
    cfg = AugmentConfig(flip=False, rotate=0, scale=0, shift=0, brightness=0, contrast=0,
                        occlude=1.0, blur=1.0, noise=0.05)
    x, points = augment(faces32.images[:8], faces32.points[:8], cfg, None, torch.Generator().manual_seed(0))
    torch.testing.assert_close(points, faces32.points[:8])
    assert x.shape == (8, 1, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert (x - faces32.images[:8].float() / 255).abs().mean() > 0.02
    plain = degrade(torch.full((2, 1, 8, 8), 0.5), AugmentConfig(), None)  # all off: untouched
    assert torch.equal(plain, torch.full((2, 1, 8, 8), 0.5))
    assert parse_augment("occlude=0.3,blur=0.2,noise=0.04") == {"occlude": 0.3, "blur": 0.2, "noise": 0.04}
    with pytest.raises(InputError, match="occlude must be a share"):
        parse_augment("occlude=2")


def test_300w_figures():
    errors = torch.tensor([0.02, 0.05, 0.09, 0.12])
    figures = nme_summary(errors)
    assert figures["nme"] == pytest.approx(0.07)
    assert figures["failure8"] == 0.5 and figures["failure10"] == 0.25
    # the cumulative error curve is 1/4 from 2% and 1/2 from 5%: area (0.25 * 3 + 0.5 * 3) / 8
    assert figures["auc8"] == pytest.approx(0.28125, abs=1e-3)
    assert nme_summary(torch.zeros(10))["auc8"] == pytest.approx(1.0, abs=2e-3)


def test_face_box_and_its_inverse():
    points = np.random.default_rng(0).uniform(20, 120, (5, 68, 2)).astype(np.float32)
    boxes = face_box(points)
    assert np.allclose(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])  # square
    lo, hi = points.min(1), points.max(1)
    side = (hi - lo).max(1)
    square = extent_of(boxes)
    assert np.allclose(square[:, 2] - square[:, 0], side, atol=1e-3)
    assert np.allclose((square[:, 0] + square[:, 2]) / 2, (lo[:, 0] + hi[:, 0]) / 2, atol=1e-3)
    corners = np.stack([lo, hi], 1)  # the rule reads the extent alone
    assert np.allclose(face_box(corners), boxes, atol=1e-4)


def test_drawn_box_follows_the_face_and_is_square():
    rng = np.random.default_rng(0)
    points = rng.uniform(20, 120, (4, 68, 2))
    boxes = drawn_box(points)
    assert np.allclose(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    # moved and scaled with the face; turned with it, the same side about the turned centre
    assert np.allclose(drawn_box(points * 2 + 5), boxes * 2 + 5)
    turn = np.array([[0.0, -1.0], [1.0, 0.0]])
    turned = drawn_box(points @ turn.T)
    assert np.allclose(turned[:, 2] - turned[:, 0], boxes[:, 2] - boxes[:, 0])
    assert np.allclose((turned[:, :2] + turned[:, 2:]) / 2, ((boxes[:, :2] + boxes[:, 2:]) / 2) @ turn.T)
    # an upright face: the box spans the eyes, reaches below the mouth and is centred between them
    face = np.zeros((68, 2))
    face[[36, 39, 42, 45]] = [[30, 40], [45, 40], [55, 40], [70, 40]]
    face[[48, 54]], face[30] = [[38, 80], [62, 80]], [50, 62]
    x0, y0, x1, y1 = drawn_box(face)
    assert x0 < 30 and x1 > 70 and y0 < 40 < 80 < y1 and (x0 + x1) / 2 == pytest.approx(50)


def test_drawn_box_meets_the_web_faces_drawn_boxes(shared):
    """From the true eye corners, nose tip and mouth corners of the web-faces validation faces
    (which the rule was not fitted on), the box meets the drawn one at IoU 0.9 on average."""
    from cnnvision.data.layouts import WEB21_TO_68
    names, boxes, points21 = read_web_faces(shared / "web-faces" / "faces.csv")
    photos, _ = group_by_photo(names, boxes)
    _, val = split_photos(photos, 0.15)
    held = {photos[i] for i in val}
    rows = np.array([n in held for n in names])
    points = np.zeros((len(names), 68, 2))
    for web, ibug in WEB21_TO_68.items():
        points[:, ibug] = points21[:, web]
    overlap = box_iou(torch.from_numpy(drawn_box(points[rows])).float(),
                      torch.from_numpy(boxes[rows]).float()).diagonal()
    assert 200 < rows.sum() < 230 and overlap.mean() > 0.89 and (overlap > 0.5).all()


def test_drawn_extent_frames_a_drawn_box_as_the_points_frame_their_face():
    box = np.array([10.0, 20.0, 107.5, 117.5])  # side 97.5
    square = drawn_extent(box)
    assert square[2] - square[0] == pytest.approx(100.0) and square[3] - square[1] == pytest.approx(100.0)
    assert (square[0] + square[2]) / 2 == pytest.approx(58.75) and (square[1] + square[3]) / 2 == pytest.approx(70.15)


def test_web_faces_crops_show_faces_at_the_scale_of_the_300w_crops(shared):
    """Framed from their drawn boxes (``drawn_extent``), the web-faces faces stand in their crops
    as the faces-300w faces, framed from their points, do: eyes as far apart (median within 10%)."""
    from cnnvision.data.faces68 import load_web68
    web = load_web68(shared / "web-faces" / "faces.csv", shared / "web-faces" / "images", size=32)
    photos = load_faces68(shared / "faces-300w" / "training_keypoints.csv", shared / "faces-300w" / "images", size=32)
    eyes = [np.nanmedian(np.linalg.norm(d.points[:, 45] - d.points[:, 36], axis=-1)) for d in (web, photos)]
    assert 0.9 < eyes[0] / eyes[1] < 1.1


@pytest.mark.parametrize("style", ["face", "drawn", "points"])
def test_each_box_style_frames_its_boxes_back_around_the_points(style):
    points = np.random.default_rng(1).uniform(20, 120, (3, 68, 2))
    boxes = label_box(points, style)
    lo, hi = points.min(1), points.max(1)
    square = framing_of(boxes, style)
    if style == "points":
        assert np.allclose(square, np.concatenate([lo, hi], 1))
    else:
        side = (hi - lo).max(1)
        assert np.allclose(square[:, 2] - square[:, 0], side) and np.allclose(square[:, 3] - square[:, 1], side)
        assert np.allclose((square[:, :2] + square[:, 2:]) / 2, (lo + hi) / 2)
    assert np.allclose(label_box(points, "face"), face_box(points))
    drawn = label_box(points, "drawn")  # the drawn convention: about the extent's own square
    assert np.allclose(drawn[:, 2] - drawn[:, 0], 0.975 * (hi - lo).max(1), rtol=1e-3)


def test_a_detector_trained_on_photos_learns_the_drawn_boxes(tmp_path):
    """Web photos beside photos with 68 points: every source boxed as a person draws (box style
    ``drawn``); frames alone keep the extent of the points."""
    from cnnvision.cli import main
    (tmp_path / "w").mkdir()
    (tmp_path / "p").mkdir()
    web_csv, web_dir = write_web_faces(tmp_path / "w", photos=12)
    photos_csv, photos_dir = write_photos68(tmp_path / "p", photos=12)
    out = tmp_path / "det"
    assert main(["train", "--task", "detection", "--data", str(web_csv), "--images", str(web_dir),
                 "--data", str(photos_csv), "--images", str(photos_dir), "--scene-count", "16", "--image-size", "64",
                 "--width", "4", "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["net"]["box_style"] == "drawn"
    frames_csv, frames_dir = write_faces68(tmp_path, n=9)
    assert main(["train", "--task", "detection", "--data", str(frames_csv), "--images", str(frames_dir),
                 "--scene-count", "8", "--image-size", "64", "--width", "4", "--epochs", "1", "--max-steps", "1",
                 "--batch-size", "8", "--out", str(tmp_path / "frames")]) == 0
    assert json.loads((tmp_path / "frames" / "config.json").read_text())["net"]["box_style"] == "points"


def test_ignored_cells_neither_face_nor_background():
    target = encode(torch.tensor([[8.0, 8.0, 40.0, 40.0]]), 8, 8, 8, 32.0, ignore=torch.tensor([[40.0, 40.0, 64.0, 64.0]]))
    assert target[0, 6, 6] == -1 and target[0, 2, 2] == 1 and target[0, 0, 7] == 0
    net = DetectorNet(DetectorConfig(width=4))
    out = torch.zeros(1, 5, 8, 8)
    loud = out.clone()
    loud[0, 0, 5:, 5:] = 50.0  # confident "face" only where faces are ignored
    assert torch.isclose(net.loss(out, target[None]), net.loss(loud, target[None]))
    loud[0, 0, 0, 7] = 50.0    # and on background: the loss rises
    assert net.loss(loud, target[None]) > net.loss(out, target[None]) + 0.1


def test_photo_crops_keep_faces_and_ignore_cut_ones():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    boxes = np.array([[100, 100, 160, 160], [300, 50, 340, 90]], np.float32)
    unlabelled = np.array([[10, 200, 60, 250]], np.float32)
    images, found, ignored = photo_crops([photo], [boxes], [unlabelled], 40, size=64, seed=0, empty=0.2)
    assert images.shape == (40, 3, 64, 64) and images.dtype == torch.uint8
    assert sum(len(f) for f in found) > 30
    for f in found:
        assert (f >= 0).all() and (f <= 64).all() and (f[:, 2:] > f[:, :2]).all()
    assert any(len(g) for g in ignored)


def test_photo_crops_around_boxes_taller_than_wide():
    """A hard negative (or a drawn box) three times taller than wide: the squares framed around it
    hold all of it where they are large enough, and cutting them does not fail (it did: 'high -
    low < 0' when the square was wider than the box but not as tall)."""
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    tall = np.array([[200, 40, 230, 130]], np.float32)
    for hard_share in (0.0, 1.0):  # as a labelled face, and as a hard negative
        images, found, _ = photo_crops([photo], [tall if not hard_share else np.zeros((0, 4), np.float32)],
                                       [np.zeros((0, 4), np.float32)], 30, size=64, seed=0, empty=0.0,
                                       hard=[tall], hard_share=hard_share)
        assert images.shape == (30, 3, 64, 64)
    assert sum(len(f) for f in found) == 0  # hard negatives hold no face


def test_photo_crops_enlarge_a_face_at_most_so_much():
    """``enlarge_most``: a face is drawn at most that many times its size in the photo (a face too
    small for ``smallest`` at that factor is drawn at that factor); without it, at any size from
    ``smallest`` to ``largest`` of the picture."""
    rng = np.random.default_rng(2)
    photo = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    none = [np.zeros((0, 4), np.float32)]
    for face, most in ((20.0, 1.5), (6.0, 1.5), (20.0, None)):
        boxes = np.array([[150, 100, 150 + face, 100 + face]], np.float32)
        _, found, _ = photo_crops([photo], [boxes], none, 60, size=64, seed=0, empty=0.0, enlarge_most=most)
        sides = np.array([float(f[0, 2] - f[0, 0]) for f in found if len(f)])
        assert len(sides) > 40
        if most is None:
            assert sides.max() > 2 * face and sides.min() >= 12.0 - 1e-3
        else:
            assert sides.max() <= most * face + 1e-3
            assert sides.min() >= min(12.0, most * face) - 1e-3


def test_enlarge_most_is_for_detection_and_positive(tmp_path, capsys):
    from cnnvision.cli import main
    assert main(["train", "--synthetic-count", "8", "--enlarge-most", "1.5", "--out", str(tmp_path / "k")]) != 0
    assert main(["train", "--task", "detection", "--enlarge-most", "0", "--out", str(tmp_path / "d")]) != 0
    err = capsys.readouterr().err
    assert err.count("--enlarge-most") == 2 and "for detection only" in err and "Traceback" not in err


def test_web_faces_reader_and_photo_split(tmp_path):
    header = "image,box_x0,box_y0,box_x1,box_y1," + ",".join(f"x{i},y{i}" for i in range(21))
    row = lambda name, x: f"{name},{x},10,{x + 30},40," + ",".join(["20"] * 42)  # noqa: E731
    # a.jpg's third row labels its first face again (box 1 px wider: IoU 0.97), and goes
    rows = [header, row("a.jpg", 5), row("a.jpg", 50), row("b.jpg", 5), row("a.jpg", 5).replace(",35,", ",36,", 1)]
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    names, boxes, points = read_web_faces(tmp_path / "faces.csv")
    assert names == ["a.jpg", "a.jpg", "b.jpg"] and boxes.shape == (3, 4) and points.shape == (3, 21, 2)
    assert boxes[:, 0].tolist() == [5, 50, 5] and boxes[:, 2].tolist() == [35, 80, 35]
    photos, per_photo = group_by_photo(names, boxes)
    assert photos == ["a.jpg", "b.jpg"] and [len(b) for b in per_photo] == [2, 1]
    train, val = split_photos([f"p{i}" for i in range(20)], 0.25)
    assert len(val) == 5 and not set(train) & set(val)
    (tmp_path / "bad.csv").write_text(header + "\n" + "c.jpg,5,10,1,40," + ",".join(["20"] * 42) + "\n")
    with pytest.raises(InputError, match="row 2: empty box"):
        read_web_faces(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text(header + "\n" + "c.jpg,5,10,30,inf," + ",".join(["20"] * 42) + "\n")
    with pytest.raises(InputError, match="row 2: missing or impossible"):
        read_web_faces(tmp_path / "nan.csv")


def write_web_faces(folder, photos=20):
    """A web-faces CSV: a face of 80 px on every photo, and one of 40 px on every other."""
    rng = np.random.default_rng(2)
    (folder / "web").mkdir()
    lines = ["image,box_x0,box_y0,box_x1,box_y1," + ",".join(f"x{i},y{i}" for i in range(21))]
    for i in range(photos):
        name = f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(folder / "web" / name)
        for x, side in [(10, 80)] + [(100, 40)] * (i % 2):
            pts = rng.uniform(x, x + side, (21, 2))
            lines.append(f"{name},{x},20,{x + side},{20 + side}," + ",".join(f"{v:.2f}" for v in pts.flatten()))
    (folder / "faces.csv").write_text("\n".join(lines) + "\n")
    return folder / "faces.csv", folder / "web"


def test_web_faces_train_68_point_nets_on_their_16_shared_points(tmp_path):
    from cnnvision.data import load_keypoints, sniff
    from cnnvision.data.layouts import WEB21_TO_68
    csv_path, images = write_web_faces(tmp_path)
    assert sniff(csv_path) == "web68"
    data = load_keypoints(csv_path, images, 32)
    assert len(data) == 20 and data.layout.name == "ibug68"  # the 40 px faces are left out
    labelled = ~torch.isnan(data.points[..., 0])
    assert labelled.sum(1).tolist() == [16] * 20 and labelled[:, sorted(WEB21_TO_68.values())].all()
    _, _, points = read_web_faces(csv_path)
    first = data.boxes[0].numpy()
    back = (data.points[0, 36].numpy() + 0.5) * (first[2] - first[0]) / 32 + first[:2] - 0.5
    assert back == pytest.approx(points[0, 6], abs=1e-3)  # the left eye's outer corner, in photo pixels
    # the validation photos are the detector's, whatever the shares of faces
    train, val = hold_out_people(data, 0.15, csv_path)
    _, detector_val = split_photos([f"{i:06d}.jpg" for i in range(20)], 0.15)
    assert sorted(set(val.names)) == [f"{i:06d}.jpg" for i in detector_val] and len(train) == 17
    frames_csv, frames_dir = write_faces68(tmp_path, n=30)
    both = load_sources([str(frames_csv), str(csv_path)], [str(frames_dir), str(images)], size=32, shares=[1, 1])
    train, val = hold_out_people(both, 0.15, [frames_csv, csv_path])
    assert sorted({n for n, s in zip(val.names, val.sources.tolist()) if s == 1}) == \
        [f"{i:06d}.jpg" for i in detector_val]
    with pytest.raises(InputError, match="--images"):
        load_keypoints(csv_path, None, 32)


def test_train_on_two_sources_records_them(tmp_path):
    from cnnvision.cli import main
    frames_csv, frames_dir = write_faces68(tmp_path, n=24)
    (tmp_path / "p").mkdir()
    photos_csv, photos_dir = write_photos68(tmp_path / "p", photos=24)
    out = tmp_path / "run"
    rc = main(["train", "--data", str(photos_csv), "--images", str(photos_dir), "--data", str(frames_csv),
               "--images", str(frames_dir), "--share", "0.5,0.5", "--net", "kpheat", "--image-size", "32",
               "--width", "4", "--epochs", "1", "--max-steps", "2", "--batch-size", "8",
               "--augment", "rotate=30,occlude=0.3,blur=0.3,noise=0.03", "--out", str(out)])
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert config["split"] == ["photo", "identity"] and config["shares"] == [0.5, 0.5]
    assert config["augment"]["occlude"] == 0.3
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"nme", "nme_source0", "nme_source1", "auc8", "failure8"} <= set(metrics)
    # --init from that run's weights into a larger crop: the convolutions carry over
    rc = main(["train", "--data", str(frames_csv), "--images", str(frames_dir), "--net", "kpheat", "--image-size",
               "48", "--width", "4", "--epochs", "1", "--max-steps", "1", "--batch-size", "8",
               "--init", str(out / "best.pt"), "--out", str(tmp_path / "run2")])
    assert rc == 0 and json.loads((tmp_path / "run2" / "config.json").read_text())["init"] == str(out / "best.pt")


def test_flags_for_one_source_tasks_are_refused(tmp_path, capsys):
    from cnnvision.cli import main
    assert main(["train", "--task", "classification", "--data", "a", "--data", "b", "--out", str(tmp_path / "r")]) == 2
    assert "--data given 2 times" in capsys.readouterr().err
    assert main(["train", "--task", "segmentation", "--init", "x.pt", "--data", "a", "--out", str(tmp_path / "r")]) == 2
    assert "--init applies to keypoint training only" in capsys.readouterr().err


def test_real_photos_split_by_photo(shared):
    data = load_faces68(shared / "faces-300w" / "training_keypoints.csv", shared / "faces-300w" / "images", size=32)
    train, val = hold_out_people(data, 0.15, "faces-300w")
    assert not set(train.names) & set(val.names)
    assert 250 < len(val) < 350


def test_kaggle_style_crops_join_a_kaggle_csv(tmp_path, faces96):
    from test_data import write_kaggle_csv
    write_kaggle_csv(faces96, tmp_path / "training.csv")
    csv_path, images = write_photos68(tmp_path, photos=10, size=120)
    both = load_sources([str(tmp_path / "training.csv"), str(csv_path)], [str(images)], shares=[0.7, 0.3])
    assert both.layout.name == "kaggle15" and both.images.shape[1:] == (1, 96, 96)
    mine = both.source(1)
    eyes = (mine.points[:, 0] + mine.points[:, 1]) / 2
    distance = (mine.points[:, 0] - mine.points[:, 1]).norm(dim=-1)
    assert (eyes - torch.tensor([48.3, 37.8])).abs().max() < 9 and ((distance - 36.3).abs() < 36.3 * 0.11).all()
    assert mine.points[:, 0, 0].mean() > mine.points[:, 1, 0].mean()  # Kaggle's left eye is on the image's right


def test_the_crop_margin_is_the_checkpoint_s(tmp_path):
    from cnnvision import checkpoint
    from cnnvision.data import load_keypoints
    state = checkpoint.load(checkpoint.pretrained_path("landmarks68"))
    assert state["net"]["config"]["margin"] == 0.15  # recorded now
    del state["net"]["config"]["margin"]  # as checkpoints made before it was recorded...
    torch.save(state, tmp_path / "older.pt")
    assert checkpoint.load_net(tmp_path / "older.pt").cfg.margin == 0.15  # ...load with today's value
    csv_path, images = write_faces68(tmp_path, n=4)
    usual, wider = load_keypoints(csv_path, images, 32), load_keypoints(csv_path, images, 32, margin=0.25)
    side = lambda d: d.boxes[:, 2] - d.boxes[:, 0]  # noqa: E731
    torch.testing.assert_close(side(wider) / side(usual), torch.full((4,), 1.5 / 1.3))
