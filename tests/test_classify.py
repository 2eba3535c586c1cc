"""Classification: the nets, the MNIST idx loader, digit preprocessing, and the CLI end to end on
tiny synthetic idx folders (the real MNIST and the shipped model where ../shared/data exists)."""
import gzip
import json
import time

import numpy as np
import pytest
import torch
from helpers import overfit
from PIL import Image, ImageDraw

from cnnvision.apps.classify import confusion_image, mnist_like
from cnnvision.cli import main
from cnnvision.data.mnist import IMAGES_MAGIC, LABELS_MAGIC, ClassificationDataset, digit_augment, load_mnist, \
    read_idx, write_idx
from cnnvision.errors import InputError
from cnnvision.nets import build_net, net_spec
from cnnvision.nets.classify import ClassifierConfig, ClassifierNet


def bars(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in digits: class k is a bright bar at k * 18 degrees, jittered in place and length."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = np.zeros((n, 28, 28), np.uint8)
    for i, k in enumerate(labels):
        im = Image.new("L", (28, 28))
        angle, half = np.deg2rad(k * 18), rng.uniform(6, 9)
        cx, cy = 14 + rng.uniform(-2, 2), 14 + rng.uniform(-2, 2)
        dx, dy = half * np.cos(angle), half * np.sin(angle)
        ImageDraw.Draw(im).line([cx - dx, cy - dy, cx + dx, cy + dy], fill=255, width=3)
        images[i] = np.asarray(im)
    return images, labels.astype(np.uint8)


def write_mnist(folder, train: int = 240, test: int = 60, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for split, n, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = bars(n, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", labels)


# -- nets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["softmax", "mlp", "lenet5"])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_shapes_finite_and_every_parameter_gets_a_gradient(arch, channels, size):
    net = ClassifierNet(ClassifierConfig(arch=arch, in_channels=channels, image_size=size, num_classes=7))
    out = net(torch.rand(4, channels, size, size))
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    net.loss(out, torch.tensor([0, 3, 6, 2])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"


def test_lenet5_is_lecuns_layout_and_mlp_the_tutorials():
    lenet = ClassifierNet(ClassifierConfig(arch="lenet5"))
    convs = [m for m in lenet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 6, (5, 5)), (6, 16, (5, 5))]
    linears = [(m.in_features, m.out_features) for m in lenet.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [(16 * 5 * 5, 120), (120, 84), (84, 10)]
    mlp = ClassifierNet(ClassifierConfig(arch="mlp"))
    assert [(m.in_features, m.out_features) for m in mlp.modules() if isinstance(m, torch.nn.Linear)] == [
        (784, 128), (128, 32), (32, 10)]
    softmax = ClassifierNet(ClassifierConfig(arch="softmax"))
    assert sum(p.numel() for p in softmax.parameters()) == 784 * 10 + 10


def test_predict_gives_probabilities_and_ignores_flip():
    net = ClassifierNet(ClassifierConfig(arch="lenet5")).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        probs = net.predict(x, flip=True)
        torch.testing.assert_close(probs, net.predict(x, flip=False))
        torch.testing.assert_close(probs, net(x).softmax(1))
    assert probs.shape == (5, 10) and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(5))


def test_metrics_accuracy_and_confusion():
    net = ClassifierNet(ClassifierConfig(arch="softmax", num_classes=3))
    data = ClassificationDataset(torch.zeros(5, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2, 2, 1]), 3)
    probs = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 2]), 3).float()
    m = net.metrics(probs, data)
    assert m["accuracy"] == pytest.approx(3 / 5) and m["count"] == 5
    assert m["confusion"] == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]  # rows true, columns predicted


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    images, labels = bars(20)
    x, y = torch.from_numpy(images)[:, None].float() / 255, torch.from_numpy(labels).long()
    net = ClassifierNet(ClassifierConfig(arch="lenet5"))
    first, last = overfit(net, x, y, 60)
    assert last < first / 20
    net.eval()
    assert (net.predict(x).argmax(1) == y).all()


def test_picture_puts_mistakes_first():
    net = ClassifierNet(ClassifierConfig(arch="softmax"))
    images, labels = bars(10)
    data = ClassificationDataset(torch.from_numpy(images)[:, None], torch.from_numpy(labels).long())
    pred = labels.copy()
    pred[7] = 3  # one mistake, the last-but-two digit
    picture = net.picture(data, torch.nn.functional.one_hot(torch.from_numpy(pred).long(), 10).float())
    assert picture.dtype == np.uint8 and picture.shape == (2 * 84, 8 * 84, 3)
    first, second = picture[:84, :84].reshape(-1, 3), picture[:84, 84:168].reshape(-1, 3)

    def has(tile, colour):
        return (np.abs(tile.astype(int) - colour).sum(1) < 60).any()
    assert has(first, (240, 40, 40)) and not has(first, (40, 220, 60))   # the mistake, in red
    assert has(second, (40, 220, 60)) and not has(second, (240, 40, 40))  # a right answer, in green


def test_net_spec_round_trips_through_a_checkpoint(tmp_path):
    from cnnvision import checkpoint
    net = ClassifierNet(ClassifierConfig(arch="mlp", hidden=(64, 16), dropout=0.1))
    checkpoint.save(tmp_path / "m.pt", {"net": net_spec(net), "model": net.state_dict()})
    again = checkpoint.load_net(tmp_path / "m.pt")
    assert again.task == "classification" and again.cfg == net.cfg
    via_json = build_net("classification", json.loads(json.dumps(net_spec(net)["config"])))
    assert via_json.cfg == net.cfg
    with pytest.raises(ValueError):
        ClassifierNet(ClassifierConfig(arch="alexnet"))


# -- the idx loader ----------------------------------------------------------------------------
def test_idx_round_trip_raw_and_gzip_told_by_magic_bytes(tmp_path):
    images, labels = bars(12)
    write_idx(tmp_path / "raw", images)
    write_idx(tmp_path / "zipped.gz", images)
    (tmp_path / "zipped_no_suffix").write_bytes((tmp_path / "zipped.gz").read_bytes())
    assert (tmp_path / "zipped.gz").read_bytes()[:2] == b"\x1f\x8b"
    for name in ("raw", "zipped.gz", "zipped_no_suffix"):
        np.testing.assert_array_equal(read_idx(tmp_path / name, IMAGES_MAGIC), images)
    write_mnist(tmp_path / "plain", 24, 12, gz=False)
    write_mnist(tmp_path / "zipped", 24, 12, gz=True)
    for folder in ("plain", "zipped"):
        train, test = load_mnist(tmp_path / folder, "train"), load_mnist(tmp_path / folder, "test")
        assert train.images.shape == (24, 1, 28, 28) and train.images.dtype == torch.uint8
        assert train.labels.dtype == torch.int64 and train.labels.tolist() == [i % 10 for i in range(24)]
        assert len(test) == 12


def _write(path, data: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("case,message", [
    ("labels_for_images", "train-images-idx3-ubyte: magic number 0x00000801, expected 0x00000803"),
    ("truncated_raw", "train-images-idx3-ubyte: truncated: the header promises 5x28x28 = 3,920 bytes"),
    ("truncated_gzip", "train-images-idx3-ubyte: truncated or corrupt gzip file"),
    ("truncated_header", "train-images-idx3-ubyte: truncated inside the header"),
    ("count_mismatch", "train-images-idx3-ubyte: holds 5 images but train-labels-idx1-ubyte holds 4 labels"),
    ("missing_labels", "train-labels-idx1-ubyte[.gz]: no such file"),
    ("bad_label", "train-labels-idx1-ubyte: label 12 is not a digit 0-9"),
])
def test_loader_errors_name_the_file(tmp_path, case, message):
    images, labels = bars(5)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    image_bytes = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    if case == "labels_for_images":
        write_idx(tmp_path / "train-images-idx3-ubyte", labels)
    elif case == "truncated_raw":
        _write(tmp_path / "train-images-idx3-ubyte", image_bytes[:-100])
    elif case == "truncated_gzip":
        _write(tmp_path / "train-images-idx3-ubyte", gzip.compress(image_bytes)[:-40])
    elif case == "truncated_header":
        _write(tmp_path / "train-images-idx3-ubyte", image_bytes[:9])
    elif case == "count_mismatch":
        write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:4])
    elif case == "missing_labels":
        (tmp_path / "train-labels-idx1-ubyte").unlink()
    elif case == "bad_label":
        write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 2, 12, 3, 4], np.uint8))
    with pytest.raises(InputError) as e:
        load_mnist(tmp_path, "train")
    assert str(e.value).startswith(str(tmp_path)) and message in str(e.value)


def test_loader_wants_a_folder(tmp_path):
    with pytest.raises(InputError, match="nowhere: no such folder"):
        load_mnist(tmp_path / "nowhere")
    images, labels = bars(3)
    write_idx(tmp_path / "labels", labels)
    with pytest.raises(InputError, match="labels: is a file, expected the folder"):
        load_mnist(tmp_path / "labels")
    np.testing.assert_array_equal(read_idx(tmp_path / "labels", LABELS_MAGIC), labels)


def test_augmentation_is_light_batched_and_seeded():
    images, labels = bars(64)
    data = ClassificationDataset(torch.from_numpy(images)[:, None], torch.from_numpy(labels).long(),
                                 augment=digit_augment())
    idx = torch.arange(64)
    plain, y = data.batch(idx)
    a, ya = data.batch(idx, torch.Generator().manual_seed(3))
    b, _ = data.batch(idx, torch.Generator().manual_seed(3))
    assert a.shape == plain.shape and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(ya, y) and torch.equal(a, b)
    assert (a - plain).abs().amax((1, 2, 3)).min() > 0.1  # every digit moved

    def centres(x):
        grid = torch.arange(28.0)
        mass = x.sum((1, 2, 3))
        return torch.stack([(x.sum((1, 2)) * grid).sum(1) / mass, (x.sum((1, 3)) * grid).sum(1) / mass], 1)
    assert (centres(a) - centres(plain)).abs().max() < 4  # shifts of at most ~2 px, rotations about the centre


# -- preprocessing user images ---------------------------------------------------------------------
def test_mnist_like_inverts_crops_scales_and_centres():
    im = Image.new("L", (200, 120), 230)                     # light paper
    ImageDraw.Draw(im).rectangle([20, 30, 59, 109], fill=20)  # a dark 40x80 stroke, off-centre
    out = mnist_like(im)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[0].max() == 0 and out.max() == 255            # dark background, saturated ink
    ys, xs = np.nonzero(out > 64)
    assert ys.max() - ys.min() + 1 == 20                      # longer side 20 px
    assert xs.max() - xs.min() + 1 == 10                      # aspect kept
    rows, cols = np.indices(out.shape)
    w = out.astype(float)
    assert abs((rows * w).sum() / w.sum() - 14) <= 1 and abs((cols * w).sum() / w.sum() - 14) <= 1
    dark = Image.fromarray(255 - np.asarray(im))              # already light-on-dark: not inverted
    np.testing.assert_array_equal(mnist_like(dark), out)
    assert mnist_like(Image.new("L", (30, 30), 255)).max() == 0  # blank page, blank digit


def test_confusion_image_shades_the_diagonal():
    m = [[50, 0, 2], [0, 40, 0], [5, 0, 45]]
    im = np.asarray(confusion_image(m, cell=30))
    assert im.shape[0] == im.shape[1] and im.shape[0] > 3 * 30
    assert (im != 255).any(2).sum() > 3 * 30 * 30 / 2        # cells drawn, not a white page


# -- the CLI end to end ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A three-step LeNet-5 run on a synthetic idx folder: (data folder, run folder)."""
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root / "data")
    out = root / "run"
    assert main(["train", "--task", "classification", "--data", str(root / "data"), "--net", "lenet5",
                 "--epochs", "1", "--max-steps", "3", "--batch-size", "32", "--out", str(out), "--log-every", "1"]) == 0
    return root / "data", out


def test_train_writes_a_run_folder(digits_run):
    _, out = digits_run
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.csv", "last.pt", "best.pt", "metrics.json", "confusion.png", "tb"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "classification" and config["net"]["arch"] == "lenet5"
    assert config["train_count"] == 220 and config["val_count"] == 20  # the last twelfth held out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["count"] == 20 and sum(map(sum, metrics["confusion"])) == 20


def test_resume_keeps_the_task(digits_run, capsys):
    _, out = digits_run
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert len((out / "metrics.csv").read_text().splitlines()) == 3


def test_evaluate_writes_json_and_confusion(digits_run, tmp_path, capsys):
    data, out = digits_run
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--data", str(data), "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert set(metrics) == {"accuracy", "count", "confusion"} and metrics["count"] == 60
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 60
    assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / 60)
    assert Image.open(tmp_path / "eval_confusion.png").size[0] > 300
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == metrics
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--data", str(data),
                 "--confusion", str(tmp_path / "c" / "m.png")]) == 0
    assert (tmp_path / "c" / "m.png").exists()
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--data", str(data), "--split", "val"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--split: not used by a classification model" in err


def test_predict_any_image(digits_run, tmp_path, capsys):
    _, out = digits_run
    paths = []
    for i, (mode, size) in enumerate([("L", (28, 28)), ("RGB", (150, 90)), ("RGBA", (40, 70))]):
        im = Image.new(mode, size, "white")
        ImageDraw.Draw(im).line([size[0] // 3, 5, size[0] // 2, size[1] - 5], fill="black", width=3)
        p = tmp_path / f"digit{i}.png"
        im.save(p)
        paths.append(str(p))
    out_json = tmp_path / "classes.json"
    assert main(["predict", "--checkpoint", str(out / "best.pt"), *paths, "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert list(result) == paths
    for r in result.values():
        assert 0 <= r["class"] <= 9 and len(r["probabilities"]) == 10
        assert r["probability"] == max(r["probabilities"]) and sum(r["probabilities"]) == pytest.approx(1, abs=1e-3)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-3].startswith(paths[0] + ": ") and "probability" in printed[-3]


@pytest.mark.parametrize("args,message", [
    (["train", "--task", "classification", "--out", "{tmp}/r"], "classification needs --data"),
    (["train", "--task", "classification", "--net", "kpnet", "--data", "{tmp}", "--out", "{tmp}/r"],
     "--net kpnet is not a classifier"),
    (["train", "--net", "lenet5", "--out", "{tmp}/r"], "--net lenet5 is a classifier: add --task classification"),
    (["train", "--task", "classification", "--data", "{tmp}/nowhere", "--out", "{tmp}/r"], "nowhere: no such folder"),
    (["train", "--task", "classification", "--data", "{tmp}", "--out", "{tmp}/r"],
     "train-images-idx3-ubyte[.gz]: no such file"),
    (["evaluate", "--checkpoint", "{best}", "--data", "{tmp}"], "t10k-images-idx3-ubyte[.gz]: no such file"),
    (["submit", "--checkpoint", "{best}", "--test", "{tmp}/t.csv", "--lookup", "{tmp}/l.csv", "--out", "{tmp}/s.csv"],
     "submit needs a keypoint model"),
])
def test_bad_input_gives_one_line_and_status_2(digits_run, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, best=digits_run[1] / "best.pt") for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


# -- the real MNIST and the shipped model --------------------------------------------------------
def test_real_mnist_loads_fast_and_the_shipped_lenet5_scores(shared, tmp_path):
    from cnnvision import checkpoint
    from cnnvision.solver import evaluate
    start = time.perf_counter()
    train, test = load_mnist(shared / "mnist", "train"), load_mnist(shared / "mnist", "test")
    assert time.perf_counter() - start < 10
    assert len(train) == 60000 and len(test) == 10000
    assert test.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    net = checkpoint.load_net(pretrained="lenet5-mnist")
    assert net.task == "classification" and net.cfg.arch == "lenet5"
    metrics = evaluate(net, test)
    assert metrics["count"] == 10000 and metrics["accuracy"] >= 0.992
    # 20 test digits as a user would photograph them: dark ink on white, larger, off-centre
    paths = []
    for i in range(20):
        ink = 255 - test.images[i, 0].numpy()
        page = Image.new("L", (160, 120), 255)
        page.paste(Image.fromarray(ink).resize((84, 84), Image.Resampling.BICUBIC), (10 + 3 * i, 20))
        paths.append(tmp_path / f"{i}.png")
        page.convert("RGB").save(paths[-1])
    out_json = tmp_path / "p.json"
    assert main(["predict", "--pretrained", "lenet5-mnist", *map(str, paths), "--json", str(out_json)]) == 0
    classes = [r["class"] for r in json.loads(out_json.read_text()).values()]
    assert sum(c == t for c, t in zip(classes, test.labels[:20].tolist())) >= 19
