"""Boxes for one-stage detection, as the tutorial describes it: every cell of an FCN's S-strided
output predicts objectness and the offsets of the box's top-left and bottom-right corners
(d = 5). Here: IoU, the target encoding and its decoding, non-maximum suppression, and
average precision. Boxes are (x0, y0, x1, y1) in pixels.
"""
import torch


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union: (N, 4) x (M, 4) -> (N, M)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1e-9)


def cell_centres(height: int, width: int, stride: int) -> torch.Tensor:
    """(h, w, 2) pixel coordinates of the centres of an S-strided output's cells."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * stride
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)


def encode(boxes: torch.Tensor, height: int, width: int, stride: int, scale: float,
           ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Targets for one image, (5, h, w): objectness 1 in the cells whose centre lies inside the
    central half of a box, else 0; there the corner offsets from the cell centre, divided by
    ``scale`` pixels (elsewhere 0, and masked out of the loss by objectness). Cells whose centre
    lies inside an ``ignore`` box (a face nobody labelled, or one cut by the picture's edge) and
    hold no labelled face get objectness -1: neither face nor background."""
    target = torch.zeros(5, height, width)
    centres = cell_centres(height, width, stride)  # (h, w, 2)
    for x0, y0, x1, y1 in (ignore.tolist() if ignore is not None else []):
        inside = ((centres[..., 0] >= x0) & (centres[..., 0] <= x1) & (centres[..., 1] >= y0)
                  & (centres[..., 1] <= y1))
        target[0][inside] = -1
    # smaller boxes last, so where boxes overlap a cell belongs to the smaller face
    for box in sorted(boxes.tolist(), key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])):
        x0, y0, x1, y1 = box
        cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
        inside = ((centres[..., 0] - cx).abs() <= max(hw, stride / 2)) & ((centres[..., 1] - cy).abs() <= max(hh, stride / 2))
        target[0][inside] = 1
        offsets = torch.stack([x0 - centres[..., 0], y0 - centres[..., 1], x1 - centres[..., 0], y1 - centres[..., 1]])
        target[1:, inside] = offsets[:, inside] / scale
    return target


def decode(output: torch.Tensor, stride: int, scale: float, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's output (5, h, w), objectness as a probability, -> boxes (K, 4) and scores (K,)
    of the cells above ``threshold``."""
    _, h, w = output.shape
    centres = cell_centres(h, w, stride).permute(2, 0, 1)  # (2, h, w)
    keep = output[0] > threshold
    corners = output[1:] * scale + centres.repeat(2, 1, 1)  # (4, h, w)
    return corners[:, keep].t(), output[0][keep]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float = 0.4, inside: float | None = None) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, best first. With ``inside``, a
    box is also dropped when that share of it (or of the better box) lies within a better box:
    the same face seen at two levels of a pyramid, once whole and once as its middle, overlaps
    too little for IoU to merge them."""
    order = scores.argsort(descending=True)
    keep = []
    while order.numel():
        best = order[0]
        keep.append(int(best))
        if order.numel() == 1:
            break
        rest = boxes[order[1:]]
        drop = box_iou(boxes[best][None], rest)[0] > iou
        if inside is not None:
            drop |= covered(boxes[best], rest) > inside
        order = order[1:][~drop]
    return torch.tensor(keep, dtype=torch.long)


def covered(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """For each of ``others`` (M, 4), the intersection with ``box`` (4,) over the smaller area."""
    lt = torch.maximum(box[:2], others[:, :2])
    rb = torch.minimum(box[2:], others[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (box[2:] - box[:2]).clamp(min=0).prod()
    areas = (others[:, 2:] - others[:, :2]).clamp(min=0).prod(-1)
    return inter / torch.minimum(areas, area).clamp(min=1e-9)


def greedy_matches(overlap: torch.Tensor, scores: torch.Tensor, iou: float = 0.5) -> torch.Tensor:
    """Which detections match a true box, given their IoU with each (D, T) and their scores (D,):
    best score first, each takes the true box it overlaps most of those still free, if by ``iou``
    or more. (D,) bool, in the detections' order."""
    hit = torch.zeros(len(scores), dtype=torch.bool)
    taken = torch.zeros(overlap.shape[1], dtype=torch.bool)
    if not overlap.shape[1]:
        return hit
    for i in scores.argsort(descending=True).tolist():
        free = overlap[i].masked_fill(taken, -1)
        j = int(free.argmax())
        if free[j] >= iou:
            taken[j] = hit[i] = True
    return hit


def average_precision(detections: list[tuple[torch.Tensor, torch.Tensor]], truths: list[torch.Tensor],
                      iou: float = 0.5) -> dict[str, float]:
    """AP (area under the interpolated precision-recall curve, every point) and recall at an IoU
    threshold, over images given as (boxes, scores) detections and true boxes."""
    records = []  # (score, is true positive)
    total = sum(len(t) for t in truths)
    for (boxes, scores), true in zip(detections, truths):
        overlap = box_iou(boxes, true) if len(true) else torch.zeros(len(boxes), 0)
        hit = greedy_matches(overlap, scores, iou)
        records += [(float(scores[i]), bool(hit[i])) for i in scores.argsort(descending=True).tolist()]
    if total == 0:
        return {"ap50": float("nan"), "recall50": float("nan")}
    records.sort(key=lambda r: -r[0])
    hits = torch.tensor([r[1] for r in records], dtype=torch.float32)
    tp = hits.cumsum(0)
    precision = tp / torch.arange(1, len(hits) + 1)
    recall = tp / total
    # precision envelope: the best precision at this recall or beyond
    envelope = precision.flip(0).cummax(0).values.flip(0) if len(hits) else precision
    steps = torch.diff(torch.cat([torch.zeros(1), recall]))
    ap = float((steps * envelope).sum())
    return {"ap50": ap, "recall50": float(recall[-1]) if len(hits) else 0.0}
