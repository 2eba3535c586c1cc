"""The face pipeline's detections at several score thresholds, without and with the landmark
net's check (``MAX_SPREAD``: boxes whose 68 heatmaps spread out are dropped), on held-out pictures:

- the held-out people's TV frames: the share of faces found (IoU >= 0.5 with the true box) and
  the other boxes per frame;
- the web-faces validation photos (every visible face labelled): recall at IoU 0.5, false boxes
  per photo, and boxes on face-free squares of the same photos;
- the same two figures on the web-faces training photos, where a threshold can be chosen
  without looking at the validation photos.

The spread limit for each threshold is chosen on the web-faces TRAINING photos (never on the
figures it is judged by): the largest spread of the faces found there, less the top ``--lose``
share of them (several shares, comma-separated, give a limit each).

    python benchmarks/detector_threshold.py [--detector CKPT] [--landmarks CKPT] [--thresholds 0.5,0.7,0.8,0.9]
        [--lose 0.01,0.03] [--precision auto|fp32|bf16] [--level-step 4.0] [--enlarge-to 960]
        [--enlarge-below 640] [--sure 0.95,0.98] [--boxes points|detector]

With ``--sure``, the shipped limit is also measured with detections scoring that much or more
kept whatever their spread (the pipeline's ``SURE``). For each threshold it also reports the
largest first-pass spread of a doubtful detection the shipped limit keeps on the training
photos: the pipeline's ``FIRST_SPREAD`` must lie above it.
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from cnnvision import checkpoint
from cnnvision import images as imgs
from cnnvision.apps.faces import (DETECTOR, FIRST_SPREAD, LANDMARKS, MAX_SPREAD, SURE, FacePipeline,
                                  face_free_crops)
from cnnvision.boxes import box_iou, greedy_matches, nms
from cnnvision.data.photos import drawn_box, group_by_photo, read_web_faces, split_photos
from compare_dlib import DATA, add_runtime_option, held_out_rows

WEB = DATA.parent / "web-faces"


def scored(pipeline, photo, truth, lowest):
    """For each detection scoring at least ``lowest``: its score, its best IoU with a true box,
    its landmark heatmaps' spread, and their spread on the first pass; its IoU with each true box;
    its box as the pipeline reports it (drawn from its points, or the detector's)."""
    (boxes, scores), = pipeline.detect([photo])
    keep = scores >= lowest
    boxes, scores = boxes[keep], scores[keep]
    if not len(boxes):
        return np.zeros((0, 4)), np.zeros((0, len(truth))), torch.zeros(0, 4)
    firsts = []  # the first pass's spreads, as the pipeline hands them on to decide the second

    def second_for_all(_, first_spread):
        firsts.append(first_spread.copy())  # the second pass then writes over the array
        return np.zeros(len(first_spread), bool)
    points, spread = pipeline.landmarks_in([photo], [0] * len(boxes), boxes.tolist(), spread=True,
                                           settled=second_for_all)
    first = firsts[0] if firsts else spread  # no second pass (refine off): the only one
    if pipeline.boxes_from_points:
        boxes = torch.from_numpy(drawn_box(points)).float()
    overlap = box_iou(boxes, truth).numpy() if len(truth) else np.zeros((len(boxes), 0))
    best = overlap.max(1) if len(truth) else np.zeros(len(boxes))
    return np.stack([scores.numpy(), best, spread, first], 1), overlap, boxes


def first_pass_spreads(pictures, t, limit, sure):
    """The first-pass spreads of the doubtful detections (scoring ``t`` to ``sure``): of those
    the check keeps (``limit``), and of the faces among them (IoU 0.5), and of those it drops."""
    rows = np.concatenate([r for r, _, _ in pictures])
    doubtful = (rows[:, 0] >= t) & (rows[:, 0] < sure)
    kept = doubtful & (rows[:, 2] <= limit)
    return rows[kept, 3], rows[kept & (rows[:, 1] >= 0.5), 3], rows[doubtful & ~kept, 3]


def figures(pictures, t, limit, sure=np.inf, merge=None):
    """Faces found (share of true boxes matched) and other boxes per picture at threshold ``t``
    and spread ``limit`` (None: no check), which detections scoring ``sure`` or more skip; of the
    boxes drawn from points, the weaker of two that overlap by more than IoU ``merge`` goes, as
    in the pipeline."""
    hit = faces = false = 0
    for rows, matches, boxes in pictures:
        kept = (rows[:, 0] >= t) & ((rows[:, 2] <= (np.inf if limit is None else limit)) | (rows[:, 0] >= sure))
        if kept.sum() > 1 and merge is not None:
            mine = np.flatnonzero(kept)
            kept[:] = False
            kept[mine[nms(boxes[mine], torch.from_numpy(rows[mine, 0]).float(), merge)]] = True
        hit += int(greedy_matches(torch.from_numpy(matches[kept]), torch.from_numpy(rows[kept, 0])).sum())
        faces += matches.shape[1]
        false += int((kept & (rows[:, 1] < 0.5)).sum())
    return hit / max(1, faces), false / len(pictures)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", help="a detector checkpoint (default: the shipped face-detector)")
    ap.add_argument("--landmarks", help="a 68-point checkpoint whose heatmaps' spread checks the boxes "
                    "(default: the shipped landmarks68)")
    ap.add_argument("--thresholds", default="0.5,0.6,0.7,0.8,0.9")
    ap.add_argument("--lose", default="0.01", help="share of training faces the spread limit may drop "
                    "(several, comma-separated: a limit each)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    add_runtime_option(ap)
    ap.add_argument("--level-step", type=float, help="scale between the search's pyramid levels "
                    "(default: the pipeline's)")
    ap.add_argument("--enlarge-to", type=int, help="photos are enlarged towards this longer side, at most "
                    "ENLARGE_MOST times (default: the pipeline's)")
    ap.add_argument("--enlarge-below", type=int, help="only photos whose longer side is under this are "
                    "enlarged (default: the pipeline's)")
    ap.add_argument("--sure", default="", help="scores above which a detection skips the spread check, "
                    "each measured with the shipped limit (e.g. 0.95,0.98)")
    ap.add_argument("--boxes", default="points", choices=["points", "detector"],
                    help="the boxes judged: drawn from each face's points, as the pipeline reports them, "
                    "or the detector's")
    a = ap.parse_args()
    detector = checkpoint.load_net(a.detector, None if a.detector else DETECTOR)
    landmarks = checkpoint.load_net(a.landmarks, None if a.landmarks else LANDMARKS)
    pipeline = FacePipeline(detector, landmarks, threshold=0.05, precision=a.precision, runtime=a.runtime,
                            boxes_from_points=a.boxes == "points",
                            **({"level_step": a.level_step} if a.level_step else {}),
                            **({"enlarge_to": a.enlarge_to} if a.enlarge_to else {}),
                            **({"enlarge_below": a.enlarge_below} if a.enlarge_below else {}))
    thresholds = [float(t) for t in a.thresholds.split(",")]
    lowest = min(thresholds)
    sures = [float(x) for x in a.sure.split(",") if x]

    names, points = held_out_rows(DATA / "training_frames_keypoints.csv", 0.15)
    frames = []
    for name, pts in zip(names, points):
        truth = torch.from_numpy(pipeline.box_of(pts[None])).float().reshape(-1, 4)
        frames.append(scored(pipeline, imgs.open_image(Path(DATA / "training" / name), 3), truth, lowest))

    web_names, boxes, _ = read_web_faces(WEB / "faces.csv")
    photos, per_photo = group_by_photo(web_names, boxes)
    train, val = split_photos(photos, 0.15)

    def web(indices):
        opened = [imgs.open_image(WEB / "images" / photos[i], 3) for i in indices]
        return opened, [scored(pipeline, im, torch.from_numpy(per_photo[i]).float(), lowest)
                        for im, i in zip(opened, indices)]

    _, trained_on = web(train)
    opened, held = web(val)
    crops = face_free_crops(opened, [per_photo[i] for i in val], 200)
    on_crops = [scored(pipeline, c, torch.zeros(0, 4), lowest) for c in crops]
    print(f"{len(frames)} held-out frames; {len(held)} web validation photos, "
          f"{sum(m.shape[1] for _, m, _ in held)} faces; {len(crops)} face-free squares; spread limits "
          f"from {len(trained_on)} web training photos (shipped MAX_SPREAD: {MAX_SPREAD}); precision {a.precision}, "
          f"pyramid levels {pipeline.level_step:g} apart, photos under {pipeline.enlarge_below} px enlarged "
          f"towards {pipeline.enlarge_to} px; "
          f"boxes {a.boxes}")
    for t in thresholds:
        true = np.concatenate([r[(r[:, 0] >= t) & (r[:, 1] >= 0.5), 2] for r, _, _ in trained_on])
        chosen = [float(np.quantile(true, 1 - float(lose))) for lose in a.lose.split(",")]
        limits = [*chosen, MAX_SPREAD]
        checks = [(None, np.inf), *[(c, np.inf) for c in limits], *[(c, x) for c in limits for x in sures]]
        merge = detector.cfg.nms_iou if pipeline.boxes_from_points else None
        for limit, sure in checks:
            found, others = figures(frames, t, limit, sure, merge)
            recall, false = figures(held, t, limit, sure, merge)
            seen, seen_false = figures(trained_on, t, limit, sure, merge)
            _, boxes_on_crops = figures(on_crops, t, limit, sure, merge)
            check = ("no spread check     " if limit is None else f"spread <= {limit:.3f}    "
                     + (f"unless >= {sure:.2f}" if sure <= 1 else ""))
            print(f"threshold {t:.2f}, {check}: frames found {found:.4f}, other boxes a frame {others:.3f}; "
                  f"web recall50 {recall:.4f}, false a photo {false:.3f}; boxes a face-free square "
                  f"{boxes_on_crops:.3f}; web training photos recall50 {seen:.4f}, false a photo {seen_false:.3f}")
        # FIRST_SPREAD: the first-pass spread above which no doubtful detection the check keeps
        # on the training photos lies (so the pipeline keeps the same faces there)
        for sure in sures or [SURE]:
            kept, faces, dropped = first_pass_spreads(trained_on, t, MAX_SPREAD, sure)
            print(f"threshold {t:.2f}, first-pass spread on the web training photos, doubtful detections "
                  f"(under {sure:.2f}) the shipped limit keeps: largest {kept.max(initial=0):.3f} "
                  f"({len(kept)}; faces {faces.max(initial=0):.3f}, {len(faces)}); of the {len(dropped)} it drops, "
                  f"{(dropped > FIRST_SPREAD).sum()} are over FIRST_SPREAD {FIRST_SPREAD} (second pass saved)")


if __name__ == "__main__":
    main()
