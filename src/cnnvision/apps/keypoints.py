"""Facial keypoints, the tutorial's worked example: train, evaluate, predict and submit.

Each function is what one CLI subcommand does; all of them compose the Dataset, Net and Solver.
"""
import csv
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnvision import checkpoint
from cnnvision import images as imgs
from cnnvision.data import load_keypoints, load_sources
from cnnvision.data.augment import AugmentConfig, make_augment
from cnnvision.data.dataset import KeypointDataset, hold_out_people, split_record, split_summary
from cnnvision.data.kaggle import KEYPOINT_COLUMNS, load_arrays, read_rows
from cnnvision.errors import InputError
from cnnvision.runs import RunFolder, resumed
from cnnvision.files import atomic_open, free_name, plain, save_image, sweep_temporaries
from cnnvision.nets import KeypointNet, KeypointNetConfig
from cnnvision.solver import evaluate, predict, report_best, solver_config, train_in_folder
from cnnvision.viz import draw_box, draw_points, face_grid


@dataclass
class KeypointTraining:
    """What a keypoint run is trained from: built by keyword (the CLI does), stored in its
    checkpoints and config.json, rebuilt from them on ``--resume``."""
    data: str | list | None = None      # a Kaggle or 68-point CSV, or a list of them; None: synthetic faces
    images: str | list | None = None    # each 68-point CSV's image folder, in the same order
    net: str = "kpheat"                 # basic_cnn | kpnet | kpheat | hourglass
    val_fraction: float = 0.15          # held out by person (or photo)
    image_size: int = 96                # crop side for 68-point data
    channels: int = 1                   # 1 grey, 3 colour
    width: int = 24                     # first-stage channels
    depth: int = 0                      # hourglass: residual blocks added after each join
    loss: str = "l1"                    # l1 | mse | smooth_l1, on unit coordinates
    heatmap_loss: float = 0.0           # heatmap nets: weight of the heatmaps' divergence from a peak
    skip_bad_rows: bool = False
    use_cache: bool = True
    augment: bool | dict = True         # False, True (the default warps and jitter) or AugmentConfig fields
    synthetic_count: int = 2400         # faces drawn when there is no data
    shares: list | None = None          # each source's share of a batch (default: by size)
    init: str | None = None             # a checkpoint whose matching weights start the net
    solver: dict = field(default_factory=dict)  # SolverConfig fields (epochs, lr, batch_size, ...)


def train(training: KeypointTraining, out: str | Path = "runs/keypoints", resume: bool = False) -> dict:
    """Train a keypoint Net, evaluate its best checkpoint on the held-out people, and draw them.
    Returns the final metrics."""
    out = Path(out)
    with RunFolder.claim(out, resume):  # refuses others' files and a second run; unlocked at the end
        t = resumed(training, out, "keypoints") if resume else training
        if t.data is None and not resume and "epochs" not in t.solver:
            t = replace(t, solver={**t.solver, "epochs": 8})  # the synthetic faces are easy: a few minutes
        paths = t.data if isinstance(t.data, list) else [t.data]
        folders = t.images if isinstance(t.images, list) else [t.images] * (t.images is not None)
        dataset = load_sources(paths, folders, t.image_size, t.channels, t.skip_bad_rows, t.use_cache,
                               t.synthetic_count, t.shares, t.val_fraction)
        if t.loss == "l1_nme" and dataset.layout.name != "ibug68":
            raise InputError(f"--loss l1_nme weighs each face by its eye corners' distance and needs 68-point faces, "
                             f"not the {dataset.layout.name} layout of "
                             f"{' + '.join(str(d) if d else 'the synthetic faces' for d in paths)}")
        train_set, val_set = hold_out_people(dataset, t.val_fraction, paths)
        aug = make_augment(t.augment, AugmentConfig())
        train_set.augment = aug
        net_cfg = KeypointNetConfig(arch=t.net, layout=dataset.layout.name, in_channels=dataset.channels,
                                    image_size=dataset.size, width=t.width, depth=t.depth, loss=t.loss,
                                    heatmap_loss=t.heatmap_loss)
        cfg = solver_config(t.solver)
        torch.manual_seed(cfg.seed)
        model = KeypointNet(net_cfg)
        if t.init and not resume:  # a resumed run's weights come from last.pt
            checkpoint.init_from(model, t.init)
        t = replace(t, data=plain(t.data), images=plain(t.images), init=plain(t.init),
                    shares=list(dataset.shares or []) or None, augment=asdict(aug) if aug else None,
                    solver=asdict(cfg))
        run_config = {"command": "train", "task": "keypoints", **asdict(t), "net": asdict(net_cfg),
                      "split": split_kinds(dataset), "split_seed": 0,
                      **split_record(train_set, val_set)}
        if not train_in_folder(model, train_set, val_set, cfg, out, run_config, resume,
                               split_summary(train_set, val_set)):
            return {}
        best, metrics = report_best(out, val_set, cfg, cfg.eval_flip)
        sample = val_set.subset(torch.arange(min(32, len(val_set))))
        points = predict(best, sample, flip=cfg.eval_flip, precision=cfg.precision)
        picture = face_grid(sample.images, points, sample.points)
        save_image(Image.fromarray(picture), out / "predictions.png")
        print(f"predictions on held-out faces: {out / 'predictions.png'}")
        return metrics


def split_kinds(dataset) -> list[str]:
    """How each source's validation faces were chosen: 'identity' (no person on both sides),
    'photo' (no photo on both sides) or 'row'."""
    from cnnvision.data.dataset import identities_from_names
    sources = dataset.sources if dataset.sources is not None else torch.zeros(len(dataset), dtype=torch.long)
    kinds = []
    for k in range(int(sources.max()) + 1):
        names = [dataset.names[i] for i in torch.nonzero(sources == k).flatten().tolist()] if dataset.names else None
        files = names and names[0].lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".webp"))
        kinds.append(identities_from_names(names)[1] if files else "identity" if dataset.identities else "row")
    return kinds


def evaluate_file(net, data: str, images: str | None = None, skip_bad_rows: bool = False,
                  split: str = "all", val_fraction: float = 0.15, detector=None, runtime: str = "torch",
                  device: str = "cpu") -> dict:
    """Metrics of a keypoint Net on a labelled file: rmse (source pixels), count, and for 68
    points nme, failure8, failure10 and auc8 with the box from the true points (as the 300-W
    papers measure), then the same through the photo pipeline's own boxes (``nme_detected``,
    ``detected``: the share of faces the detector found), with ``detector`` (default the
    shipped one).

    ``split="val"`` keeps only the people (or photos, where the file names carry no person)
    ``train`` holds out of the same file with the same ``val_fraction`` (``"train"`` the
    others), so a model is measured on faces it never saw.
    """
    cfg = net.cfg
    dataset = load_keypoints(data, images, cfg.image_size, cfg.in_channels, skip_bad_rows, margin=cfg.margin,
                             val_fraction=val_fraction)
    if dataset.layout.name != cfg.layout:
        raise InputError(f"{data}: has {dataset.layout.name} points, but the model predicts {cfg.layout}")
    if split != "all":
        train_set, val_set = hold_out_people(dataset, val_fraction, data)
        dataset = val_set if split == "val" else train_set
    from cnnvision.runtime import for_runtime
    from cnnvision.solver import resolve_device
    metrics = evaluate(for_runtime(net, runtime), dataset, device=resolve_device(device) if runtime == "torch"
                       else torch.device("cpu"))
    complete = not torch.isnan(dataset.points).any()  # partly labelled faces (web-faces): no NME to find
    if cfg.layout == "ibug68" and dataset.names and images is not None and complete:
        from cnnvision.apps.faces import DETECTOR, FacePipeline, evaluate_landmarks_on_photos
        detector = detector or checkpoint.load_net(pretrained=DETECTOR)
        points = imgs.from_crop_batch(dataset.points.numpy(), dataset.boxes.numpy(), cfg.image_size)
        pipeline = FacePipeline(detector, net, runtime=runtime, device=device)
        metrics.update(evaluate_landmarks_on_photos(pipeline, images, dataset.names, points))
    return metrics


def predict_images(net, paths: list[str], out_dir: str | Path | None = None, batch_size: int = 64,
                   overwrite: bool = False) -> dict:
    """Keypoints for whole images (each taken as one face), in the images' pixels; overlay PNGs
    into ``out_dir`` (numbered names beside existing files, unless ``overwrite``)."""
    cfg = net.cfg
    results, crops, boxes, opened = {}, [], [], []
    for path in paths:
        im = imgs.open_image(path, cfg.in_channels)
        box = imgs.square_box(0, 0, im.width, im.height)
        crop = imgs.crop_square(im, box, cfg.image_size)
        crops.append(crop[None] if cfg.in_channels == 1 else crop.transpose(2, 0, 1))
        boxes.append(box)
        opened.append(im)
    faces = KeypointDataset(torch.from_numpy(np.stack(crops)), torch.full((len(crops), net.layout.num_points, 2), float("nan")),
                            net.layout)
    points = predict(net, faces, batch_size)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for path, im, box, pts in zip(paths, opened, boxes, points):
        src = imgs.from_crop(pts.numpy(), box, cfg.image_size)
        results[str(path)] = [{"box": [0, 0, im.width, im.height],
                               "keypoints": [[round(float(x), 2), round(float(y), 2)] for x, y in src]}]
        if out_dir is not None:
            name = free_name(out_dir, Path(path).stem + "_keypoints", ".png", used, overwrite)
            overlay = draw_box(draw_points(im, src), [0, 0, im.width - 1, im.height - 1])
            save_image(overlay, Path(out_dir) / f"{name}.png")
    return results


def submit(net, test: str, lookup: str, out: str, skip_bad_rows: bool = False) -> int:
    """A Kaggle submission (RowId,Location) for test.csv's faces, as IdLookupTable.csv asks."""
    if net.cfg.layout != "kaggle15":
        raise InputError("submit needs a Kaggle 15-point model (this one predicts "
                         f"{net.cfg.layout}); try --pretrained keypoints15")
    arrays = load_arrays(test, skip_bad_rows)
    faces = KeypointDataset(torch.from_numpy(arrays["images"])[:, None],
                            torch.full((len(arrays["images"]), 15, 2), float("nan")), net.layout)
    points = predict(net, faces).flatten(1).clamp(0, 96).numpy()  # (N, 30) in KEYPOINT_COLUMNS order
    row_of = {int(i): r for r, i in enumerate(arrays["ids"])}
    column = {name: c for c, name in enumerate(KEYPOINT_COLUMNS)}
    rows = read_rows(Path(lookup))
    _, header = next(rows)
    header = [h.strip() for h in header]
    for need in ("RowId", "ImageId", "FeatureName"):
        if need not in header:
            raise InputError(f"{lookup}: no {need!r} column; expected RowId,ImageId,FeatureName,Location")
    rid, iid, feat = (header.index(c) for c in ("RowId", "ImageId", "FeatureName"))
    lines = []
    for line, row in rows:
        if not row:
            continue
        try:
            image, name = int(row[iid]), row[feat].strip()
            value = points[row_of[image], column[name]]
            lines.append((int(row[rid]), value))
        except (ValueError, IndexError):
            raise InputError(f"{lookup}: row {line}: malformed ({','.join(row)[:60]})") from None
        except KeyError as e:
            raise InputError(f"{lookup}: row {line}: unknown {'image' if isinstance(e.args[0], int) else 'feature'} "
                             f"{e.args[0]!r} (not in {test})") from None
    if not lines:
        raise InputError(f"{lookup}: no rows")
    sweep_temporaries(Path(out).parent)  # what a submit killed before left
    with atomic_open(out, newline="") as f:
        w = csv.writer(f)
        w.writerow(["RowId", "Location"])
        for row_id, value in lines:
            w.writerow([row_id, f"{value:.4f}"])
    return len(lines)
