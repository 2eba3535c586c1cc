"""The command line: ``cnnvision train | evaluate | predict | submit | benchmark``.

Each subcommand parses its options and calls one library function. User errors print one line
and exit with status 2; anything else is a bug and keeps its traceback.
"""
import argparse
import json
import sys
from pathlib import Path

from cnnvision.errors import InputError

CLASSIFIER_NETS = ("softmax", "mlp", "lenet5")
SEGMENTATION_NETS = ("segnet",)
# runtime.RUNTIMES and auto, written out here so that parsing the command line imports no torch
RUNTIMES = ("auto", "torch", "torch-int8", "onnx", "onnx-int8")


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    from cnnvision.shipped import PRETRAINED
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--checkpoint", metavar="FILE", help="a checkpoint written by train (best.pt, last.pt)")
    g.add_argument("--pretrained", metavar="NAME", help=f"a model shipped with cnnvision: {', '.join(PRETRAINED)}")


def add_solver_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, help="examples per step (default 64)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], help="default adamw")
    p.add_argument("--schedule", choices=["cosine", "step", "constant"], help="default cosine")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="evaluate and keep a moving average of the weights, e.g. 0.999 (default off)")
    p.add_argument("--patience", type=int, help="early stopping after N epochs without improvement")
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="default auto: bf16 where the CPU has it")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"])
    p.add_argument("--log-every", type=int, help="steps between log lines (default 10)")
    p.add_argument("--max-steps", type=int, help="stop after N steps (smoke runs)")


def solver_overrides(a: argparse.Namespace) -> dict:
    names = ["batch_size", "lr", "optimizer", "schedule", "weight_decay", "ema", "patience", "seed", "precision",
             "device", "log_every", "max_steps", "epochs"]
    return {n: getattr(a, n) for n in names if getattr(a, n, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnvision", description="Learning-based computer vision with CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a keypoint net (embedded synthetic faces without --data), "
                                     "a classifier or a segmenter")
    p.set_defaults(func=train)
    p.add_argument("--task", choices=["keypoints", "classification", "segmentation", "detection"],
                   help="default keypoints (a resumed run keeps its own)")
    p.add_argument("--data", action="append",
                   help="Kaggle training.csv(.gz) or a 68-point CSV; default: synthetic faces; classification: the "
                        "MNIST folder. Keypoints: repeat to train on several sources at once (each 68-point CSV "
                        "with its own --images, in the same order)")
    p.add_argument("--images", metavar="DIR", action="append", help="image folder of a 68-point CSV")
    p.add_argument("--share", metavar="S,S,...",
                   help="keypoints with several --data: each source's share of a training batch, in --data "
                        "order (e.g. 0.6,0.4; default: in proportion to their sizes)")
    p.add_argument("--init", metavar="FILE",
                   help="keypoints, detection: start from this checkpoint's weights (those of matching name and shape)")
    p.add_argument("--net", choices=["basic_cnn", "kpnet", "kpheat", "hourglass", *CLASSIFIER_NETS, *SEGMENTATION_NETS,
                                     "fcn_detector"],
                   help="default kpheat; classification: lenet5 (or mlp, softmax); segmentation: segnet; "
                        "detection: fcn_detector")
    p.add_argument("--loss", choices=["mse", "l1", "smooth_l1", "l1_nme", "ce", "ce_dice", "ce_lovasz", "bce", "l2"],
                   help="keypoints: loss on unit coordinates (default l1; mse is the tutorial's L2; l1_nme weighs "
                        "each 68-point face by 1 / its eye-corner distance, as NME does); "
                        "segmentation: ce (default), ce_dice or ce_lovasz; detection: objectness loss, bce (default) "
                        "or the tutorial's l2")
    p.add_argument("--heatmap-loss", type=float, metavar="W",
                   help="keypoints, heatmap nets (kpheat, hourglass): add W times the Jensen-Shannon divergence "
                        "of each heatmap from a one-cell Gaussian at its true point (default 0, off)")
    p.add_argument("--epochs", type=int, help="default 30 (8 on the synthetic faces)")
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/<net>-<data>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share held out, by person (default 0.15)")
    p.add_argument("--image-size", type=int,
                   help="crop side for 68-point data (default 96); detection: scene side (default 160)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=1, help="1 grey or 3 colour (68-point data)")
    p.add_argument("--width", type=int, help="first-stage channels (default 24; segnet 16)")
    p.add_argument("--depth", type=int, help="segmentation: halvings in segnet's encoder (default 3, stride 8); detection: "
                        "convolutions at strides 8 and 32 (default 1; more add residual blocks); hourglass: residual "
                        "blocks after each join (default 0)")
    p.add_argument("--strided", type=int, choices=[0, 1, 2],
                   help="detection: the first N stages convolve at stride 2 instead of pooling after "
                        "(default 0; 2 is a third faster at 640x480, and --init from a plain detector fits it)")
    p.add_argument("--class-weights", metavar="W,W,...", help="segmentation: cross-entropy weight per class "
                                                            "(default: unweighted)")
    p.add_argument("--aux-points", type=float, metavar="W",
                   help="segmentation: weight of an extra loss on the 68 landmarks, read from heatmaps off the "
                        "segmenter's last features while training (default 0, off)")
    p.add_argument("--no-augment", action="store_true", help="train without flips, warps and jitter")
    p.add_argument("--augment", metavar="NAME=VALUE,...",
                   help="change the task's augmentation: flip (0 or 1), rotate (max degrees), scale, shift "
                        "(max fractions of the side), brightness, contrast; e.g. rotate=6,shift=0.03")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip malformed CSV rows instead of stopping")
    p.add_argument("--no-cache", action="store_true", help="parse the data again instead of using the cache")
    p.add_argument("--synthetic-count", type=int, default=2400, help="faces to draw when there is no --data")
    p.add_argument("--scene-count", type=int, default=3000, help="detection: synthetic training scenes")
    p.add_argument("--enlarge-most", type=float, metavar="X",
                   help="detection: draw each photo's faces at most X times their size in the photo "
                        "(default: at any size from 12 px to 0.8 of the picture)")
    add_solver_args(p)

    p = sub.add_parser("evaluate", help="metrics of a model on labelled data")
    p.set_defaults(func=evaluate)
    add_model_args(p)
    p.add_argument("--data", required=True)
    p.add_argument("--images", metavar="DIR")
    p.add_argument("--json", metavar="FILE", help="also write the metrics here")
    p.add_argument("--confusion", metavar="FILE", help="classification: confusion matrix PNG (default: beside --json)")
    p.add_argument("--skip-bad-rows", action="store_true")
    p.add_argument("--split", choices=["all", "train", "val"], default="all",
                   help="68-point data: only the people train holds out of this file (val), or the others")
    p.add_argument("--val-fraction", type=float, default=0.15, help="as given to train (default 0.15)")
    p.add_argument("--detector", metavar="FILE",
                   help="68 points on photos: the detector checkpoint for nme_detected (default the shipped one)")
    p.add_argument("--threshold", type=float,
                   help="detector on web-faces photos: lowest score counted (default: the pipeline's)")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help="keypoints and detection: run the net in torch (default: the float net's figures), in int8 "
                        "in torch (a shipped model's int8 weights), or exported in onnxruntime (float, or a shipped "
                        "model's int8 graph); auto: what predict runs")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")

    p = sub.add_parser("predict", help="every face of each photo with its 68 landmarks; with a model flag, "
                                       "that model alone (keypoints or parts of a face image, digits, boxes)")
    p.set_defaults(func=predict)
    add_model_args(p, required=False)
    p.add_argument("images", nargs="*", metavar="INPUT",
                   help="photos, folders (searched recursively for images and videos) and videos "
                        "(mp4, avi, mov, mkv, webm, animated GIF; needs the video extra)")
    p.add_argument("--out", metavar="DIR", default="predictions",
                   help="overlay PNGs (and annotated videos) go here (default predictions/)")
    p.add_argument("--no-overlay", action="store_true", help="write no overlays")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs of the same names (default: overlays, videos and crops get "
                        "numbered names beside them; an existing --json/--jsonl/--csv file is refused)")
    p.add_argument("--json", metavar="FILE", help="write the results here as one JSON object at the end ('-': stdout)")
    p.add_argument("--jsonl", metavar="FILE", help="photos: write a JSON line per photo or video frame as it is done")
    p.add_argument("--csv", metavar="FILE", help="photos: write a row per face (path, frame, box, score, 68 points)")
    p.add_argument("--crops", metavar="DIR", help="photos: save each face, turned upright and scaled by its eyes")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: take every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, metavar="N", help="videos: at most N frames of each")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="photos: where the nets run")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="photos: run the nets in torch, float or int8 (torch-int8: the shipped models' int8 weights), "
                        "or exported in onnxruntime (the onnx extra; onnx-int8: their int8 graphs); default auto: "
                        "torch-int8 on a CPU (measured fastest there), torch on a GPU")
    p.add_argument("--sample", action="store_true",
                   help="also run on the photo that ships with cnnvision (drawn faces, made by the project)")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="refuse images of more pixels than this before decoding them (default 40,000,000)")
    p.add_argument("--parts", action="store_true", help="photos: also paint each face's parts on the overlay")
    p.add_argument("--threshold", type=float, help="photos: lowest detector score kept (default 0.5)")
    p.add_argument("--max-spread", type=spread_limit, metavar="NATS",
                   help="photos: drop detections on which the landmark net's heatmaps spread out more than "
                        "this, as on hands, paws and patterns (default 4.941; 'off' keeps every detection)")
    p.add_argument("--min-face", type=float, metavar="PX",
                   help="photos: also find faces down to PX pixels across (slower: by default faces under "
                        "about 32 px in the photo, or in its 1280 px reduction, are often missed)")

    p = sub.add_parser("serve", help="a local web page (and POST /predict) for faces in photos")
    p.set_defaults(func=serve)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted (default 20 MB)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image accepted (default 40 M pixels)")
    p.add_argument("--threshold", type=float, help="lowest detector score kept")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")

    p = sub.add_parser("submit", help="a Kaggle submission file")
    p.set_defaults(func=submit)
    add_model_args(p)
    p.add_argument("--test", required=True, help="Kaggle test.csv (ImageId,Image)")
    p.add_argument("--lookup", required=True, help="IdLookupTable.csv")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.add_argument("--skip-bad-rows", action="store_true")

    p = sub.add_parser("export", help="the model's inference graph as ONNX (dynamic batch)")
    p.set_defaults(func=export)
    add_model_args(p)
    p.add_argument("--onnx", required=True, metavar="FILE")

    p = sub.add_parser("benchmark", help="training and inference examples/sec on random data, or "
                                         "photos/sec through the face pipeline (--pipeline)")
    p.set_defaults(func=benchmark)
    p.add_argument("--pipeline", action="store_true",
                   help="time predict's detector + 68 landmarks on 640x480 photos of one face")
    p.add_argument("--images", nargs="+", metavar="IMAGE",
                   help="--pipeline: photos to fit to 640x480 (default: drawn faces on clutter)")
    p.add_argument("--count", type=int, default=32, help="--pipeline: drawn photos (default 32)")
    p.add_argument("--net", default="basic_cnn", choices=["basic_cnn", "kpnet", "kpheat", "hourglass"])
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"])
    p.add_argument("--device", choices=["cpu", "cuda", "auto"])
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="--pipeline: as predict's (default auto: torch-int8 on a CPU, torch on a GPU)")
    p.add_argument("--json", metavar="FILE")
    return parser


def train_task(a: argparse.Namespace) -> str:
    """--task; when resuming without it, the task of the run being resumed."""
    if a.task:
        return a.task
    last = Path(a.out) / "last.pt" if a.resume and a.out else None
    if last is not None and last.exists():
        from cnnvision import checkpoint
        return checkpoint.load(last)["net"]["task"]
    return "keypoints"


SEGMENTATION_FLAGS = {"--class-weights": "class_weights", "--aux-points": "aux_points"}


def train_augment(a: argparse.Namespace) -> bool | dict:
    """What the apps' ``augment`` takes: False (--no-augment), True, or the fields --augment changes."""
    if a.no_augment and a.augment:
        raise InputError("--augment and --no-augment contradict each other; give one")
    from cnnvision.data.augment import parse_augment
    return False if a.no_augment else parse_augment(a.augment) if a.augment else True


def single_source(a: argparse.Namespace) -> None:
    """Tasks other than keypoints read one --data (and one --images)."""
    for flag, name in (("--data", "data"), ("--images", "images")):
        given = getattr(a, name)
        if given and len(given) > 1:
            raise InputError(f"{flag} given {len(given)} times; only keypoint training reads several sources")
        setattr(a, name, given[0] if given else None)
    for flag, name in (("--share", "share"), ("--init", "init")):
        if getattr(a, name) is not None:
            raise InputError(f"{flag} applies to keypoint training only")


def parse_shares(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--share {text}: expected numbers separated by commas") from None


def spread_limit(text: str) -> float | str:
    if text == "off":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'off'") from None


def sample_photo() -> str:
    from importlib import resources
    return str(resources.files("cnnvision") / "samples" / "faces.jpg")


def predict_faces(a: argparse.Namespace) -> int:
    """``predict`` with no model flag: the face pipeline over photos, folders and videos. Exit
    status 0 when every input was read, 1 when some were skipped (each named on stderr)."""
    from cnnvision.apps.faces import FacePipeline
    from cnnvision.apps.predict import run_predict
    if a.min_face is not None and a.min_face <= 0:
        raise InputError(f"--min-face {a.min_face:g}: must be a positive number of pixels")
    if a.max_pixels is not None:
        from cnnvision.images import set_max_pixels
        set_max_pixels(a.max_pixels)
    spread = {} if a.max_spread is None else {"max_spread": None if a.max_spread == "off" else a.max_spread}
    pipeline = FacePipeline.pretrained(a.parts, threshold=a.threshold, min_face=a.min_face, device=a.device,
                                       runtime=a.runtime, **spread)
    to_files = any(x not in (None, "-") for x in (a.json, a.jsonl, a.csv))
    json_path = a.json if (a.json or to_files or a.jsonl == "-" or a.csv == "-") else "-"
    counts = run_predict(a.images, pipeline, None if a.no_overlay else a.out, json_path, a.jsonl, a.csv, a.crops,
                         a.every, a.max_frames, overwrite=a.overwrite)
    if to_files:
        done = ", ".join(f"{counts[k]} {k}" for k in ("photos", "frames", "faces", "skipped") if counts[k] or k == "faces")
        print(f"cnnvision predict: {done} on {pipeline.device.type}; results in "
              + ", ".join(p for p in (a.json, a.jsonl, a.csv) if p not in (None, "-")))
    return 1 if counts["skipped"] else 0


def train(a: argparse.Namespace) -> int:
    """``train``: the task's training config built by keyword from the options, then its app."""
    task = train_task(a)
    if task not in ("keypoints", "detection"):
        single_source(a)
    deepened = task in ("segmentation", "detection") or task == "keypoints" and a.net == "hourglass"
    if a.depth is not None and not deepened:
        raise InputError("--depth applies to segmentation, detection and keypoints' --net hourglass only")
    if task != "detection" and a.strided is not None:
        raise InputError("--strided applies to detection only (add --task detection)")
    if a.enlarge_most is not None and (task != "detection" or not a.enlarge_most > 0):
        raise InputError(f"--enlarge-most {a.enlarge_most:g}: a factor above 0, for detection only")
    if a.heatmap_loss is not None and (task != "keypoints" or (a.net or "kpheat") not in ("kpheat", "hourglass")):
        raise InputError("--heatmap-loss applies to the keypoint heatmap nets only (--net kpheat or hourglass)")
    if a.heatmap_loss is not None and not 0 <= a.heatmap_loss < float("inf"):
        raise InputError(f"--heatmap-loss {a.heatmap_loss:g}: give a weight >= 0")
    if task != "segmentation":
        for flag, name in SEGMENTATION_FLAGS.items():
            if getattr(a, name) is not None:
                raise InputError(f"{flag} applies to segmentation only (add --task segmentation)")
    TRAINERS[task](a)
    return 0


def check_choice(flag: str, value, allowed: tuple, what: str, task: str) -> None:
    if value is not None and value not in allowed:
        raise InputError(f"{flag} {value} is not {what}; {task} uses {', '.join(allowed)}")


def train_classification(a: argparse.Namespace) -> None:
    from cnnvision.apps.classify import ClassifierTraining, train as run
    net = a.net or "lenet5"
    check_choice("--net", net, CLASSIFIER_NETS, "a classifier", "classification")
    training = ClassifierTraining(data=a.data, net=net, augment=train_augment(a), solver=solver_overrides(a))
    run(training, a.out or f"runs/{net}-{Path(a.data).name if a.data else 'mnist'}", a.resume)


def train_detection(a: argparse.Namespace) -> None:
    from cnnvision.apps.detect import DetectorTraining, train as run
    check_choice("--net", a.net, ("fcn_detector",), "a detector", "detection")
    check_choice("--loss", a.loss, ("bce", "l2"), "a detection loss", "detection")
    training = DetectorTraining(
        data=a.data and (a.data if len(a.data) > 1 else a.data[0]),
        images=a.images and (a.images if len(a.images) > 1 else a.images[0]),
        scene_count=a.scene_count, image_size=a.image_size or 160, val_fraction=a.val_fraction,
        width=a.width or 16, depth=a.depth or 1, strided=a.strided or 0, objectness_loss=a.loss or "bce",
        augment=train_augment(a), shares=parse_shares(a.share), init=a.init, enlarge_most=a.enlarge_most,
        solver=solver_overrides(a))
    run(training, a.out or "runs/fcn_detector", a.resume)


def train_segmentation(a: argparse.Namespace) -> None:
    from cnnvision.apps.segment import SegmenterTraining, train as run
    net = a.net or "segnet"
    check_choice("--net", net, SEGMENTATION_NETS, "a segmentation net", "segmentation")
    check_choice("--loss", a.loss, ("ce", "ce_dice", "ce_lovasz"), "a segmentation loss", "segmentation")
    try:
        weights = tuple(float(w) for w in a.class_weights.split(",")) if a.class_weights else ()
    except ValueError:
        raise InputError(f"--class-weights {a.class_weights}: expected numbers separated by commas") from None
    training = SegmenterTraining(
        data=a.data, images=a.images, net=net, val_fraction=a.val_fraction, image_size=a.image_size or 96,
        channels=a.channels, width=a.width or 16, use_cache=not a.no_cache, augment=train_augment(a),
        class_weights=weights, loss=a.loss or "ce", depth=3 if a.depth is None else a.depth,
        aux_points=a.aux_points or 0.0, solver=solver_overrides(a))
    data_name = Path(a.data).name.split(".")[0] if a.data else "none"
    run(training, a.out or f"runs/{net}-{data_name}", a.resume)


def train_keypoints(a: argparse.Namespace) -> None:
    from cnnvision.apps.keypoints import KeypointTraining, train as run
    net = a.net or "kpheat"
    for nets, what, task in ((CLASSIFIER_NETS, "a classifier", "classification"),
                             (SEGMENTATION_NETS, "a segmentation net", "segmentation"),
                             (("fcn_detector",), "a detector", "detection")):
        if net in nets:
            raise InputError(f"--net {net} is {what}: add --task {task}")
    check_choice("--loss", a.loss, ("l1", "mse", "smooth_l1", "l1_nme"), "a keypoint loss", "keypoints")
    several = bool(a.data) and len(a.data) > 1
    data = a.data if several else (a.data[0] if a.data else None)
    images = a.images if several else (a.images[0] if a.images else None)
    if a.images and len(a.images) > 1 and not several:
        raise InputError(f"--images given {len(a.images)} times for one --data")
    training = KeypointTraining(
        data=data, images=images, net=net, val_fraction=a.val_fraction, image_size=a.image_size or 96,
        channels=a.channels, width=a.width or 24, depth=a.depth or 0, loss=a.loss or "l1",
        heatmap_loss=a.heatmap_loss or 0.0, skip_bad_rows=a.skip_bad_rows,
        use_cache=not a.no_cache, augment=train_augment(a), synthetic_count=a.synthetic_count,
        shares=parse_shares(a.share), init=a.init, solver=solver_overrides(a))
    data_name = "+".join(Path(d).name.split(".")[0] for d in a.data) if a.data else "synthetic"
    run(training, a.out or f"runs/{net}-{data_name}", a.resume)


TRAINERS = {"keypoints": train_keypoints, "detection": train_detection, "classification": train_classification,
            "segmentation": train_segmentation}


def evaluate(a: argparse.Namespace) -> int:
    from cnnvision import checkpoint
    from cnnvision.apps import classify, detect, keypoints, segment
    from cnnvision.files import save_image, write_json
    from cnnvision.runtime import resolve_runtime
    from cnnvision.solver import resolve_device
    net = checkpoint.load_net(a.checkpoint, a.pretrained)
    if net.task == "classification":
        ignored = [flag for flag, given in (("--images", a.images), ("--split", a.split != "all"),
                                            ("--skip-bad-rows", a.skip_bad_rows)) if given]
        if ignored:  # MNIST's test files are the held-out set; these options have no meaning there
            raise InputError(f"{', '.join(ignored)}: not used by a classification model (it reads idx files)")
        metrics = classify.evaluate_file(net, a.data)
        confusion = a.confusion
        if confusion is None and a.json:
            confusion = Path(a.json).with_name(Path(a.json).stem + "_confusion.png")
        if confusion:
            Path(confusion).parent.mkdir(parents=True, exist_ok=True)
            save_image(classify.confusion_image(metrics["confusion"]), confusion)
    elif net.task == "segmentation":
        metrics = segment.evaluate_file(net, a.data, a.images, a.split, a.val_fraction)
    elif net.task == "detection":
        runtime = resolve_runtime(a.runtime, resolve_device(a.device), net)
        metrics = detect.evaluate_file(net, a.data, a.images, a.split, a.val_fraction, a.threshold, runtime,
                                       a.device)
    else:
        detector = checkpoint.load_net(a.detector) if a.detector else None
        if detector is not None and detector.task != "detection":
            raise InputError(f"{a.detector}: is a {detector.task} checkpoint, not a detector")
        runtime = resolve_runtime(a.runtime, resolve_device(a.device), net, *([detector] if detector else []))
        metrics = keypoints.evaluate_file(net, a.data, a.images, a.skip_bad_rows, a.split, a.val_fraction,
                                          detector, runtime, a.device)
    print(json.dumps(metrics))
    if a.json:
        write_json(a.json, metrics)
    return 0


def predict(a: argparse.Namespace) -> int:
    """``predict``: the face pipeline (no model flag) or one model on whole images."""
    from cnnvision import checkpoint
    from cnnvision.apps import classify, detect, keypoints, segment
    from cnnvision.files import refuse_existing, write_json
    if not a.images and not a.sample:
        raise InputError("predict needs at least one photo, folder or video (or --sample)")
    a.images = a.images + ([sample_photo()] if a.sample else [])
    if not (a.checkpoint or a.pretrained):
        return predict_faces(a)
    refuse_existing(a.json, "--json", a.overwrite)
    net = checkpoint.load_net(a.checkpoint, a.pretrained)
    out = None if a.no_overlay else a.out
    if net.task == "classification":
        results = classify.predict_images(net, a.images)
        for path, r in results.items():
            print(f"{path}: {r['class']} (probability {r['probability']:.4f})")
    elif net.task == "segmentation":
        results = segment.predict_images(net, a.images, out, overwrite=a.overwrite)
        print(json.dumps(results))
    elif net.task == "detection":
        results = detect.predict_images(net, a.images, a.threshold)
        print(json.dumps(results))
    else:
        results = keypoints.predict_images(net, a.images, out, overwrite=a.overwrite)
        print(json.dumps(results))
    if a.json:
        write_json(a.json, results)
    return 0


def serve(a: argparse.Namespace) -> int:
    from cnnvision.apps.faces import FacePipeline
    from cnnvision.apps.serve import serve as run
    run(FacePipeline.pretrained(threshold=a.threshold, device=a.device), a.host, a.port,
        max_upload=int(a.max_upload_mb * (1 << 20)), max_pixels=a.max_pixels)
    return 0


def submit(a: argparse.Namespace) -> int:
    from cnnvision import checkpoint
    from cnnvision.apps import keypoints
    net = checkpoint.load_net(a.checkpoint, a.pretrained)
    if net.task != "keypoints":
        raise InputError(f"submit needs a keypoint model, not a {net.task} one")
    n = keypoints.submit(net, a.test, a.lookup, a.out, a.skip_bad_rows)
    print(f"wrote {n} predictions to {a.out}")
    return 0


def export(a: argparse.Namespace) -> int:
    from cnnvision import checkpoint
    from cnnvision.export import export_onnx
    net = checkpoint.load_net(a.checkpoint, a.pretrained)
    print(f"wrote {export_onnx(net, a.onnx)}")
    return 0


def benchmark(a: argparse.Namespace) -> int:
    from cnnvision.benchmark import benchmark as measure, benchmark_pipeline
    from cnnvision.files import write_json
    if a.pipeline:
        from cnnvision.apps.faces import FacePipeline
        pipeline = FacePipeline.pretrained(device=a.device or "cpu", precision=a.precision or "auto",
                                           runtime=a.runtime)
        result = benchmark_pipeline(a.images, a.count, pipeline=pipeline)
    else:
        result = measure(a.net, a.batch_size, a.steps, precision=a.precision, device=a.device)
    print(json.dumps(result))
    if a.json:
        write_json(a.json, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    from cnnvision.runs import Terminated, handle_sigterm
    a = build_parser().parse_args(argv)
    from cnnvision.solver import keep_freed_memory
    keep_freed_memory()  # the command owns the process: freed tensors' pages are kept for the next ones
    handle_sigterm()  # SIGTERM cleans up as Ctrl-C does: no half-written file, no run folder left locked
    try:
        return a.func(a)
    except Terminated as e:
        print(f"cnnvision {a.command}: terminated", file=sys.stderr)
        return e.code
    except InputError as e:
        print(f"cnnvision {a.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnvision {a.command}: interrupted", file=sys.stderr)
        return 130
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileNotFoundError) as e:
        where = e.filename or "a file"
        print(f"cnnvision {a.command}: error: {where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``predict ... | head``): stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
