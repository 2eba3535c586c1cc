"""The one-stage FCN face detector: shapes, targets, flips, learning, AP on a toy set."""
import numpy as np
import pytest
import torch

from cnnvision.boxes import decode, encode
from cnnvision.data.augment import AugmentConfig
from cnnvision.data.scenes import DetectionDataset, clutter, frames, scenes
from cnnvision.nets.detect import DetectorConfig, DetectorNet
from helpers import overfit


def toy_set(n=8, size=64):
    """Bright squares (the 'faces') on dark noise, boxes known."""
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 3, size, size, generator=g) * 60).to(torch.uint8)
    boxes = []
    for i in range(n):
        s = int(torch.randint(12, 28, (1,), generator=g))
        x, y = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
        images[i, :, y:y + s, x:x + s] = 230
        boxes.append(torch.tensor([[x, y, x + s, y + s]], dtype=torch.float32))
    return DetectionDataset(images, boxes)


@pytest.mark.parametrize("hw", [(64, 64), (70, 100), (480, 640)])
def test_any_input_size_gives_a_stride_8_map(hw):
    net = DetectorNet(DetectorConfig(width=4))
    out = net(torch.rand(2, 3, *hw))
    assert out.shape == (2, 5, -(-hw[0] // 8), -(-hw[1] // 8))
    assert torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient():
    net = DetectorNet(DetectorConfig(width=4))
    data = toy_set(2)
    x, y = data.batch(torch.arange(2))
    net.loss(net(x), y).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_deeper_detector_starts_as_the_shallower_one_it_was_built_from():
    """--depth adds zero-initialised residual blocks: the shallower net's weights load into it
    unchanged and the two compute the same boxes, until training reaches the new blocks."""
    torch.manual_seed(0)
    shallow = DetectorNet(DetectorConfig(width=4))
    data = toy_set(4)
    x, y = data.batch(torch.arange(4))
    shallow.loss(shallow(x), y).backward()  # running statistics away from their defaults
    for p in shallow.parameters():
        p.data += 0.1 * torch.randn_like(p)
    deep = DetectorNet(DetectorConfig(width=4, depth=3))
    missing, unexpected = deep.load_state_dict(shallow.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(("more8.", "more32.")) for k in missing)
    shallow.eval(), deep.eval()
    with torch.no_grad():
        assert torch.equal(deep(x), shallow(x))
    deep.train()
    before = {k: v.clone() for k, v in deep.state_dict().items() if k.startswith("more")}
    optimizer = torch.optim.Adam(deep.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        deep.loss(deep(x), y).backward()
        optimizer.step()
    weights = [k for k in before if k.endswith("weight")]
    assert all(not torch.equal(before[k], deep.state_dict()[k]) for k in weights)
    with pytest.raises(ValueError, match="depth 5"):
        DetectorNet(DetectorConfig(depth=5))


@pytest.mark.parametrize("strided", [1, 2])
def test_a_strided_detector_takes_a_plain_one_s_weights_and_samples_its_convolutions(strided):
    """--strided N: the first N stages convolve at stride 2 where the plain detector convolves
    everywhere and max-pools. The weights are the same tensors under the same names, and a
    strided stage's output is every second row and column of the plain convolution's."""
    torch.manual_seed(0)
    plain = DetectorNet(DetectorConfig(width=4)).eval()
    fast = DetectorNet(DetectorConfig(width=4, strided=strided)).eval()
    fast.load_state_dict(plain.state_dict())  # strict: no name or shape differs
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(fast.down8[0](x), plain.down8[0](x)[..., ::2, ::2])
        assert fast(x).shape == plain(x).shape == (2, 5, 8, 12)
        assert fast(torch.rand(1, 3, 70, 100)).shape == (1, 5, 9, 13)
    with pytest.raises(ValueError, match="strided 3"):
        DetectorNet(DetectorConfig(strided=3))


def test_mirrored_batch_keeps_boxes_on_the_squares():
    data = toy_set(8)
    data.augment = AugmentConfig(rotate=0, scale=0, shift=0, brightness=0, contrast=0)
    x, target = data.batch(torch.arange(8), torch.Generator().manual_seed(1))
    for i in range(8):
        boxes, _ = decode(target[i], 8, 32.0, 0.5)
        x0, y0, x1, y1 = boxes[0].round().long().tolist()
        assert x[i, 0, y0 + 1:y1 - 1, x0 + 1:x1 - 1].min() > 0.8  # the bright square is inside its box


def test_turned_scaled_and_shifted_pictures_keep_their_boxes_on_the_squares():
    data = toy_set(16)
    data.augment = AugmentConfig(rotate=30, scale=0.2, shift=0.1)
    x = data.images.float() / 255
    turned, boxes, ignore = data.warped(x, [b.clone() for b in data.boxes], [None] * 16,
                                        torch.Generator().manual_seed(3))
    checked = 0
    for picture, b, g, before in zip(turned, boxes, ignore, data.boxes):
        if len(b) == 0:  # moved mostly out of the picture: an ignore region instead
            assert len(g) == 1
            continue
        bright = (picture[0] > 0.5).nonzero().float()  # (y, x) of the square's pixels
        cy, cx = bright.mean(0).tolist()
        (x0, y0, x1, y1), = b.tolist()
        if x0 > 0 and y0 > 0 and x1 < 64 and y1 < 64:  # wholly inside: centre and size follow the square
            assert abs((x0 + x1) / 2 - cx - 0.5) < 1.0 and abs((y0 + y1) / 2 - cy - 0.5) < 1.0
            side = (before[0, 2] - before[0, 0]).item()
            assert (x1 - x0) == pytest.approx(y1 - y0)
            assert (x1 - x0) / side == pytest.approx(len(bright) ** 0.5 / side, rel=0.1)
            checked += 1
    assert checked >= 10


def test_a_box_moved_out_of_the_picture_is_ignored_not_background():
    data = toy_set(1)
    data.boxes = [torch.tensor([[40.0, 20.0, 60.0, 40.0]])]
    data.augment = AugmentConfig(rotate=0, scale=0, shift=0.5, flip=False, brightness=0, contrast=0)
    for seed in range(20):  # some shift pushes the square more than half out of the picture
        _, boxes, ignore = data.warped(data.images.float() / 255, [data.boxes[0].clone()], [None],
                                       torch.Generator().manual_seed(seed))
        if len(boxes[0]) == 0:
            break
    assert len(boxes[0]) == 0 and len(ignore[0]) == 1
    assert {0.0, 64.0} & set(ignore[0][0].tolist())  # what is left inside, clipped at the edge
    objectness = encode(boxes[0], 8, 8, 8, 32.0, ignore[0])[0]  # neither face nor background there
    assert (objectness == -1).any() and not (objectness == 1).any()


@pytest.mark.parametrize("objectness", ["bce", "l2"])
def test_overfits_and_finds_the_toy_faces(objectness):
    torch.manual_seed(0)
    data = toy_set(8)
    net = DetectorNet(DetectorConfig(width=8, objectness_loss=objectness))
    x, y = data.batch(torch.arange(8))
    first, last = overfit(net, x, y, 150, lr=5e-3)
    assert last < first / 10
    net.eval()
    with torch.no_grad():
        metrics = net.metrics(net.predict(x), data)
    assert metrics["ap50"] > 0.8 and metrics["recall50"] > 0.8 and metrics["count"] == 8


def test_clutter_backgrounds_vary():
    a = np.asarray(clutter(np.random.default_rng(0), 32))
    b = np.asarray(clutter(np.random.default_rng(1), 32))
    assert a.shape == (32, 32, 3) and not np.array_equal(a, b)


def test_frames_and_scenes_from_68_point_data(tmp_path):
    from test_data import write_faces68
    csv_path, images = write_faces68(tmp_path, n=6)
    f = frames(csv_path, images, size=64)
    assert f.images.shape == (6, 3, 64, 64) and all(len(b) == 1 for b in f.boxes)
    assert all(((b >= -1) & (b <= 65)).all() for b in f.boxes)
    s = scenes(csv_path, images, 10, size=64, people={"Person_A"}, seed=0)
    assert len(s) == 10 and s.identities is None
    assert sum(len(b) for b in s.boxes) > 0  # some faces were placed
    assert all((b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all() for b in s.boxes if len(b))


def test_cli_train_evaluate_predict(tmp_path, capsys):
    import json

    from PIL import Image

    from cnnvision.cli import main
    from test_data import write_faces68
    csv_path, images = write_faces68(tmp_path, n=9)
    out = tmp_path / "det"
    assert main(["train", "--task", "detection", "--data", str(csv_path), "--images", str(images), "--scene-count", "16",
                 "--image-size", "64", "--width", "4", "--epochs", "1", "--batch-size", "8", "--out", str(out),
                 "--val-fraction", "0.34"]) == 0
    report = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--data", str(csv_path), "--images", str(images),
                 "--split", "val", "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert set(metrics) == {"ap50", "recall50", "count"} and 0 < metrics["count"] < 9
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (100, 70), (90, 120, 30)).save(photo)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out / "best.pt"), str(photo)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == [str(photo)] and isinstance(result[str(photo)], list)
    for face in result[str(photo)]:
        assert set(face) == {"box", "score"} and len(face["box"]) == 4
    assert main(["train", "--task", "detection", "--net", "lenet5", "--data", str(csv_path), "--out", str(out)]) == 2


def test_frame_crops_keep_the_whole_face(tmp_path):
    from cnnvision.data.scenes import concat, frame_crops
    from test_data import write_faces68
    csv_path, images = write_faces68(tmp_path, n=6)
    crops = frame_crops(csv_path, images, 12, size=48, seed=3)
    assert crops.images.shape == (12, 3, 48, 48)
    for b in crops.boxes:
        assert b.shape == (1, 4) and (b >= 0).all() and (b <= 48).all() and (b[0, 2:] > b[0, :2] + 4).all()
    both = concat([crops, crops.subset([0, 1])])
    assert len(both) == 14 and len(both.boxes) == 14


def test_frame_crop_mosaics_hold_one_box_per_face_tile(tmp_path):
    from cnnvision.data.scenes import frame_crops
    from test_data import write_faces68
    csv_path, images = write_faces68(tmp_path, n=6)
    grids = frame_crops(csv_path, images, 6, size=60, seed=1, tiles=(2,))
    for b in grids.boxes:  # four tiles of 30 px, each with its face inside it
        assert b.shape == (4, 4)
        tile_of = (b[:, :2] // 30).long()
        assert sorted(map(tuple, tile_of.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert ((b[:, 2:] - tile_of * 30) <= 30).all()
    empty = frame_crops(csv_path, images, 4, size=60, seed=1, inside=1.0)
    assert all(len(b) == 0 for b in empty.boxes) and empty.images.float().std() > 0


def test_shipped_face_detector_on_people_it_never_saw(shared, tmp_path):
    import json

    from cnnvision import checkpoint
    from cnnvision.cli import main
    assert checkpoint.pretrained_path("face-detector").stat().st_size < 5 * 2**20
    report = tmp_path / "m.json"
    frames68 = shared / "youtube-faces-68"
    assert main(["evaluate", "--pretrained", "face-detector", "--data", str(frames68 / "training_frames_keypoints.csv"),
                 "--images", str(frames68 / "training"), "--split", "val", "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert metrics["count"] == 438
    assert metrics["ap50"] == pytest.approx(0.997, abs=0.005) and metrics["recall50"] >= 0.97  # stop 30's detector


def test_cli_train_without_augmentation_is_recorded_and_resumed(tmp_path):
    import json

    from cnnvision.cli import main
    from test_data import write_faces68
    csv_path, images = write_faces68(tmp_path, n=9)
    out = tmp_path / "det"
    assert main(["train", "--task", "detection", "--data", str(csv_path), "--images", str(images), "--scene-count", "8",
                 "--image-size", "64", "--width", "4", "--epochs", "1", "--batch-size", "8", "--out", str(out),
                 "--val-fraction", "0.34", "--no-augment"]) == 0
    assert json.loads((out / "config.json").read_text())["augment"] is None
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert json.loads((out / "config.json").read_text())["augment"] is None
