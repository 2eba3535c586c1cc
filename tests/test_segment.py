"""Face-part segmentation: the rasteriser, aligned augmentation, the net, IoU by hand, the CLI end
to end on a tiny 68-point set, ONNX, and the shipped model on the real frames."""
import json
import re

import numpy as np
import pytest
import torch
from helpers import overfit
from PIL import Image

from cnnvision import checkpoint
from cnnvision.cli import main
from cnnvision.data.augment import AugmentConfig, pixels_to_unit
from cnnvision.data.parts import SegmentationDataset, rasterise
from cnnvision.nets import build_net, net_spec
from cnnvision.nets.segment import SegmenterConfig, SegmenterNet, iou_metrics

MIOU_TEST = 0.760  # the shipped face-parts model on the 639 test frames (0.749 on the held-out training people)


def cartoon_face(dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """68 points of a box-shaped face in a 48x48 crop: jaw down the left side at x = 6, along the
    bottom at y = 40 and up the right side at x = 41; brows at y = 10; eyes, nose and mouth inside."""
    p = np.zeros((68, 2), np.float32)
    p[0:6] = [(6, y) for y in np.linspace(12, 38, 6)]
    p[6:11] = [(x, 40) for x in np.linspace(10, 37, 5)]
    p[11:17] = [(41, y) for y in np.linspace(38, 12, 6)]
    p[17:27] = [(x, 10) for x in np.linspace(8, 39, 10)]
    eye = np.array([(-4, 0), (-2, -2), (2, -2), (4, 0), (2, 2), (-2, 2)], np.float32)
    p[36:42] = eye + (15, 18)
    p[42:48] = eye + (32, 18)
    p[27:31] = [(24, 16), (24, 19), (24, 22), (24, 25)]
    p[31:36] = [(20, 28), (22, 29), (24, 30), (26, 29), (28, 28)]
    mouth = [(-6, 0), (-4, -2), (-2, -2), (0, -2), (2, -2), (4, -2), (6, 0), (4, 2), (2, 2), (0, 2), (-2, 2), (-4, 2)]
    p[48:60] = np.array(mouth, np.float32) + (24, 35)
    p[60:68] = (24, 35)
    return p + (dx, dy)


# -- the rasteriser ------------------------------------------------------------------------------
def test_rasterise_puts_each_part_where_its_points_are():
    mask = rasterise(cartoon_face(), 48)
    assert mask.shape == (48, 48) and mask.dtype == np.uint8
    assert mask[18, 15] == 2 and mask[18, 32] == 2        # eye centres
    assert mask[26, 24] == 3                              # inside the nose triangle
    assert mask[35, 24] == 4                              # mouth centre
    assert mask[30, 10] == 1 and mask[14, 24] == 1        # cheek, forehead between the eyes
    assert mask[18, 21] == 1                              # between eye and nose: skin
    assert mask[2, 2] == 0 and mask[45, 24] == 0 and mask[24, 45] == 0  # outside jaw and brows
    assert mask[9, 24] == 0 and mask[10, 24] == 1         # the brow line is the top edge of the face
    assert set(np.unique(mask)) == {0, 1, 2, 3, 4}
    # pixel-centre convention: each eye corner point's own pixel is eye, two pixels out is skin
    assert mask[18, 11] == 2 and mask[18, 9] == 1 and mask[18, 36] == 2 and mask[18, 38] == 1


def test_rasterise_follows_the_points_and_the_mirror():
    base = rasterise(cartoon_face(), 48)
    moved = rasterise(cartoon_face(dx=3, dy=-2), 48)
    np.testing.assert_array_equal(moved[10:46, 3:45], base[12:48, 0:42])  # a shift of whole pixels
    mirrored = cartoon_face()
    mirrored[:, 0] = 47 - mirrored[:, 0]  # pixel-centre mirror: i -> S - 1 - i
    assert (rasterise(mirrored, 48) == base[:, ::-1]).mean() > 0.99


# -- the dataset ---------------------------------------------------------------------------------
def faces(n: int = 8, size: int = 48, with_points: bool = False) -> SegmentationDataset:
    rng = np.random.default_rng(0)
    points = np.stack([cartoon_face(*rng.uniform(-3, 3, 2)) for _ in range(n)])
    masks = torch.from_numpy(np.stack([rasterise(p, size) for p in points]))
    return SegmentationDataset((masks * 50)[:, None], masks, [f"p{i % 3}" for i in range(n)],
                               points=torch.from_numpy(points) if with_points else None)


@pytest.mark.parametrize("with_points", [False, True])
def test_masks_stay_on_their_pixels_under_augmentation(with_points):
    """Images equal to mask * 50: after the same random warp (and mirrors) they still agree,
    except on the one-pixel seams where bilinear resampling blends two classes."""
    data = faces(16, with_points=with_points)
    data.augment = AugmentConfig(rotate=20, scale=0.15, shift=0.1, brightness=0, contrast=0)
    x, masks = data.batch(torch.arange(16), torch.Generator().manual_seed(0))
    assert x.shape == (16, 1, 48, 48) and masks.shape == (16, 48, 48) and masks.dtype == torch.long
    assert set(masks.unique().tolist()) <= {0, 1, 2, 3, 4}
    assert (masks != data.masks.long()).float().mean() > 0.05  # the warp did move things
    differ = (x[:, 0] * 255 / 50).round().long() != masks
    assert differ.float().mean((1, 2)).max() < 0.1  # 0.18 if the masks were two pixels off
    # and only beside an edge of the mask (another class within two pixels), away from the frame's
    # edge, where the image repeats its border but a mask drawn from points goes on
    padded = torch.nn.functional.pad(masks[:, None].float(), (2, 2, 2, 2), mode="replicate")
    near_edge = (torch.nn.functional.max_pool2d(padded, 5, 1) != -torch.nn.functional.max_pool2d(-padded, 5, 1))[:, 0]
    assert not (differ & ~near_edge)[:, 2:-2, 2:-2].any()
    # evaluation batches are the stored masks untouched
    x, masks = data.batch(torch.arange(4))
    assert torch.equal(masks, data.masks[:4].long()) and torch.equal(x[:, 0] * 255, data.masks[:4].float() * 50)


def test_augmented_masks_are_drawn_afresh_from_the_moved_points():
    """With points, a warped mask is the rasterised warped points, edge pixels and all; without,
    it is the old mask resampled, which misses part of a 4 px eye's edge at a sub-pixel shift."""
    from cnnvision.data.augment import random_transforms, warp
    config = AugmentConfig(rotate=10, scale=0.1, shift=0.05, brightness=0, contrast=0)
    drawn, resampled = faces(16, with_points=True), faces(16)
    drawn.augment = resampled.augment = config
    _, masks = drawn.batch(torch.arange(16), torch.Generator().manual_seed(3))
    _, snapped = resampled.batch(torch.arange(16), torch.Generator().manual_seed(3))
    A, t, mirror = random_transforms(16, config, torch.Generator().manual_seed(3))  # the same draw
    _, moved = warp(torch.zeros(16, 1, 48, 48), drawn.points.float(), A, t, mirror, None)
    expected = torch.from_numpy(np.stack([rasterise(p, 48) for p in moved.numpy()])).long()
    assert torch.equal(masks, expected)
    eye_iou = iou_metrics(snapped, expected, 5)["iou"][2]
    assert eye_iou < 0.95  # the resampled eyes are not the drawn ones


def test_dataset_subset_and_shape_checks():
    data = faces(6, with_points=True)
    sub = data.subset([4, 1])
    assert torch.equal(sub.masks, data.masks[[4, 1]]) and sub.identities == ["p1", "p1"]
    assert torch.equal(sub.points, data.points[[4, 1]])
    with pytest.raises(ValueError):
        SegmentationDataset(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, 8, 6, dtype=torch.uint8))
    with pytest.raises(ValueError, match="points"):
        SegmentationDataset(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, 8, 8, dtype=torch.uint8),
                            points=torch.zeros(2, 5, 2))


# -- the net -------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_finite_and_every_parameter_gets_a_gradient(channels):
    net = SegmenterNet(SegmenterConfig(in_channels=channels, image_size=32, width=4))
    out = net(torch.rand(2, channels, 32, 32))
    assert out.shape == (2, 5, 32, 32) and torch.isfinite(out).all()
    net.loss(out, torch.randint(0, 5, (2, 32, 32))).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(1, channels, 40, 56)).shape == (1, 5, 40, 56)  # fully convolutional


@pytest.mark.parametrize("depth", [1, 4])
def test_encoder_depth_keeps_full_resolution(depth):
    net = SegmenterNet(SegmenterConfig(image_size=32, width=4, depth=depth)).eval()
    assert len(net.model.down) == depth + 1 and len(net.model.up) == depth
    with torch.no_grad():
        assert net(torch.rand(2, 1, 48, 64)).shape == (2, 5, 48, 64)


def test_checkpoints_from_before_depth_was_a_setting_still_load():
    net = SegmenterNet(SegmenterConfig(width=4))
    renamed = {}
    for key, value in net.state_dict().items():  # the old names: enc1..enc4, up3..up1
        key = re.sub(r"down\.(\d)", lambda m: f"enc{int(m[1]) + 1}", key)
        renamed[re.sub(r"up\.(\d)", lambda m: f"up{3 - int(m[1])}", key)] = value
    assert "model.enc4.0.0.weight" in renamed and "model.up1.fuse.0.weight" in renamed
    fresh = SegmenterNet(SegmenterConfig(width=4))
    fresh.load_state_dict(renamed)
    for a, b in zip(net.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


def test_deconvolutions_start_bilinear():
    net = SegmenterNet(SegmenterConfig(width=4))
    up = net.model.up[-1].up  # the last step, back to full resolution
    x = torch.rand(1, 4, 6, 6)
    want = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up(x)[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1])  # edges see zero padding


def test_predict_probabilities_and_flip_averaging():
    torch.manual_seed(0)
    net = SegmenterNet(SegmenterConfig(image_size=32, width=4)).eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        probs = net.predict(x, flip=False)
        torch.testing.assert_close(probs.sum(1), torch.ones(3, 32, 32))
        both = net.predict(x, flip=True)
        torch.testing.assert_close(both, (probs + net.predict(x.flip(-1), flip=False).flip(-1)) / 2)
        torch.testing.assert_close(net.predict(x.flip(-1), flip=True), both.flip(-1))  # mirror-equivariant


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    data = faces(4, size=32)
    x, masks = data.batch(torch.arange(4))
    x = x + torch.rand_like(x) * 0.1  # not just a lookup of the intensity
    net = SegmenterNet(SegmenterConfig(image_size=32, width=6))
    first, last = overfit(net, x, masks, 60, lr=2e-2)
    assert last < first / 10
    net.eval()
    with torch.no_grad():
        assert (net.predict(x).argmax(1) == masks).float().mean() > 0.97


def test_iou_by_hand():
    """IoU sums intersections and unions over the whole set (per-image means would give skin
    (1/2 + 2/3) / 2, not 3/5); classes absent from truth and prediction are left out."""
    zeros = [[0, 0, 0, 0]] * 2
    true = torch.tensor([[[0, 1, 1, 2], [3, 3, 4, 4], *zeros], [[0, 0, 1, 1], *zeros, [0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 1, 2, 2], [3, 4, 4, 4], *zeros], [[0, 1, 1, 1], *zeros, [0, 0, 0, 0]]])
    data = SegmentationDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), true.to(torch.uint8))
    probs = torch.nn.functional.one_hot(pred, 5).permute(0, 3, 1, 2).float()  # (2, 5, 4, 4)
    net = SegmenterNet(SegmenterConfig())
    m = net.metrics(probs, data)
    # background 22 of 23, skin 3 of 5, eyes 1 of 2, nose 1 of 2, mouth 2 of 3 (intersection of union)
    assert m["iou"] == [round(22 / 23, 4), 0.6, 0.5, 0.5, round(2 / 3, 4)] and m["count"] == 2
    assert m["miou"] == pytest.approx((0.6 + 0.5 + 0.5 + 2 / 3) / 4)
    m = net.metrics(probs[1:], data.subset([1]))
    assert m["iou"] == [round(13 / 14, 4), round(2 / 3, 4), None, None, None]
    assert m["miou"] == pytest.approx(2 / 3)


def test_picture_and_spec_round_trip(tmp_path):
    data = faces(5, size=32)
    net = SegmenterNet(SegmenterConfig(image_size=32, width=4, class_weights=(0.5, 1, 2, 1, 1)))
    probs = torch.nn.functional.one_hot(data.masks.long(), 5).permute(0, 3, 1, 2).float()
    picture = net.picture(data, probs)
    assert picture.dtype == np.uint8 and picture.shape == (2 * 32, 4 * 64, 3)
    assert (picture[:, :32] == picture[:, 32:64]).all()  # a perfect prediction looks like the truth
    checkpoint.save(tmp_path / "m.pt", {"net": net_spec(net), "model": net.state_dict()})
    again = checkpoint.load_net(tmp_path / "m.pt")
    assert again.task == "segmentation" and again.cfg == net.cfg
    assert build_net("segmentation", json.loads(json.dumps(net_spec(net)["config"]))).cfg == net.cfg
    with pytest.raises(ValueError):
        SegmenterNet(SegmenterConfig(class_weights=(1, 2)))


# -- the CLI -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run68(tmp_path_factory):
    """A tiny segmentation run on a random 68-point set: (csv, image folder, run folder)."""
    from test_data import write_faces68
    folder = tmp_path_factory.mktemp("seg")
    csv_path, images = write_faces68(folder, n=12)
    out = folder / "run"
    assert main(["train", "--task", "segmentation", "--data", str(csv_path), "--images", str(images),
                 "--image-size", "32", "--width", "4", "--epochs", "1", "--batch-size", "4", "--out", str(out),
                 "--val-fraction", "0.3"]) == 0
    return csv_path, images, out


def test_cli_train_evaluate_predict(run68, tmp_path, capsys):
    csv_path, images, out = run68
    assert {"config.json", "metrics.csv", "best.pt", "last.pt", "predictions.png", "metrics.json"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["net"]["width"] == 4
    capsys.readouterr()
    report = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--data", str(csv_path), "--images", str(images),
                 "--split", "val", "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert set(metrics) == {"miou", "iou", "count"} and len(metrics["iou"]) == 5
    assert metrics["count"] == json.loads((out / "config.json").read_text())["val_count"] < 12
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == metrics
    paths = []
    for i, (mode, size) in enumerate([("L", (40, 40)), ("RGB", (75, 50))]):
        paths.append(str(tmp_path / f"face{i}.png"))
        Image.new(mode, size, 128).save(paths[-1])
    out_json = tmp_path / "parts.json"
    assert main(["predict", "--checkpoint", str(out / "best.pt"), *paths, "--out", str(tmp_path / "ov"),
                 "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert list(result) == paths
    for path, size in zip(paths, [(40, 40), (75, 50)]):
        assert sum(result[path]["shares"].values()) == pytest.approx(1, abs=1e-3)
        mask = Image.open(result[path]["mask"])
        assert mask.size == size and np.asarray(mask).max() <= 4
        assert Image.open(tmp_path / "ov" / (path.rsplit("/", 1)[1][:-4] + "_parts.png")).size == size


@pytest.mark.parametrize("args,message", [
    (["--task", "segmentation", "--net", "kpheat"], "--net kpheat is not a segmentation net"),
    (["--net", "segnet"], "--net segnet is a segmentation net: add --task segmentation"),
    (["--task", "segmentation", "--image-size", "30"], "multiple of 8"),
    (["--task", "segmentation", "--depth", "4", "--image-size", "40"], "depth 4 needs a multiple of 16"),
    (["--task", "segmentation", "--depth", "0"], "--depth 0: the segmenter's encoder takes 1 to 5 halvings"),
    (["--task", "segmentation", "--class-weights", "1,2"], "2 values for the 5 classes"),
    (["--task", "segmentation", "--class-weights", "1,x"], "expected numbers separated by commas"),
    (["--task", "segmentation", "--aux-points", "-1"], "--aux-points -1.0: a loss weight cannot be negative"),
    (["--depth", "4"], "--depth applies to segmentation, detection and keypoints' --net hourglass only"),
    (["--net", "kpnet", "--depth", "1"], "--depth applies to segmentation, detection and keypoints' --net hourglass only"),
    (["--task", "detection", "--aux-points", "1"], "--aux-points applies to segmentation only"),
    (["--class-weights", "1,1,1,1,1"], "--class-weights applies to segmentation only"),
])
def test_cli_net_task_mismatch_is_one_line(run68, tmp_path, capsys, args, message):
    csv_path, images, _ = run68
    assert main(["train", "--data", str(csv_path), "--images", str(images), "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_onnx_matches_torch_for_any_batch_and_size(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = SegmenterNet(SegmenterConfig(image_size=32, width=4)).eval()
    path = tmp_path / "seg.pt"
    checkpoint.save(path, {"net": net_spec(net), "model": net.state_dict()})
    assert main(["export", "--checkpoint", str(path), "--onnx", str(tmp_path / "seg.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "seg.onnx"))
    for shape in [(1, 1, 32, 32), (3, 1, 32, 32), (2, 1, 40, 56)]:
        x = torch.rand(shape)
        with torch.inference_mode():
            want = net.predict(x, flip=False).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == (shape[0], 5, *shape[2:])
        np.testing.assert_allclose(got, want, atol=1e-4)


# -- the shipped model ---------------------------------------------------------------------------
def test_face_parts_is_small_and_self_describing():
    path = checkpoint.pretrained_path("face-parts")
    assert path.stat().st_size <= 6 * 2**20
    net = checkpoint.load_net(pretrained="face-parts")
    assert net.task == "segmentation" and net.cfg.image_size == 96 and net.cfg.in_channels == 3
    assert net.cfg.depth == 4
    assert "optimizer" not in checkpoint.load(path)


def test_face_parts_on_people_it_never_saw(shared, tmp_path):
    report = tmp_path / "m.json"
    folder = shared / "youtube-faces-68"
    assert main(["evaluate", "--pretrained", "face-parts", "--data", str(folder / "test_frames_keypoints.csv"),
                 "--images", str(folder / "test"), "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert metrics["count"] == 639
    assert metrics["miou"] == pytest.approx(MIOU_TEST, abs=0.01)  # the figure measured when the model was shipped
    assert all(iou > 0.45 for iou in metrics["iou"])


def test_soft_dice_loss_is_zero_when_right_and_weighs_small_parts_like_large_ones():
    from cnnvision.nets.segment import soft_dice_loss
    masks = torch.zeros(2, 16, 16, dtype=torch.long)
    masks[:, 2:14, 2:14] = 1   # a large part
    masks[:, 5:7, 5:7] = 2     # a small one
    perfect = torch.nn.functional.one_hot(masks, 3).permute(0, 3, 1, 2).float()
    assert soft_dice_loss(perfect, masks) < 1e-3
    missed_small = perfect.clone()
    missed_small[:, 2][masks == 2], missed_small[:, 1][masks == 2] = 0.0, 1.0  # the small part called large
    # a few pixels wrong, yet half the classes' overlap is gone: the loss is near 1/2
    assert 0.45 < soft_dice_loss(missed_small, masks) < 0.55


def test_lovasz_loss_is_one_minus_miou_for_hard_predictions():
    from cnnvision.nets.segment import iou_metrics, lovasz_softmax_loss
    generator = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 4, (2, 12, 12), generator=generator)
    for _ in range(3):
        pred = torch.randint(0, 4, (2, 12, 12), generator=generator)
        hard = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float()
        assert lovasz_softmax_loss(hard, masks).item() == pytest.approx(1 - iou_metrics(pred, masks, 4)["miou"], abs=1e-6)
    right = torch.nn.functional.one_hot(masks, 4).permute(0, 3, 1, 2).float()
    assert lovasz_softmax_loss(right, masks).item() == pytest.approx(0, abs=1e-6)
    # soft scores: more weight on the true class lowers the loss
    logits = torch.randn(2, 4, 12, 12, generator=generator)
    sharper = logits + 2 * right
    assert lovasz_softmax_loss(sharper.softmax(1), masks) < lovasz_softmax_loss(logits.softmax(1), masks)


@pytest.mark.parametrize("loss", ["ce_dice", "ce_lovasz"])
def test_combined_losses_reach_every_parameter(loss):
    from cnnvision.nets.segment import SegmenterConfig, SegmenterNet
    net = SegmenterNet(SegmenterConfig(image_size=16, width=4, loss=loss))
    x, masks = torch.rand(2, 1, 16, 16), torch.randint(0, 5, (2, 16, 16))
    loss = net.loss(net(x), masks)
    loss.backward()
    assert loss > 0 and all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="unknown segmentation loss"):
        SegmenterNet(SegmenterConfig(loss="dice"))


def test_aux_points_train_the_heatmaps_and_leave_inference_alone():
    data = faces(8, with_points=True)
    data.augment, data.with_points = AugmentConfig(), True
    x, (masks, points) = data.batch(torch.arange(8), torch.Generator().manual_seed(0))
    assert masks.shape == (8, 48, 48) and points.shape == (8, 68, 2)
    net = SegmenterNet(SegmenterConfig(image_size=48, width=4, depth=2, aux_points=10.0))
    net.train()
    out = net(x)
    assert isinstance(out, tuple) and out[1].shape == (8, 68, 2)
    loss = net.loss(out, (masks, points))
    loss.backward()
    assert net.model.heatmaps.weight.grad.abs().sum() > 0
    assert loss > net.mask_loss(out[0], masks)  # the landmark term is added
    with pytest.raises(ValueError, match="training points"):
        net.loss(out, masks)
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (8, 5, 48, 48)  # evaluation and export see the logits alone
    # the heatmaps learn: steps on one batch pull the points towards the truth (to 0.34-0.48 of
    # the first error over four seeds)
    torch.manual_seed(0)
    net = SegmenterNet(SegmenterConfig(image_size=48, width=4, depth=2, aux_points=10.0)).train()
    optimizer = torch.optim.Adam(net.parameters(), 2e-2)
    first = None
    for _ in range(40):
        _, predicted = net(x)
        error = (predicted - pixels_to_unit(points, 48)).abs().mean()
        first = first if first is not None else error.item()
        optimizer.zero_grad()
        net.loss(net(x), (masks, points)).backward()
        optimizer.step()
    assert error.item() < 0.7 * first
