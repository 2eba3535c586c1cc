import gzip
import time

import numpy as np
import pytest
import torch
from PIL import Image

from cnnvision.data import load_keypoints, sniff, split_by_identity
from cnnvision.data.augment import AugmentConfig, augment, pixels_to_unit, random_transforms, unit_to_pixels, warp
from cnnvision.data.dataset import KeypointDataset, identity_from_name
from cnnvision.data.faces68 import load_faces68
from cnnvision.data.kaggle import KEYPOINT_COLUMNS, load_kaggle, parse_csv, write_kaggle_csv
from cnnvision.data.layouts import IBUG68, KAGGLE15
from cnnvision.errors import InputError


def test_flip_permutations_are_involutions():
    for layout in (KAGGLE15, IBUG68):
        perm = layout.flip_permutation()
        assert sorted(perm) == list(range(layout.num_points))
        assert [perm[p] for p in perm] == list(range(layout.num_points))
    assert KAGGLE15.flip_permutation()[0] == 1  # left eye centre <-> right eye centre


def test_unit_coordinates_round_trip():
    p = torch.rand(4, 15, 2) * 96
    torch.testing.assert_close(unit_to_pixels(pixels_to_unit(p, 96), 96), p)
    assert pixels_to_unit(torch.tensor([-0.5, 95.5]), 96).tolist() == [-1.0, 1.0]


def test_mirror_swaps_left_and_right_and_twice_is_identity(faces32):
    images, points = faces32.images[:6], faces32.points[:6]
    x = images.float() / 255
    eye = torch.eye(2).repeat(6, 1, 1)
    A = eye.clone()
    A[:, 0, 0] = -1
    mirror = torch.ones(6, dtype=torch.bool)
    perm = KAGGLE15.flip_permutation()
    once, p1 = warp(x, points, A, torch.zeros(6, 2), mirror, perm)
    torch.testing.assert_close(once, x.flip(-1), atol=1e-5, rtol=0)
    # the subject's left eye is on the image's right; after a mirror the new "left eye" is the
    # mirror image of the old right eye
    torch.testing.assert_close(p1[:, 0, 0], 31 - points[:, 1, 0])
    assert (p1[:, 0, 0] > p1[:, 1, 0]).all()
    twice, p2 = warp(once, p1, A, torch.zeros(6, 2), mirror, perm)
    torch.testing.assert_close(twice, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(p2, points, atol=1e-4, rtol=0)


def test_points_follow_pixels_under_random_warps():
    """Put one bright pixel at each of 3 points; after augmentation the points must sit on the
    bright spots."""
    g = torch.Generator().manual_seed(1)
    n, size = 16, 48
    points = torch.tensor([[12.0, 14.0], [30.0, 20.0], [22.0, 34.0]]).repeat(n, 1, 1)
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    for x, y in points[0].long().tolist():
        images[:, 0, y - 1:y + 2, x - 1:x + 2] = 255  # 3x3 spots, robust to resampling
    cfg = AugmentConfig(flip=False, rotate=25, scale=0.15, shift=0.1, brightness=0, contrast=0)
    out, moved = augment(images, points, cfg, None, g)
    for i in range(n):
        for k in range(3):
            x, y = moved[i, k].round().long().tolist()
            if 1 <= x < size - 1 and 1 <= y < size - 1:
                assert out[i, 0, y, x] > 0.5, f"image {i} point {k} is not on its spot"


def test_flip_augmentation_keeps_points_on_features(faces96):
    """Mirrored synthetic faces: the (new) left eye centre is still on a dark pupil."""
    g = torch.Generator().manual_seed(0)
    cfg = AugmentConfig(flip=True, rotate=0, scale=0, shift=0, brightness=0, contrast=0)
    x, p = augment(faces96.images[:16], faces96.points[:16], cfg, KAGGLE15.flip_permutation(), g)
    for i in range(16):
        for k in (0, 1):  # eye centres are drawn as dark pupils
            cx, cy = p[i, k].round().long().tolist()
            around = x[i, 0, cy - 6:cy + 7, cx - 6:cx + 7]
            assert x[i, 0, cy, cx] <= around.mean(), f"face {i}: point {k} is not on a pupil"
        assert p[i, 0, 0] > p[i, 1, 0]  # left eye (subject's) stays on the image's right


def test_missing_points_stay_missing():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(4, 15, 2) * 32
    points[:, 3] = float("nan")
    _, out = augment(torch.zeros(4, 1, 32, 32, dtype=torch.uint8), points, AugmentConfig(), KAGGLE15.flip_permutation(), g)
    nan_rows = torch.isnan(out).all(-1)
    assert nan_rows.sum() == 4  # one missing point per face, wherever the flip moved it
    assert torch.isfinite(out[~nan_rows]).all()


def test_intensity_jitter_stays_in_range():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8)
    x, _ = augment(images, None, AugmentConfig(brightness=0.5, contrast=0.9), None, g)
    assert x.min() >= 0 and x.max() <= 1
    A, t, m = random_transforms(8, AugmentConfig(flip=False), g)
    assert not m.any() and A.shape == (8, 2, 2)


def test_kaggle_csv_round_trip_and_missing_labels(tmp_path, faces96):
    faces96.points[2, 5] = float("nan")
    path = tmp_path / "training.csv"
    write_kaggle_csv(faces96, path)
    data = load_kaggle(path)
    assert len(data) == len(faces96) and data.images.shape[1:] == (1, 96, 96)
    torch.testing.assert_close(data.images, faces96.images)
    assert torch.isnan(data.points[2, 5]).all() and torch.isfinite(data.points[3]).all()
    torch.testing.assert_close(data.points.nan_to_num(), faces96.points.nan_to_num(), atol=1e-3, rtol=0)
    assert sniff(path) == "kaggle"


def test_kaggle_gzip_and_cache_is_fast(tmp_path, faces96):
    path = tmp_path / "training.csv.gz"
    write_kaggle_csv(faces96, path)
    first = load_kaggle(path)
    start = time.perf_counter()
    again = load_kaggle(path)
    assert time.perf_counter() - start < 0.5
    torch.testing.assert_close(first.images, again.images)
    # an edited file is parsed again, not served stale from the cache
    write_kaggle_csv(faces96.subset(range(10)), path)
    assert len(load_kaggle(path)) == 10


def write_rows(path, rows, header=None):
    header = header or KEYPOINT_COLUMNS + ["Image"]
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for r in rows:
            f.write(r + "\n")


GOOD_POINTS = ",".join(["48.0"] * 30)
GOOD_PIXELS = " ".join(["7"] * 9216)


@pytest.mark.parametrize("row,message", [
    (GOOD_POINTS + "," + " ".join(["7"] * 9215), "row 3: has 9215 pixels"),
    (GOOD_POINTS + "," + " ".join(["7"] * 9215 + ["x"]), "row 3: non-numeric value"),
    (GOOD_POINTS + "," + " ".join(["7"] * 9215 + ["300"]), "row 3: has pixel values outside 0-255"),
    ("abc," + ",".join(["1"] * 29) + "," + GOOD_PIXELS, "row 3: non-numeric value"),
    ("1,2," + GOOD_PIXELS, "row 3: has 3 fields, expected 31"),
])
def test_malformed_rows_name_the_row_or_are_skipped(tmp_path, capsys, row, message):
    path = tmp_path / "bad.csv"
    write_rows(path, [GOOD_POINTS + "," + GOOD_PIXELS, row, GOOD_POINTS + "," + GOOD_PIXELS])
    with pytest.raises(InputError, match=message) as e:
        parse_csv(path)
    assert str(path) in str(e.value)
    arrays = parse_csv(path, skip_bad_rows=True)
    assert len(arrays["images"]) == 2 and int(arrays["skipped"]) == 1
    assert len(load_kaggle(path, skip_bad_rows=True)) == 2
    assert "skipped 1 malformed rows" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    (b"", "file is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\x00", "not a text CSV"),
    (b"a,b,c\n1,2,3\n", "no 'Image' column"),
    (b"left_eye_center_x,Image\n1," + GOOD_PIXELS.encode() + b"\n", "missing keypoint columns"),
    (b"\x1f\x8b\x08\x00garbage", "cannot read"),
])
def test_malformed_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "training.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_kaggle(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_keypoints(tmp_path / "nope.csv")


def write_faces68(folder, n=6, size=60):
    """A tiny 68-point dataset: random images and points inside them."""
    rng = np.random.default_rng(0)
    (folder / "imgs").mkdir()
    lines = ["," + ",".join(str(i) for i in range(136))]
    for i in range(n):
        name = f"Person_{chr(65 + i % 3)}_{i:02d}.jpg"
        Image.fromarray(rng.integers(0, 255, (size, size + 10, 3), dtype=np.uint8)).save(folder / "imgs" / name)
        pts = rng.uniform(10, 50, (68, 2))
        lines.append(name + "," + ",".join(f"{v:.1f}" for v in pts.flatten()))
    (folder / "points.csv").write_text("\n".join(lines) + "\n")
    return folder / "points.csv", folder / "imgs"


def test_faces68_crops_points_and_identities(tmp_path):
    csv_path, images = write_faces68(tmp_path)
    data = load_faces68(csv_path, images, size=32, channels=3)
    assert data.images.shape == (6, 3, 32, 32) and data.layout is IBUG68
    assert data.identities[:3] == ["Person_A", "Person_B", "Person_C"]
    # points map into the crop with the margin and back to the source exactly (the file counts
    # pixels from 1, the package from 0)
    from cnnvision.data.faces68 import POINTS_ORIGIN
    from cnnvision.images import from_crop
    raw = np.loadtxt(csv_path, delimiter=",", skiprows=1, usecols=range(1, 137), dtype=np.float32) - POINTS_ORIGIN
    for i in range(6):
        back = from_crop(data.points[i].numpy(), data.boxes[i].tolist(), 32)
        np.testing.assert_allclose(back, raw[i].reshape(68, 2), atol=1e-3)
        assert data.points[i].min() > 0 and data.points[i].max() < 32
    assert sniff(csv_path) == "faces68"


def test_faces68_bad_image_and_missing_image(tmp_path):
    csv_path, images = write_faces68(tmp_path)
    (images / "Person_B_01.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="Person_B_01.jpg: cannot decode image"):
        load_faces68(csv_path, images, use_cache=False)
    (images / "Person_B_01.jpg").unlink()
    with pytest.raises(InputError, match="Person_B_01.jpg: no such file"):
        load_faces68(csv_path, images, use_cache=False)
    with pytest.raises(InputError, match="no such image folder"):
        load_faces68(csv_path, tmp_path / "elsewhere")


def test_split_by_identity_keeps_people_apart():
    people = [f"p{i % 13}" for i in range(200)]
    train, val = split_by_identity(people, 200, 0.2, seed=3)
    assert len(train) + len(val) == 200
    assert not {people[i] for i in train.tolist()} & {people[i] for i in val.tolist()}
    assert 0.1 < len(val) / 200 < 0.35
    train, val = split_by_identity(None, 100, 0.2)
    assert len(val) == 20 and not set(train.tolist()) & set(val.tolist())


def test_identity_from_frame_name():
    assert identity_from_name("Luis_Fonsi_21.jpg") == "Luis_Fonsi"
    assert identity_from_name("dir/Abdel_Aziz_Al-Hakim_01.jpg") == "Abdel_Aziz_Al-Hakim"


def test_synthetic_faces_are_deterministic_and_labelled(faces32):
    from cnnvision.data.synthetic import synthetic_faces
    again = synthetic_faces(64, size=32, people=16)
    assert torch.equal(again.images, faces32.images)
    assert torch.isfinite(faces32.points).all()
    assert len(set(faces32.identities)) == 16


def test_dataset_validates_shapes():
    with pytest.raises(ValueError):
        KeypointDataset(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, 5, 2), KAGGLE15)


def test_real_proxy_loads_with_identities(shared):
    data = load_kaggle(shared / "kaggle-fkd" / "proxy_training.csv.gz")
    assert len(data) == 3519 and len(set(data.identities)) == 288
    labelled = torch.isfinite(data.points).all(-1).all(-1)
    assert 800 < labelled.sum() < 1200  # the real missing-label pattern: most rows are partial
    start = time.perf_counter()
    load_kaggle(shared / "kaggle-fkd" / "proxy_training.csv.gz")
    assert time.perf_counter() - start < 1.0


def test_gzip_detection_is_by_content(tmp_path, faces96):
    path = tmp_path / "t.csv"
    write_kaggle_csv(faces96.subset(range(3)), tmp_path / "t.csv.gz")
    path.write_bytes((tmp_path / "t.csv.gz").read_bytes())
    assert gzip.open(path).read(10)
    assert len(load_kaggle(path)) == 3
