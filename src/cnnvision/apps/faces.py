"""Faces in ordinary photos: the shipped detector finds every face, then the landmark net puts 68
points on each, and (optionally) the parts net paints skin, eyes, nose and mouth.

The detector was trained on faces about 14 to 140 pixels across, so each photo is looked at as a
small pyramid: at its own size (shrunk to at most ``max_side``), then a quarter of that, and so
on while the picture is still a few cells big. Detections of all levels are merged by
non-maximum suppression. Each face is then cropped as the landmark net was trained to see it
(the square around the box, with a margin) and all faces of all photos go through the landmark
net in one batch. With ``refine``, the crop is made again around the first landmarks, turned
upright by the tilt of the eyes, and the net run once more: that undoes most of a detector box's
misplacement, and gives a tilted head the upright view the net was trained on. Each face's box
is then drawn from its points, as a person would draw it (``BOXES_FROM_POINTS``).
"""
import copy
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnvision import checkpoint
from cnnvision import images as imgs
from cnnvision.boxes import box_iou, decode, nms
from cnnvision.data.photos import drawn_box, face_box, framing_of, label_box
from cnnvision.errors import InputError
from cnnvision.layers import fold_batch_norm
from cnnvision.solver import autocast, resolve_device
from cnnvision.viz import GREEN, RED, draw_box, draw_points

DETECTOR, LANDMARKS, PARTS = "face-detector", "landmarks68", "face-parts"
# The lowest detector score the pipeline reports, with the landmark net's check below (MAX_SPREAD)
# behind it; chosen by benchmarks/detector_threshold.py (bf16 on an AMX Xeon, with SURE, boxes
# drawn from the points) for the detector of stop 25 (stop 22's, 4 epochs on pictures turned up to
# 40 degrees, then 3 with every source in the drawn box style) with stop 26's landmarks68, each
# threshold with its own 99% spread limit. On the web-faces validation photos at 0.5: recall at
# IoU 0.5 0.949 (0.944 in `evaluate`, which batches the check otherwise), 0.007 false boxes a
# photo, no box on the 200 face-free squares; at 0.8: 0.935,
# none and none; at 0.3: 0.958 with 0.040 and boxes on 2 squares. On the web-faces training
# photos, 0.5 finds 0.941 of the faces with 0.013 false boxes a photo, 0.8 finds 0.906 with 0.002.
# Held-out TV frames: all found at each. The boxes between 0.5 and 0.8 cost the pipeline about
# a tenth of its speed (their landmark passes). Stop 25 shipped 0.8 with stop 24's landmarks68.
THRESHOLD = 0.5
# The smallest face the detector finds reliably at a level's own size: on 640x480 group photos
# of held-out people it found 99% of faces 32-47 px across, 76% of 24-31 px, 31% of 16-23 px
# (benchmarks/pipeline_photos.py).
SMALLEST_FACE = 32
# A photo whose longer side is under ENLARGE_BELOW is first enlarged towards ENLARGE_TO, by at most
# ENLARGE_MOST, so that its small faces reach the sizes the detector finds best; photos of
# ENLARGE_BELOW px or more are searched at their own size. Stop 20 (enlarging towards 640, shipped
# detector at threshold 0.9, benchmarks/detector_threshold.py): on the web-faces validation photos
# (a median 554 px long) recall at IoU 0.5 rose from 0.856 to 0.879 with the same 0.067 false boxes
# a photo; boxes on face-free squares of those photos from 0.015 to 0.045 a square (enlarged
# without a limit, 0.060); the held-out TV frames' faces found went from 0.984 to 0.982. Stop 29
# (stop 26's nets, threshold 0.5, the landmark check): towards 960 instead, so that every photo
# under 640 px is searched 1.5 times its size, one more validation face was found (204 of 214,
# 0.953, against 203, 0.949) with 0.020 false boxes a photo against 0.007 and still no box on a
# face-free square; training photos 0.946 against 0.943. It costs the photos under 640 px 0.70x
# of their speed (18.9 against 26.9 photos/sec, int8; all 150 validation photos 25.5 against
# 30.3). Photos of 640 px or more, such as the 640x480 of the speed figures, are searched as
# before: enlarging them too found the same faces and would double the detector's work.
ENLARGE_BELOW = 640
ENLARGE_TO = 960
ENLARGE_MOST = 1.5
# A detection mostly (this share) inside a better one is the same face seen at another pyramid
# level: on the web-faces validation photos at threshold 0.9, with the first photo-trained
# detector, IoU alone left 19 such boxes beside faces; with this rule 2, and no face was lost.
INSIDE = 0.65
# A detection whose 68 heatmaps spread out more than this (mean entropy in nats, of 40x40 cells
# at most ln 1600 = 7.4; nets.keypoints.soft_argmax) is not taken for a face: on a hand, a paw or
# a pattern the landmark net finds no eye or mouth to peak on. Chosen on web-faces TRAINING
# photos (benchmarks/detector_threshold.py) to keep 99% of the faces the detector finds there at
# THRESHOLD: 5.772 in bf16 for the nets of stop 20 and the upright second pass (which makes the
# heatmaps of some non-faces peak more). Stop 19's detector at 0.7 with that pass: 5.765; without
# it: 5.80; stop 18's landmarks68: 5.86. Stop 22's detector finds more of the doubtful faces: the
# 99% rule gives 5.865 for it, which drew boxes on 2 of the 200 face-free squares; 5.772 draws none.
# Stop 24's landmarks68, trained with a term that asks each heatmap for one peak
# (--heatmap-loss), peaks far more on faces: by the same 99% rule, 5.142; with stop 25's detector
# at 0.8, 5.028 (at 5.116, one false box a photo more on the validation photos). Stop 26's
# landmarks68 (the same net trained on with the 68-point labels read from 0) with that detector at
# 0.5: 4.941 (at 0.8, 4.908).
MAX_SPREAD = 4.941
# A detection scoring at least this is kept whatever its heatmaps' spread: the check is for the
# doubtful boxes on hands and paws, and a face the detector is sure of, tilted or half cut off by
# the photo's edge, can spread its heatmaps as much. With stop 20's nets at THRESHOLD
# (benchmarks/detector_threshold.py --sure): web-faces validation recall at IoU 0.5 0.902 -> 0.907
# with the same 0.020 false boxes a photo, still no box on the 200 face-free squares, the TV frames
# unchanged; on the training photos 0.888 -> 0.890, false boxes 0.022 -> 0.024 a photo. At 0.95:
# 0.907 and 0.020, 0.894 and 0.025.
SURE = 0.98
# The second landmark pass (``refine``: the crop made again around the first points) runs only
# for faces whose new square overlaps the first by less than this IoU; the others keep their
# first points, which a second pass would move little. On the faces-300w validation photos
# through the pipeline it skipped 173 of 418 second passes, and nme_detected went from 4.361% to
# 4.375% (at 0.9: 69 skipped, 4.365%; at 0.8: 284, 4.465%).
REFINE_BELOW = 0.85
# A doubtful detection (scoring under SURE) whose first-pass heatmaps spread out more than this
# skips the second pass: it is not a face, and the second pass would not bring it under
# MAX_SPREAD. Nor does a detection whose first points box the same face as a sure one's (IoU over
# the detector's nms_iou): the boxes drawn from the points merge them anyway. Chosen on the web-faces
# TRAINING photos (benchmarks/detector_threshold.py reports it): of the doubtful detections the
# pipeline keeps there at THRESHOLD (320, with stop 26's nets, bf16), the largest first-pass spread
# is 5.619; 5.7 left a margin. Of the 263 it drops there, 86 now skip the second pass. Stop 30's
# detector (its second stage strided too) keeps doubtful faces there up to 5.885: 5.95.
FIRST_SPREAD = 5.95
# A face whose eyes tilt more than this (radians) gets the second pass too, turned upright. On the
# faces-300w validation photos turned +-30 degrees (benchmarks/tilted_faces.py) nme_detected was
# 4.41% with it and 4.48% with the upright pass only where the framing moves (stop 19: 5.37%).
REFINE_TILT = math.radians(15)
# A face's reported box is the square a person would draw around it, worked out from its 68 points
# (data.photos.drawn_box), rather than the detector's box: the landmark net places a face far more
# exactly than a stride-8 cell's corner offsets do, and the detector was trained on two box
# conventions at once (web-faces' drawn boxes, and face_box around the 68 points of the other
# sources), so its boxes fall between them. On the web-faces validation photos (bf16), the
# detections matching a face at IoU 0.3 or more met it at IoU 0.780 on average as the detector drew
# them and 0.897 as drawn from their points; 200 and 217 of 218 at IoU 0.5 or more.
BOXES_FROM_POINTS = True


@dataclass
class Face:
    box: list[float]          # x0, y0, x1, y1 in the photo's pixels (as a person draws it; BOXES_FROM_POINTS)
    score: float              # the detector's objectness
    keypoints: np.ndarray     # (68, 2) in the photo's pixels
    parts: np.ndarray | None = None  # (S, S) classes of the crop around the face, with ``crop``
    crop: tuple | None = None

    def to_json(self) -> dict:
        return {"box": [round(float(v), 1) for v in self.box], "score": round(float(self.score), 4),
                "keypoints": [[round(float(x), 2), round(float(y), 2)] for x, y in self.keypoints]}


def inference_copy(net, device: torch.device = torch.device("cpu")):
    return fold_batch_norm(copy.deepcopy(net).eval()).to(device, memory_format=torch.channels_last)


def as_photo(image) -> Image.Image:
    """A path, PIL image or numpy array (H x W x 3 RGB, H x W x 4 RGBA or H x W grey; uint8, or
    floats in [0, 1]) as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else imgs.open_pil(image)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            if not np.issubdtype(arr.dtype, np.floating):
                raise ValueError(f"image arrays must be uint8 or floats in [0, 1], not {arr.dtype}")
            arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or min(arr.shape[:2]) < 1:
            raise ValueError(f"an image array must be H x W (grey) or H x W x 3 (RGB), not {arr.shape}")
        return imgs.open_pil(Image.fromarray(np.ascontiguousarray(arr)))
    if isinstance(image, (str, Path)):
        return imgs.open_image(image, 3)
    raise TypeError(f"expected a path, a PIL image or a numpy array, not {type(image).__name__}")


def _nchw(arrays: list[np.ndarray]) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8 arrays of one size -> float (B, C, H, W) in [0, 1], channels-last."""
    x = torch.from_numpy(np.stack(arrays))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x.float().div_(255).contiguous(memory_format=torch.channels_last)


def shrink(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, H, W) resized down to height x width: where that is exactly half, the mean of each 2x2
    block, taken as four strided views (3x faster on a 3-channel photo than ``avg_pool2d`` or the
    antialiased resize, which are used otherwise)."""
    if (2 * height, 2 * width) == tuple(x.shape[-2:]):
        return (x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) * 0.25
    return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True,
                         align_corners=False).contiguous(memory_format=torch.channels_last)


class FacePipeline:
    """Detector, then landmarks (then parts) on each face, for batches of PIL images."""

    def __init__(self, detector, landmarks, parts=None, threshold: float | None = None, max_side: int = 1280,
                 min_side: int = 96, level_step: float = 4.0, refine: bool = True, batch_size: int = 16,
                 flip: bool = False, precision: str = "auto", min_face: float | None = None, device: str = "cpu",
                 enlarge_to: int | None = None, enlarge_below: int | None = None, runtime: str = "auto",
                 max_spread: float | None = MAX_SPREAD,
                 refine_below: float = REFINE_BELOW, refine_tilt: float = REFINE_TILT, sure: float = SURE,
                 boxes_from_points: bool = BOXES_FROM_POINTS, first_spread: float = FIRST_SPREAD,
                 streams: int | None = None):
        if detector.task != "detection":
            raise ValueError(f"the detector is a {detector.task} model")
        if landmarks.task != "keypoints" or landmarks.cfg.layout != "ibug68":
            raise ValueError("the landmark model must predict the 68-point layout")
        # Inference copies with each batch norm folded into its convolution: one pass fewer over
        # every activation, 13% of the pipeline's time before it was folded.
        self.device = resolve_device(device)
        from cnnvision.runtime import resolve_runtime
        runtime = resolve_runtime(runtime, self.device, detector, landmarks)  # auto: see there
        if runtime != "torch" and self.device.type != "cpu":
            raise InputError(f"--runtime {runtime} runs on the CPU only; use --runtime torch with --device {device}")
        self.runtime = runtime
        self.detector, self.landmarks = inference_copy(detector, self.device), inference_copy(landmarks, self.device)
        self.parts = inference_copy(parts, self.device) if parts is not None else None
        if runtime == "onnx":
            from cnnvision.runtime import for_runtime
            self.detector, self.landmarks = for_runtime(self.detector, runtime), for_runtime(self.landmarks, runtime)
            self.parts = for_runtime(self.parts, runtime) if self.parts is not None else None
        elif runtime == "onnx-int8":
            # Only the landmark net: its int8 graph placed the points of 29 faces in 0.27 s against
            # torch's 0.36 s at fp32 (0.21 s in bf16), while onnxruntime ran the detector's pyramid
            # 2.6x slower than torch (1.30 vs 0.51 s for 32 photos at fp32; a new shape each level).
            from cnnvision.runtime import for_runtime
            self.landmarks = for_runtime(self.landmarks, runtime)
        elif runtime == "torch-int8":
            # both nets' convolutions in int8 on oneDNN (quantize.py; the int8 graph holds its own
            # weights, so the copies' folded batch norms do not matter)
            from cnnvision.runtime import for_runtime
            self.detector, self.landmarks = for_runtime(self.detector, runtime), for_runtime(self.landmarks, runtime)
        elif runtime != "torch":
            raise InputError(f"--runtime {runtime}: use torch, onnx, onnx-int8 or torch-int8")
        self.threshold = THRESHOLD if threshold is None else threshold
        # ``max_spread``: drop detections whose landmark heatmaps spread out more (None: keep all;
        # a landmark net without heatmaps cannot say, and keeps all)
        self.max_spread = max_spread if getattr(self.landmarks, "has_spread", False) else None
        # ``sure``: detections scoring this much or more skip that check (above 1: none does)
        self.sure = sure
        # ``first_spread``: doubtful detections spreading more on the first pass skip the second
        # (FIRST_SPREAD; infinity: none does, and no duplicate of a sure face does either)
        self.first_spread = first_spread
        self.max_side, self.min_side, self.level_step = max_side, min_side, level_step
        self.enlarge_to = ENLARGE_TO if enlarge_to is None else enlarge_to
        # photos under ``enlarge_below`` px (longer side) are enlarged towards ``enlarge_to`` (levels)
        self.enlarge_below = ENLARGE_BELOW if enlarge_below is None else enlarge_below
        if min_face is not None and min_face <= 0:
            raise ValueError(f"min_face must be positive, not {min_face}")
        self.min_face = min_face
        # Photos go through the detector one at a time: its first stages' outputs for one 640x480
        # photo fit the CPU's cache, for eight they do not, and one at a time measured 1.8x faster
        # per photo. Face crops, far smaller, go through the landmark net ``batch_size`` at a time.
        # ``flip`` also averages in each face's mirror image. Through the pipeline it bought nothing
        # (faces-300w validation nme_detected 4.403% with, 4.402% without; TV frames 5.187% vs
        # 5.155%) for a third of the landmark net's time (61.8 vs 50.1 photos/sec, bf16; 25.2 vs
        # 20.1 at fp32 on AVX2), so it is off; ``evaluate``'s true-box figures still use it.
        self.refine, self.batch_size, self.flip = refine, batch_size, flip
        # ``streams``: the photos of a batch go through the detector, and its face crops through the
        # landmark net, this many at a time side by side, sharing torch's threads (default: one
        # stream per thread, each on one; on a GPU, one stream). The nets' layers on one photo or a
        # few crops keep two threads busy only part of the time: 1.17x the photos/sec on 2 cores
        # (README, Speed, stop 29). A single photo, or a single batch of crops, takes every thread.
        if streams is not None and streams < 1:
            raise ValueError(f"streams must be 1 or more, not {streams}")
        self.streams = streams or (torch.get_num_threads() if self.device.type == "cpu" else 1)
        # ``refine_below``: a face's second pass is skipped where the first framed it this well
        # (IoU of the two squares); above 1, every face gets one. With ``flip`` every face does.
        self.refine_below = refine_below
        # ``refine_tilt`` (radians): a face tilted more than this always gets the second pass, upright
        self.refine_tilt = refine_tilt
        # ``boxes_from_points``: report each face's box as drawn from its points (False: the detector's)
        self.boxes_from_points = boxes_from_points
        # the float precision of torch's layers; the other runtimes run theirs in fp32
        self.precision = precision if runtime == "torch" else "fp32"

    @classmethod
    def pretrained(cls, parts: bool = False, threshold: float | None = None, min_face: float | None = None,
                   device: str = "cpu", **options) -> "FacePipeline":
        """The shipped models: ``face-detector``, ``landmarks68`` and, with ``parts``, ``face-parts``.
        ``threshold``: lowest detector score kept (default: the pipeline's); ``min_face``: also
        search for faces this many pixels across; ``device``: cpu, cuda or auto. Other
        ``FacePipeline`` options (``max_side``, ``refine``, ...) pass through."""
        return cls(checkpoint.load_net(pretrained=DETECTOR), checkpoint.load_net(pretrained=LANDMARKS),
                   checkpoint.load_net(pretrained=PARTS) if parts else None, threshold=threshold,
                   min_face=min_face, device=device, **options)

    def levels(self, width: int, height: int) -> list[float]:
        """The scales at which a width x height photo is searched, largest first: from its own size
        (shrunk to ``max_side``; one under ``enlarge_below`` px enlarged towards ``enlarge_to``, at
        most ENLARGE_MOST times, and a tiny one to the detector's training side; with
        ``min_face``, the size at which a face that small is SMALLEST_FACE across), down by
        ``level_step`` while the shorter side keeps ``min_side`` pixels, and last at that smallest
        side where the step would skip it (so a face filling the photo is found too)."""
        longest, shortest = max(width, height), min(width, height)
        if self.min_face:
            scale = SMALLEST_FACE / self.min_face
        elif longest >= self.enlarge_below:
            scale = min(1.0, self.max_side / longest)
        else:  # enlarged, but at most ENLARGE_MOST times (a tiny picture stays small rather than blurred)
            scale = max(min(self.enlarge_to / longest, ENLARGE_MOST), self.detector.cfg.image_size / longest)
        found = [scale]
        smallest = self.min_side / shortest
        while found[-1] / self.level_step >= smallest:
            found.append(found[-1] / self.level_step)
        if found[-1] > 1.5 * smallest:
            found.append(smallest)
        return found

    def detect(self, photos: list[Image.Image]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per photo, face boxes (K, 4) in its pixels and scores (K,), best first. Each smaller
        level of the pyramid is resized from the one before, as a tensor."""
        return self._shared(self._detect_one, photos)

    def _detect_one(self, im: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.detector.cfg
        with torch.inference_mode(), autocast(self.device, self.precision):
            scales = self.levels(*im.size)
            first = im.convert("RGB" if cfg.in_channels == 3 else "L")
            size = (max(1, round(im.width * scales[0])), max(1, round(im.height * scales[0])))
            if size != first.size:
                first = first.resize(size, Image.Resampling.BILINEAR)
            x = _nchw([np.asarray(first)]).to(self.device)
            boxes, scores = [], []
            for k, scale in enumerate(scales):
                if k:
                    x = shrink(x, max(1, round(im.height * scale)), max(1, round(im.width * scale)))
                out = self.detector.predict(x)[0]
                b, sc = decode(out.float().cpu(), cfg.stride, cfg.scale, self.threshold)
                boxes.append(b * (im.width / x.shape[-1]))
                scores.append(sc)
            b, sc = torch.cat(boxes), torch.cat(scores)
            keep = nms(b, sc, cfg.nms_iou, inside=INSIDE)
            return b[keep], sc[keep]

    def _shared(self, work, items: list) -> list:
        """``work`` on each item (in order), shared among ``streams`` threads where there are
        several items, which share torch's threads."""
        streams = min(self.streams, len(items))
        if streams <= 1:
            return [work(item) for item in items]
        with threads_shared(streams), ThreadPoolExecutor(streams) as pool:
            return list(pool.map(work, items))

    def _crops(self, net, photos, owners, squares, angles=None) -> torch.Tensor:
        cfg = net.cfg
        mode = "L" if cfg.in_channels == 1 else "RGB"
        grey = {}
        crops = []
        for k, (i, box) in enumerate(zip(owners, squares)):
            if i not in grey:
                grey[i] = photos[i].convert(mode)
            crops.append(imgs.crop_square(grey[i], box, cfg.image_size, 0.0 if angles is None else angles[k]))
        return _nchw(crops)

    def _points(self, photos, owners, squares, flip: bool, spread: bool = False, angles=None):
        """(F, 68, 2) landmarks in photo pixels of the faces framed by ``squares`` (turned by
        ``angles`` about their centres, if given); with ``spread``, also their heatmaps' spread (F,)."""
        size = self.landmarks.cfg.image_size

        def run(part: slice):
            with torch.inference_mode(), autocast(self.device, self.precision):
                x = self._crops(self.landmarks, photos, owners[part], squares[part],
                                None if angles is None else angles[part]).to(self.device)
                if spread:
                    found, s = self.landmarks.predict_spread(x, flip=flip)
                    return found.float().cpu(), s.float().cpu()
                return self.landmarks.predict(x, flip=flip).float().cpu(), None
        # batches of at most batch_size, as many for each stream
        rounds = -(-len(owners) // (self.streams * self.batch_size))
        step = max(1, -(-len(owners) // (self.streams * rounds))) if owners else 1
        done = self._shared(run, [slice(i, i + step) for i in range(0, len(owners), step)])
        out, spreads = [f for f, _ in done], [s for _, s in done]
        points = torch.cat(out).numpy()
        turns = [0.0] * len(squares) if angles is None else angles
        points = np.stack([imgs.from_crop(p, sq, size, a) for p, sq, a in zip(points, squares, turns)])
        return (points, torch.cat(spreads).numpy()) if spread else points

    def landmarks_in(self, photos: list[Image.Image], owners: list[int], boxes: list, spread: bool = False,
                     settled=None):
        """(F, 68, 2) landmarks, in photo pixels, of the faces in ``boxes`` (x0, y0, x1, y1, as the
        detector draws them) of ``photos[owners[f]]``; with ``spread`` (heatmap nets), also
        how spread out the heatmaps of the last pass were (F,), low on faces. ``settled``: a
        function of the first pass's points and spreads (with ``spread``) giving a mask (F,) of the
        faces whose second pass is not worth running; they keep their first points."""
        # a face box stands for the square around the points, by its style's rule
        boxes = framing_of(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), self.detector.cfg.box_style)
        margin = self.landmarks.cfg.margin
        squares = [imgs.square_box(*b, margin) for b in boxes]
        if not self.refine:
            return self._points(photos, owners, squares, self.flip, spread)
        # The first pass frames the face for the second (the mirrored face is not worth its time
        # there), and its points stand where the new framing hardly differs (REFINE_BELOW).
        first = self._points(photos, owners, squares, False, spread)
        points, spreads = first if spread else (first, None)
        # frame each face again as training did, around its (now estimated) points, and turned
        # upright by the tilt of its eyes: the net was trained on faces tilted 30 degrees at most
        rolls = np.array([face_roll(p) for p in points])
        again = [upright_square(p, roll, margin) for p, roll in zip(points, rolls)]
        overlap = box_iou(torch.tensor(squares, dtype=torch.float32).reshape(-1, 4),
                          torch.tensor(again, dtype=torch.float32).reshape(-1, 4)).diagonal().numpy()
        moved = (overlap < self.refine_below) | (np.abs(rolls) > self.refine_tilt)
        redo = np.ones(len(again), bool) if self.flip else moved
        if settled is not None:
            redo &= ~settled(points, spreads)
        redo = np.flatnonzero(redo)
        if len(redo):
            second = self._points(photos, [owners[k] for k in redo], [again[k] for k in redo], self.flip, spread,
                                  angles=rolls[redo].tolist())
            if spread:
                points[redo], spreads[redo] = second
            else:
                points[redo] = second
        return (points, spreads) if spread else points

    def _faces(self, photos: list[Image.Image], detections=None):
        """The faces of ``photos`` that pass both nets: their owners (photo indices), boxes,
        scores and landmarks, all in one order. A detection (``detections``: ``detect``'s, made
        here if not given) is dropped when the landmark net's heatmaps on it spread out more
        than ``max_spread`` (not a face), unless it scored ``sure`` or more."""
        detections = self.detect(photos) if detections is None else detections
        owners = [i for i, (b, _) in enumerate(detections) for _ in range(len(b))]
        if not owners:
            return [], torch.zeros(0, 4), torch.zeros(0), np.zeros((0, 68, 2), np.float32)
        boxes, scores = torch.cat([b for b, _ in detections]), torch.cat([s for _, s in detections])
        if self.max_spread is None:
            points = self.landmarks_in(photos, owners, boxes.tolist())
            keep = np.ones(len(owners), bool)
        else:
            sure = scores.numpy() >= self.sure

            def settled(first: np.ndarray, spreads: np.ndarray) -> np.ndarray:
                """The detections the first pass settles (FIRST_SPREAD): not faces, or faces a sure one holds."""
                if not np.isfinite(self.first_spread):
                    return np.zeros(len(spreads), bool)
                done = ~sure & (spreads > max(self.first_spread, self.max_spread))
                if self.boxes_from_points:
                    # a later detection (they come best first within each photo) of a sure one's photo,
                    # whose first points box its face
                    drawn, mine = torch.from_numpy(drawn_box(first)).float().reshape(-1, 4), np.asarray(owners)
                    over = box_iou(drawn, drawn).numpy() > self.detector.cfg.nms_iou
                    over &= np.triu(mine[:, None] == mine[None], 1) & sure[:, None]
                    done |= over.any(0)
                return done

            points, spread = self.landmarks_in(photos, owners, boxes.tolist(), spread=True,
                                               settled=settled if self.refine else None)
            keep = (spread <= self.max_spread) | sure
        owners, scores, points = [o for o, k in zip(owners, keep) if k], scores[keep], points[keep]
        if not self.boxes_from_points:
            return owners, boxes[keep], scores, points
        # Each face's box is the one a person would draw, from its points, not the detector's (see
        # BOXES_FROM_POINTS); two detections whose points now give overlapping boxes are one face.
        boxes = torch.from_numpy(drawn_box(points)).float().reshape(-1, 4)
        mine, kept = torch.tensor(owners, dtype=torch.long), []
        for i in dict.fromkeys(owners):
            theirs = torch.nonzero(mine == i)[:, 0]
            kept += theirs[nms(boxes[theirs], scores[theirs], self.detector.cfg.nms_iou)].tolist()
        kept.sort()  # the detections' order: by photo, best first within each
        return [owners[k] for k in kept], boxes[kept], scores[kept], points[kept]

    def box_of(self, points: np.ndarray) -> np.ndarray:
        """The box (..., 4) this pipeline reports for a face whose true (..., 68, 2) points are
        these: to compare its boxes with faces known by their points."""
        return drawn_box(points) if self.boxes_from_points else detector_box_of(self.detector, points)

    def find(self, photos: list[Image.Image], detections=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per photo, the boxes (K, 4) and scores (K,) of the faces ``predict`` reports; of
        ``detections`` (``detect``'s for these photos) where the detector has already run."""
        owners, boxes, scores, _ = self._faces(photos, detections)
        mine = torch.tensor(owners, dtype=torch.long)
        return [(boxes[mine == i], scores[mine == i]) for i in range(len(photos))]

    def __call__(self, image) -> list[Face]:
        """The faces of one image: a path, a PIL image, or a numpy array (H x W x 3 RGB or H x W
        grey, uint8), in its pixels, best first."""
        return self.predict([image])[0]

    def predict(self, images) -> list[list[Face]]:
        """The faces of each image (paths, PIL images or numpy arrays, as ``__call__`` takes)."""
        photos = [as_photo(im) for im in images]
        owners, found, found_scores, points = self._faces(photos)
        if not owners:
            return [[] for _ in photos]
        found, found_scores = found.tolist(), found_scores.tolist()
        parts = self._parts(photos, owners, points) if self.parts is not None else [(None, None)] * len(owners)
        faces: list[list[Face]] = [[] for _ in photos]
        for i, box, score, pts, (mask, crop) in zip(owners, found, found_scores, points, parts):
            faces[i].append(Face(box, score, pts, mask, crop))
        return faces

    def _parts(self, photos, owners, points) -> list[tuple[np.ndarray, tuple]]:
        squares = [imgs.square_box(*p.min(0), *p.max(0), self.parts.cfg.margin) for p in points]
        masks = []
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, len(owners), self.batch_size):
                x = self._crops(self.parts, photos, owners[start:start + self.batch_size],
                                squares[start:start + self.batch_size]).to(self.device)
                masks.append(self.parts.predict(x).float().argmax(1).to(torch.uint8).cpu())
        return list(zip(torch.cat(masks).numpy(), squares))


_THREADS = threading.Lock()


@contextmanager
def threads_shared(streams: int):
    """torch's threads dealt out among ``streams`` streams for the duration (restored after):
    each stream's layers run on that share, at least one; one such section at a time."""
    with _THREADS:
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, before // streams))
        try:
            yield
        finally:
            torch.set_num_threads(before)


def draw_faces(im: Image.Image, faces: list[Face]) -> Image.Image:
    """The photo with each face's parts (when predicted), box, score and 68 points."""
    from cnnvision.nets.segment import overlay
    out = im.convert("RGB")
    for face in faces:
        if face.parts is not None:
            x0, y0, x1, y1 = face.crop
            side = x1 - x0
            # the crop's classes resampled into photo pixels, nearest-neighbour, then tinted in place
            left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
            right, bottom = min(out.width, int(np.ceil(x1))), min(out.height, int(np.ceil(y1)))
            if right > left and bottom > top:
                ys = ((np.arange(top, bottom) + 0.5 - y0) / side * face.parts.shape[0]).astype(int)
                xs = ((np.arange(left, right) + 0.5 - x0) / side * face.parts.shape[1]).astype(int)
                mask = face.parts[np.clip(ys, 0, face.parts.shape[0] - 1)][:, np.clip(xs, 0, face.parts.shape[1] - 1)]
                region = np.asarray(out.crop((left, top, right, bottom))).copy()
                tinted = overlay(torch.from_numpy(region).permute(2, 0, 1), torch.from_numpy(mask)).numpy()
                out.paste(Image.fromarray(tinted), (left, top))
        draw_box(out, face.box, GREEN, f"{face.score:.2f}")
        out = draw_points(out, face.keypoints, RED, radius=max(1.0, (face.box[2] - face.box[0]) / 90))
    return out


def predict_photos(paths: list[str], out_dir: str | Path | None = "predictions", with_parts: bool = False,
                   threshold: float | None = None, batch: int = 16, pipeline: FacePipeline | None = None,
                   min_face: float | None = None, overwrite: bool = False) -> dict:
    """``{path: [{"box", "score", "keypoints"}, ...]}`` for photos, read ``batch`` at a time; an
    overlay PNG per photo into ``out_dir`` (numbered names beside existing files, unless
    ``overwrite``). ``min_face`` (pixels) searches for faces that small too, at the cost of a
    larger first level."""
    from cnnvision.files import free_name, save_image
    pipeline = pipeline or FacePipeline.pretrained(with_parts, threshold=threshold, min_face=min_face)
    results, used = {}, set()
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        photos = [imgs.open_image(p, 3) for p in chunk]
        for path, im, faces in zip(chunk, photos, pipeline.predict(photos)):
            results[str(path)] = [f.to_json() for f in faces]
            if out_dir is not None:
                name = free_name(out_dir, Path(path).stem + "_faces", ".png", used, overwrite)
                save_image(draw_faces(im, faces), Path(out_dir) / f"{name}.png")
    return results


def resize_to(im: Image.Image, width: int, height: int) -> Image.Image:
    """``im`` scaled to fit width x height and centred on grey: a photo of exactly that size."""
    s = min(width / im.width, height / im.height)
    small = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BILINEAR)
    canvas = Image.new(im.mode, (width, height), 128 if im.mode == "L" else (128, 128, 128))
    canvas.paste(small, ((width - small.width) // 2, (height - small.height) // 2))
    return canvas


def face_roll(points: np.ndarray) -> float:
    """How far a face's 68 points are turned in the picture's plane, in radians: the direction
    from the centre of its right eye (points 36-41) to that of its left (42-47); 0 when upright."""
    dx, dy = points[42:48].mean(0) - points[36:42].mean(0)
    return float(np.arctan2(dy, dx))


def upright_square(points: np.ndarray, roll: float, margin: float) -> tuple[float, float, float, float]:
    """The square (x0, y0, x1, y1) that, turned by ``roll`` about its centre (``crop_square``'s
    ``angle``), frames the points as the landmark nets were trained: the square around their
    extent in the face's own upright frame, widened by ``margin``."""
    if not roll:
        return imgs.square_box(*points.min(0), *points.max(0), margin)
    cos, sin = np.cos(roll), np.sin(roll)
    upright = points @ np.array([[cos, -sin], [sin, cos]])  # each point turned by -roll
    x0, y0, x1, y1 = imgs.square_box(*upright.min(0), *upright.max(0), margin)
    cx, cy = (x0 + x1) / 2 * cos - (y0 + y1) / 2 * sin, (x0 + x1) / 2 * sin + (y0 + y1) / 2 * cos
    half = (x1 - x0) / 2
    return cx - half, cy - half, cx + half, cy + half


def face_boxes_of(detector, boxes: torch.Tensor) -> torch.Tensor:
    """A detector's boxes (K, 4) as face boxes: as they are, or, from the first detector (which
    drew the points' extent), turned into face boxes by the same rule as its training labels."""
    if detector.cfg.box_style != "points":
        return boxes
    return torch.from_numpy(face_box(boxes.numpy().reshape(-1, 2, 2))).float().reshape(-1, 4)


def detector_box_of(detector, points: np.ndarray) -> np.ndarray:
    """The box a detector is trained to draw around faces with these (N, K, 2) points, in its
    ``box_style`` (data.photos.label_box)."""
    return label_box(points, detector.cfg.box_style)


def evaluate_landmarks_on_photos(pipeline: "FacePipeline", images_dir: str | Path, names: list[str],
                                 points: np.ndarray) -> dict:
    """Landmarks through the photo pipeline's own boxes: each labelled face (``names[i]``'s photo,
    68 ``points[i]``) is matched to the detection that overlaps its true box most (IoU >= 0.5);
    ``detected`` is the share matched, ``nme_detected`` etc. the 300-W figures over those."""
    from cnnvision.nets.keypoints import nme_summary, per_face_nme
    rows: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        rows.setdefault(n, []).append(i)
    errors, found = [], 0
    for name, idx in rows.items():
        photo = imgs.open_image(Path(images_dir) / name, 3)
        faces = pipeline(photo)
        if not faces:
            continue
        boxes = torch.tensor([f.box for f in faces], dtype=torch.float32)
        true = torch.from_numpy(pipeline.box_of(points[idx])).float().reshape(-1, 4)
        overlap = box_iou(true, boxes)
        for row, o in zip(idx, overlap):
            j = int(o.argmax())
            if o[j] >= 0.5:
                found += 1
                errors.append(per_face_nme(torch.from_numpy(faces[j].keypoints[None]).float(),
                                           torch.from_numpy(points[row][None]).float()))
    result = {"detected": found / len(names)}
    result.update(nme_summary(torch.cat(errors) if errors else torch.zeros(0), "detected_"))
    result["nme_detected"] = result.pop("detected_nme")
    return result


def face_free_crops(photos: list[Image.Image], boxes: list[np.ndarray], count: int, seed: int = 0) -> list[Image.Image]:
    """Squares of photos that overlap no labelled face (with a 10% margin around each): a third
    to two thirds of the shorter side, at the photo's own resolution."""
    rng = np.random.default_rng(seed)
    crops, tries = [], 0
    while len(crops) < count and tries < count * 50:
        tries += 1
        i = int(rng.integers(len(photos)))
        w, h = photos[i].size
        side = rng.uniform(0.33, 0.67) * min(w, h)
        x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
        b = boxes[i]
        if len(b):
            pad = 0.1 * (b[:, 2:] - b[:, :2])
            lo, hi = b[:, :2] - pad, b[:, 2:] + pad
            if ((lo[:, 0] < x0 + side) & (hi[:, 0] > x0) & (lo[:, 1] < y0 + side) & (hi[:, 1] > y0)).any():
                continue
        crops.append(photos[i].crop((int(x0), int(y0), int(x0 + side), int(y0 + side))))
    return crops


def evaluate_detector_on_photos(detector, csv_path: str | Path, images_dir: str | Path, split: str = "val",
                                val_fraction: float = 0.15, threshold: float | None = None,
                                min_face: float | None = None, runtime: str = "torch", device: str = "cpu") -> dict:
    """A detector on web-faces photos (every visible face labelled) as ``predict`` finds faces:
    its multi-scale search, then the landmark net's check (``MAX_SPREAD``). ``ap50`` (every
    detection down to 0.05 on the precision-recall curve), and at the pipeline's threshold
    ``recall50``, ``false_per_photo`` (detections matching no face at IoU 0.5) and
    ``false_per_facefree_crop`` on squares of the same photos that hold no face; the same three
    without the check as ``detector_recall50`` and so on. ``split`` as ``train`` makes it (by
    photo, fixed seed)."""
    from cnnvision.boxes import average_precision
    from cnnvision.data.photos import group_by_photo, read_web_faces, split_photos
    names, boxes, _ = read_web_faces(csv_path)
    photos, per_photo = group_by_photo(names, boxes)
    if split != "all":
        train_idx, val_idx = split_photos(photos, val_fraction)
        keep = val_idx if split == "val" else train_idx
        photos, per_photo = [photos[i] for i in keep], [per_photo[i] for i in keep]
    landmarks = checkpoint.load_net(pretrained=LANDMARKS)
    pipeline = FacePipeline(detector, landmarks, threshold=0.05, min_face=min_face, runtime=runtime, device=device)
    cut = THRESHOLD if threshold is None else threshold
    opened = [imgs.open_image(Path(images_dir) / p, 3) for p in photos]
    truths = [torch.from_numpy(b).float() for b in per_photo]
    crops = face_free_crops(opened, per_photo, 200)
    # the detector runs once on each picture; the check then runs on its detections
    raw = [pipeline.detect([im]) for im in opened]
    raw_on_crops = [pipeline.detect([c]) for c in crops]
    checked = [pipeline.find([im], d) for im, d in zip(opened, raw)]
    checked_on_crops = [pipeline.find([c], d) for c, d in zip(crops, raw_on_crops)]
    result = {}
    for prefix, found, on_crops in (("", checked, checked_on_crops), ("detector_", raw, raw_on_crops)):
        # the pipeline's own boxes where it draws them from the points; the detector's as face boxes
        mine = not prefix and pipeline.boxes_from_points
        detections = [(b if mine else face_boxes_of(detector, b), s) for (b, s), in found]
        if not prefix:
            result["ap50"] = average_precision(detections, truths)["ap50"]
        above = [(b[s >= cut], s[s >= cut]) for b, s in detections]
        result[prefix + "recall50"] = average_precision(above, truths)["recall50"]
        false = 0
        for (b, _), t in zip(above, truths):
            if len(b):
                false += int((box_iou(b, t).max(1).values < 0.5).sum()) if len(t) else len(b)
        result[prefix + "false_per_photo"] = false / len(opened)
        boxes_on_crops = sum(int((s >= cut).sum()) for (_, s), in on_crops)
        result[prefix + "false_per_facefree_crop"] = boxes_on_crops / max(1, len(crops))
    result.update({"threshold": cut, "max_spread": pipeline.max_spread, "photos": len(opened),
                   "faces": int(sum(len(t) for t in truths)), "facefree_crops": len(crops)})
    return result
