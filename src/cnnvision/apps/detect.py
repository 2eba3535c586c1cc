"""Face detection: train the one-stage FCN detector on synthetic scenes and real crops made from
the 68-point frames, and measure AP and recall at IoU 0.5 on frames of people it never saw."""
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cnnvision import checkpoint
from cnnvision import images as imgs
from cnnvision.data.augment import AugmentConfig, make_augment
from cnnvision.boxes import box_iou
from cnnvision.data.dataset import hold_out_people, identities_from_names, identity_from_name, split_by_identity
from cnnvision.data.faces68 import parse_points_csv
from cnnvision.data.kaggle import read_rows
from cnnvision.data.photos import group_by_photo, is_web_faces, label_box, photo_crops, read_web_faces, split_photos
from cnnvision.data.scenes import DetectionDataset, concat, frame_crops, frames, scenes
from cnnvision.errors import InputError
from cnnvision.runs import RunFolder, resumed
from cnnvision.files import plain
from cnnvision.nets.detect import DetectorConfig, DetectorNet
from cnnvision.solver import evaluate, report_best, solver_config, train_in_folder


@dataclass
class DetectorTraining:
    """What a detector run is trained from: built by keyword, stored in its checkpoints and
    config.json, rebuilt from them on ``--resume``."""
    data: str | list | None = None      # a 68-point or web-faces CSV, or a list of them
    images: str | list | None = None    # each one's image folder, in the same order
    scene_count: int = 3000             # training pictures in all, split by shares
    image_size: int = 160               # side of a training picture
    val_fraction: float = 0.15
    width: int = 16
    depth: int = 1                      # residual blocks at strides 8 and 32, plus one (nets/detect.py)
    strided: int = 0                    # first stages at stride 2 instead of pooled (nets/detect.py)
    objectness_loss: str = "bce"        # bce | l2 (the tutorial's)
    augment: bool | dict = True         # False, True or AugmentConfig fields to change
    shares: list | None = None          # each source's part of scene_count (default: equal)
    init: str | None = None             # a detector checkpoint to start from
    enlarge_most: float | None = None   # photo faces drawn at most this many times their size (None: any)
    solver: dict = field(default_factory=dict)


def train(training: DetectorTraining, out: str | Path, resume: bool = False) -> dict:
    """Train on pictures made from each source; validate on pictures of its held-out people or photos.

    Each source is a 68-point CSV (frames of people, as youtube-faces-68, or photos, as
    faces-300w) or a web-faces CSV, with its image folder. With one 68-point frames source the
    detector keeps the first one's convention (box = the points' extent); with any photo source
    it learns face boxes (data/photos.py). With ``init`` and a web-faces source, that detector's
    false boxes on the training photos become hard negatives."""
    out = Path(out)
    with RunFolder.claim(out, resume):  # refuses others' files and a second run; unlocked at the end
        return _train(resumed(training, out, "detection") if resume else training, out, resume)


def _train(t: DetectorTraining, out: Path, resume: bool) -> dict:
    data, images, scene_count, image_size = t.data, t.images, t.scene_count, t.image_size
    shares, init, val_fraction = t.shares, (None if resume else t.init), t.val_fraction  # resumed: weights from last.pt
    paths = data if isinstance(data, list) else [data] * (data is not None)
    folders = images if isinstance(images, list) else [images] * (images is not None)
    if not paths or len(folders) != len(paths) or None in paths or None in folders:
        raise InputError("detection needs --data (a 68-point or web-faces CSV) and --images (its pictures), "
                         "one --images per --data")
    kinds = [source_kind(Path(p)) for p in paths]
    # every source labelled in one convention, the box a person draws; frames alone keep the
    # first detector's extent of the points
    style = "points" if kinds == ["frames"] else "drawn"
    if shares is not None and len(shares) != len(paths):
        raise InputError(f"--share has {len(shares)} values for {len(paths)} --data sources; give one per source")
    weights = shares or [1.0] * len(paths)
    counts = [int(round(scene_count * w / sum(weights))) for w in weights]
    if not 1 <= t.depth <= 4:
        raise InputError(f"--depth {t.depth}: the detector takes 1 to 4")
    if t.strided not in (0, 1, 2):
        raise InputError(f"--strided {t.strided}: the detector takes 0, 1 or 2")
    net_cfg = DetectorConfig(image_size=image_size, width=t.width, depth=t.depth, strided=t.strided,
                             objectness_loss=t.objectness_loss, box_style=style)
    train_parts, val_parts, described = [], [], []
    miner = None
    if init and "web" in kinds:  # mine hard negatives with the detector being fine-tuned
        from cnnvision.apps.faces import LANDMARKS, FacePipeline
        miner = FacePipeline(checkpoint.load_net(init), checkpoint.load_net(pretrained=LANDMARKS), threshold=0.5)
    cfg = solver_config(t.solver)
    # the training pictures are cut with the solver's seed: a run continued with another --seed
    # sees new crops of the same photos (the validation pictures stay the same)
    for path, folder, kind, count in zip(paths, folders, kinds, counts):
        extra = {"miner": miner} if kind == "web" else {"style": style} if kind == "photos" else {}
        extra.update({"enlarge_most": t.enlarge_most} if kind in ("web", "photos") else {})
        part, held, what = SOURCE_READERS[kind](Path(path), Path(folder), count, image_size, net_cfg.in_channels,
                                                val_fraction, seed=cfg.seed, **extra)
        if style != "points" and kind == "frames":  # the frames' boxes are their points' extent
            part, held = part.to_face_boxes(style), held.to_face_boxes(style)
        train_parts.append(part)
        val_parts.append(held)
        described.append(what)
    train_set, val_set = concat(train_parts), concat(val_parts)
    train_set.augment = make_augment(t.augment, AugmentConfig())
    torch.manual_seed(cfg.seed)
    model = DetectorNet(net_cfg)
    if init:
        checkpoint.init_from(model, init)
    t = replace(t, data=plain(data), images=plain(images), init=plain(t.init), solver=asdict(cfg),
                augment=asdict(train_set.augment) if train_set.augment else None)
    run_config = {"command": "train", "task": "detection", **asdict(t), "net": asdict(net_cfg), "split_seed": 0,
                  "sources": described, "train_count": len(train_set), "val_count": len(val_set)}
    summary = f"{len(train_set)} training and {len(val_set)} validation pictures: " + "; ".join(described)
    if not train_in_folder(model, train_set, val_set, cfg, out, run_config, resume, summary):
        return {}
    return report_best(out, val_set, cfg, flip=False)[1]


def source_kind(path: Path) -> str:
    """'web' (web-faces boxes), 'frames' (68 points, people named in the file names) or 'photos'
    (68 points on photos, split by photo)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    rows = read_rows(path)
    _, header = next(rows)
    rows.close()
    if is_web_faces(header):
        return "web"
    names, _ = parse_points_csv(path)
    return "frames" if identities_from_names(names)[1] == "identity" else "photos"


def frame_source(data: Path, images: Path, count: int, size: int, channels: int, val_fraction: float,
                 seed: int = 0):
    """The 68-point frames of people: a third synthetic scenes (many faces, small faces, no faces);
    two thirds crops around their face, some as grids of 2x2 or 3x3 such crops, and some close-ups
    inside a face (no face). Validation: the held-out people's frames, letterboxed."""
    names, _ = parse_points_csv(data)
    people = [identity_from_name(n) for n in names]
    train_idx, val_idx = split_by_identity(people, len(people), val_fraction)
    train_people = {people[i] for i in train_idx.tolist()}
    real = count * 2 // 3
    train_set = concat([scenes(data, images, count - real, size, channels, train_people, seed=seed),
                        frame_crops(data, images, real, size, channels, train_people, seed=seed, inside=0.1,
                                    tiles=(1, 1, 2, 3))])
    val_set = frames(data, images, size, channels).subset(val_idx)
    held = len({people[i] for i in val_idx.tolist()})
    return train_set, val_set, f"{data.name}: {len(train_set)} pictures of {len(train_people)} people, {held} held out"


def web_source(data: Path, images: Path, count: int, size: int, channels: int, val_fraction: float,
               miner=None, seed: int = 0, enlarge_most: float | None = None):
    """Web photos whose every visible face is labelled: crops of the training photos (faces from
    12 px to most of the picture, a fifth random squares); validation: crops of the held-out photos.
    With a ``miner`` (a detector), a sixth of the training crops are framed around its false
    detections on the training photos (hard negatives: hands, toys, patterns). ``enlarge_most``:
    see ``photo_crops``; the validation crops are cut as before, to compare runs."""
    names, boxes, _ = read_web_faces(data)
    photos, per_photo = group_by_photo(names, boxes)
    train_idx, val_idx = split_photos(photos, val_fraction)
    opened = [imgs.open_image(images / p, 3) for p in photos]  # crops convert to the net's channels
    none = [np.zeros((0, 4), np.float32)] * len(photos)
    hard = none
    if miner is not None:
        training = set(train_idx)
        hard = [unmatched_detections(miner, opened[i], per_photo[i], 0.1) if i in training else none[i]
                for i in range(len(photos))]

    def cut(idx, n, seed, share, most=None):
        pics, found, ignored = photo_crops([opened[i] for i in idx], [per_photo[i] for i in idx],
                                           [none[i] for i in idx], n, size, channels, seed,
                                           hard=[hard[i] for i in idx], hard_share=share, enlarge_most=most)
        return DetectionDataset(pics, found, ignore=ignored)
    val_count = max(50, count // 6)
    mined = sum(len(h) for h in hard)
    return (cut(train_idx, count, seed, 1 / 6 if mined else 0.0, enlarge_most), cut(val_idx, val_count, 1, 0.0),
            f"{data.name}: {count} crops of {len(train_idx)} photos"
            + (f" ({mined} false detections mined)" if mined else "") + f", {val_count} of {len(val_idx)} held-out photos")


def unmatched_detections(pipeline, photo, faces: np.ndarray, iou: float) -> np.ndarray:
    """Face boxes a pipeline's detector draws on a photo that overlap none of ``faces`` (face boxes)
    by ``iou`` or more: false detections on a photo whose every face is labelled (hard
    negatives), or faces nobody labelled on one whose labels are partial."""
    from cnnvision.apps.faces import face_boxes_of
    (boxes, _), = pipeline.detect([photo])
    boxes = face_boxes_of(pipeline.detector, boxes).numpy()
    if len(boxes) and len(faces):
        overlap = box_iou(torch.from_numpy(boxes).float(), torch.from_numpy(faces).float()).max(1).values.numpy()
        boxes = boxes[overlap < iou]
    return boxes.astype(np.float32).reshape(-1, 4)


def photo_source(data: Path, images: Path, count: int, size: int, channels: int, val_fraction: float,
                 style: str = "drawn", seed: int = 0, enlarge_most: float | None = None):
    """Photos with 68 points on some of their faces: crops around the labelled faces (boxed in
    the detector's ``style``), where the faces nobody labelled (those the shipped detector finds
    that match no label) are ignored. ``enlarge_most``: see ``photo_crops`` (training crops only)."""
    names, points = parse_points_csv(data)
    extents = np.concatenate([points.min(1), points.max(1)], 1)
    photos, per_photo = group_by_photo(names, extents)
    train_idx, val_idx = split_photos(photos, val_fraction)
    opened = [imgs.open_image(images / p, 3) for p in photos]  # crops convert to the net's channels
    faces = [label_box(b.reshape(-1, 2, 2), style) for b in per_photo]
    # the faces nobody labelled: those the shipped detector finds (at 0.8) that match no label
    from cnnvision.apps.faces import FacePipeline
    finder = FacePipeline.pretrained(threshold=0.8)
    ignore = [unmatched_detections(finder, photo, mine, 0.3) for photo, mine in zip(opened, faces)]

    def cut(idx, n, seed, most=None):
        pics, found, ignored = photo_crops([opened[i] for i in idx], [faces[i] for i in idx],
                                           [ignore[i] for i in idx], n, size, channels, seed, empty=0.05,
                                           enlarge_most=most)
        return DetectionDataset(pics, found, ignore=ignored)
    val_count = max(50, count // 6)
    unlabelled = sum(len(g) for g in ignore)
    return (cut(train_idx, count, seed, enlarge_most), cut(val_idx, val_count, 1),
            f"{data.name}: {count} crops of {len(train_idx)} photos ({unlabelled} unlabelled faces ignored)")


SOURCE_READERS = {"frames": frame_source, "web": web_source, "photos": photo_source}


def evaluate_file(net, data: str, images: str | None, split: str = "all", val_fraction: float = 0.15,
                  threshold: float | None = None, runtime: str = "torch", device: str = "cpu") -> dict:
    """A detector's figures on labelled pictures. Web-faces photos (every visible face labelled):
    through ``predict``'s multi-scale search (``faces.evaluate_detector_on_photos``). 68-point
    frames: ap50, recall50 and count, each frame letterboxed to the net's training size;
    ``split="val"`` keeps the people (or photos) ``train`` held out."""
    if images is None:
        raise InputError("detection evaluation needs --images, the folder of the pictures")
    if source_kind(Path(data)) == "web":
        from cnnvision.apps.faces import evaluate_detector_on_photos
        return evaluate_detector_on_photos(net, data, images, split, val_fraction, threshold, runtime=runtime,
                                           device=device)
    found = frames(data, images, net.cfg.image_size, net.cfg.in_channels)
    if split != "all":
        train_set, val_set = hold_out_people(found, val_fraction, data)
        found = val_set if split == "val" else train_set
    if net.cfg.box_style != "points":
        found = found.to_face_boxes(net.cfg.box_style)
    from cnnvision.runtime import for_runtime
    from cnnvision.solver import resolve_device
    return evaluate(for_runtime(net, runtime), found, flip=False,
                    device=resolve_device(device) if runtime == "torch" else torch.device("cpu"))


def predict_images(net, paths: list[str], threshold: float | None = None) -> dict:
    """Face boxes and scores for whole images of any size, in their pixels: the same multi-scale
    search, threshold and merging as the photo pipeline, so both give the same boxes."""
    from cnnvision.apps.faces import LANDMARKS, FacePipeline
    pipeline = FacePipeline(net, checkpoint.load_net(pretrained=LANDMARKS), threshold=threshold)
    results = {}
    for path in paths:
        (boxes, scores), = pipeline.detect([imgs.open_image(path, 3)])
        results[str(path)] = [{"box": [round(float(v), 1) for v in b], "score": round(float(s), 4)}
                              for b, s in zip(boxes, scores)]
    return results
