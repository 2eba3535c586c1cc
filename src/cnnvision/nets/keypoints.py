"""Keypoint regression: the tutorial's BasicCNN, a stronger net, and the Net that gives them a
loss and metrics.

Outputs are 2K numbers per face, the points in unit coordinates: -1 and 1 are the crop's
edges, the tutorial's scaling of labels to [-1, 1].
"""
from dataclasses import dataclass

import torch
from torch import nn

from cnnvision.data.augment import pixels_to_unit, unit_to_pixels
from cnnvision.data.layouts import get_layout
from cnnvision.viz import face_grid
from cnnvision.layers import Residual, conv, conv_output_size, conv_relu, deconv, linear_relu, pool, xavier_init


class BasicCNN(nn.Module):
    """Exactly the tutorial's net: three conv + ReLU + 2x2 max-pool stages (3x3x32, 2x2x64,
    2x2x128, 'SAME' padding), fc 100, fc 100, then the outputs; Xavier initialisation."""

    def __init__(self, in_channels: int, image_size: int, outputs: int):
        super().__init__()
        # ReLU after the pool: max-pooling and ReLU commute, and pooling first leaves ReLU (and
        # its backward pass) a quarter of the work. The function is the tutorial's exactly.
        self.features = nn.Sequential(
            conv(in_channels, 32, 3), pool(2, ceil_mode=True), nn.ReLU(inplace=True),
            conv(32, 64, 2), pool(2, ceil_mode=True), nn.ReLU(inplace=True),
            conv(64, 128, 2), pool(2, ceil_mode=True), nn.ReLU(inplace=True),
        )
        side = image_size
        for _ in range(3):
            side = -(-side // 2)  # SAME pooling rounds up
        self.head = nn.Sequential(
            nn.Flatten(),
            linear_relu(128 * side * side, 100),
            linear_relu(100, 100),
            nn.Linear(100, outputs),
        )
        xavier_init(self)

    # At inference the conv stages run on slices of this many images: the first stage's output
    # (32 channels at full size) then stays in the CPU's cache instead of a round trip through
    # memory, measured about 20% faster per batch of 50; training keeps whole batches for backward.
    inference_slice = 10

    def forward(self, x):  # (B, C, S, S) -> (B, outputs)
        if torch.is_grad_enabled() or len(x) <= self.inference_slice:
            return self.head(self.features(x))
        return self.head(torch.cat([self.features(part) for part in x.split(self.inference_slice)]))


class KPNet(nn.Module):
    """Four VGG-style stages of 3x3 conv + batch norm + ReLU with 2x2 max-pool (channels w, 2w,
    4w, 8w), then a dropout-regularised fully connected head on the flattened S/16 map.

    Flattening rather than global pooling keeps where things are, which is the whole task.
    """

    def __init__(self, in_channels: int, image_size: int, outputs: int, width: int = 24, dropout: float = 0.3):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_relu(in_channels, w, 3, batch_norm=True), pool(2),
            conv_relu(w, 2 * w, 3, batch_norm=True), pool(2),
            conv_relu(2 * w, 4 * w, 3, batch_norm=True), conv_relu(4 * w, 4 * w, 3, batch_norm=True), pool(2),
            conv_relu(4 * w, 8 * w, 3, batch_norm=True), conv_relu(8 * w, 8 * w, 3, batch_norm=True), pool(2),
        )
        side = image_size
        for _ in range(4):
            side = conv_output_size(side, 2, 2)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            linear_relu(8 * w * side * side, 256, dropout),
            nn.Linear(256, outputs),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        # Start near the centre of the crop; small (not zero) weights so every layer learns at once.
        nn.init.normal_(self.head[-1].weight, std=1e-3)
        nn.init.zeros_(self.head[-1].bias)

    # At inference the conv stages run on slices of this many images: the first stage's output
    # (32 channels at full size) then stays in the CPU's cache instead of a round trip through
    # memory, measured about 20% faster per batch of 50; training keeps whole batches for backward.
    inference_slice = 10

    def forward(self, x):  # (B, C, S, S) -> (B, outputs)
        if torch.is_grad_enabled() or len(x) <= self.inference_slice:
            return self.head(self.features(x))
        return self.head(torch.cat([self.features(part) for part in x.split(self.inference_slice)]))


def soft_argmax(logits: torch.Tensor, grid: torch.Tensor, spread: bool = False):
    """Heatmap logits (B, K, h, w) -> (B, 2K) unit coordinates: each map's spatial softmax is a
    distribution over cell centres ``grid`` (unit coordinates), and the point is its mean.

    With ``spread``, also (B,): the mean over the K maps of each distribution's entropy, in
    nats. On a face the maps are peaked; on a hand, a paw or a pattern that a detector took for a
    face they spread out, and the pipeline drops such boxes (apps/faces.py)."""
    B, K, h, w = logits.shape
    log_prob = logits.float().flatten(2).log_softmax(-1)
    prob = log_prob.exp().view(B, K, h, w)
    xs = (prob.sum(2) * grid[:w]).sum(-1)  # (B, K): mean over columns
    ys = (prob.sum(3) * grid[:h]).sum(-1)
    points = torch.stack([xs, ys], -1).flatten(1)
    if not spread:
        return points
    return points, -(prob.flatten(2) * log_prob).sum(-1).mean(1)


def read_heatmaps(logits: torch.Tensor, grid: torch.Tensor, spread: bool, with_logits: bool):
    """A heatmap net's output: the points (B, 2K) [and spread (B,)], or, for a loss on the maps
    themselves (``with_logits``), the points and the logits (B, K, h, w)."""
    if with_logits:
        return soft_argmax(logits, grid), logits
    return soft_argmax(logits, grid, spread)


def heatmap_divergence(logits: torch.Tensor, target: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """DSNT's regulariser (Nibali et al., 2018): the Jensen-Shannon divergence (nats, at most
    ln 2) between each heatmap's distribution and a Gaussian of one cell's deviation around the
    true point. ``target``: (B, K, 2) unit coordinates, NaN where unlabelled; returns (B, K),
    0 where unlabelled.

    Trained through the soft-argmax's mean alone, a map may put its mass anywhere that averages
    to the point; this asks for one peak on it."""
    B, K, h, w = logits.shape
    sigma = 2.0 / w  # one cell, in unit coordinates
    known = torch.isfinite(target).all(-1)  # (B, K)
    t = target.nan_to_num()
    gx = torch.exp(-(grid[:w] - t[..., :1]) ** 2 / (2 * sigma ** 2))  # (B, K, w)
    gy = torch.exp(-(grid[:h] - t[..., 1:]) ** 2 / (2 * sigma ** 2))  # (B, K, h)
    q = (gy[..., :, None] * gx[..., None, :]).flatten(2)
    q = q / q.sum(-1, keepdim=True).clamp(min=1e-12)  # a point beyond the crop: its map's edge
    log_p = logits.float().flatten(2).log_softmax(-1)
    p = log_p.exp()
    m = (p + q) / 2
    log_m = m.clamp(min=1e-12).log()
    log_q = q.clamp(min=1e-12).log()
    js = 0.5 * (p * (log_p - log_m)).sum(-1) + 0.5 * (q * (log_q - log_m)).sum(-1)
    return torch.where(known, js, 0.0)


def cell_centres(side: int) -> torch.Tensor:
    """Unit coordinates of the centres of ``side`` cells across [-1, 1]."""
    return (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1


def add_heatmap_head(net: nn.Module, channels: int, points: int, image_size: int) -> None:
    """Give a heatmap net, its layers built, the 1x1 conv to one heatmap per point at S/4 and the
    S/4 cell centres for soft-argmax; He-initialise its convolutions (the bilinear
    deconvolutions keep theirs) and start the heatmaps nearly flat."""
    net.heatmaps = nn.Conv2d(channels, points, 1)
    net.register_buffer("grid", cell_centres(image_size // 4), persistent=False)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    nn.init.normal_(net.heatmaps.weight, std=1e-3)


class HeatmapNet(nn.Module):
    """A fully convolutional keypoint net: the KPNet stages down to S/8, a deconvolution back to
    S/4 joined with the S/4 features, then one heatmap per point. A spatial softmax turns each
    heatmap into a distribution and its mean is the point (soft-argmax), so the output is the
    same 2K unit coordinates as the regression nets and any loss on coordinates trains it.
    """

    def __init__(self, in_channels: int, image_size: int, points: int, width: int = 24):
        super().__init__()
        w = width
        self.down4 = nn.Sequential(  # (B, C, S, S) -> (B, 4w, S/4, S/4)
            conv_relu(in_channels, w, 3, batch_norm=True), pool(2),
            conv_relu(w, 2 * w, 3, batch_norm=True), pool(2),
            conv_relu(2 * w, 4 * w, 3, batch_norm=True),
        )
        self.down8 = nn.Sequential(  # -> (B, 8w, S/8, S/8)
            pool(2), conv_relu(4 * w, 8 * w, 3, batch_norm=True), conv_relu(8 * w, 8 * w, 3, batch_norm=True),
            conv_relu(8 * w, 8 * w, 3, batch_norm=True),
        )
        self.up = nn.Sequential(deconv(8 * w, 4 * w, 2, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True))
        self.fuse = conv_relu(4 * w, 4 * w, 3, batch_norm=True)
        add_heatmap_head(self, 4 * w, points, image_size)

    def forward(self, x, spread: bool = False, logits: bool = False):
        skip = self.down4(x)                       # (B, 4w, S/4, S/4)
        y = self.fuse(self.up(self.down8(skip)) + skip)
        return read_heatmaps(self.heatmaps(y), self.grid, spread, logits)


class HourglassNet(nn.Module):
    """``kpheat`` with a deeper encoder: down to S/16, where a 3x3 cell sees the whole face (the
    jaw line needs that context on a blurred frame), then two bilinear-initialised
    deconvolutions back to S/4, each joined with the encoder's features of that resolution
    (an hourglass), then one heatmap per point read off by soft-argmax. ``depth`` adds that many
    residual blocks after each join (S/8 and S/4), zero-initialised: a shallower net's weights
    (``--init``) load unchanged and the deeper net starts from its function."""

    def __init__(self, in_channels: int, image_size: int, points: int, width: int = 24, depth: int = 0):
        super().__init__()
        w = width
        self.down4 = nn.Sequential(  # (B, C, S, S) -> (B, 4w, S/4, S/4)
            conv_relu(in_channels, w, 3, batch_norm=True), pool(2),
            conv_relu(w, 2 * w, 3, batch_norm=True), pool(2),
            conv_relu(2 * w, 4 * w, 3, batch_norm=True), conv_relu(4 * w, 4 * w, 3, batch_norm=True),
        )
        self.down8 = nn.Sequential(  # -> (B, 8w, S/8, S/8)
            pool(2), conv_relu(4 * w, 8 * w, 3, batch_norm=True), conv_relu(8 * w, 8 * w, 3, batch_norm=True),
        )
        self.down16 = nn.Sequential(  # -> (B, 8w, S/16, S/16)
            pool(2), conv_relu(8 * w, 8 * w, 3, batch_norm=True), conv_relu(8 * w, 8 * w, 3, batch_norm=True),
            conv_relu(8 * w, 8 * w, 3, batch_norm=True),
        )
        self.up8 = deconv(8 * w, 8 * w, 2, bilinear=True)
        self.fuse8 = conv_relu(8 * w, 8 * w, 3, batch_norm=True)
        self.up4 = nn.Sequential(conv_relu(8 * w, 4 * w, 1, batch_norm=True), deconv(4 * w, 4 * w, 2, bilinear=True))
        self.fuse4 = conv_relu(4 * w, 4 * w, 3, batch_norm=True)
        # empty at depth 0, so the first hourglasses' weights load as they were
        self.more8 = nn.Sequential(*[Residual(8 * w) for _ in range(depth)])
        self.more4 = nn.Sequential(*[Residual(4 * w) for _ in range(depth)])
        add_heatmap_head(self, 4 * w, points, image_size)

    def forward(self, x, spread: bool = False, logits: bool = False):
        return read_heatmaps(self.trunk(x), self.grid, spread, logits)

    def trunk(self, x):
        """The convolutions alone: heatmap logits (B, K, S/4, S/4), as the int8 runtime traces them."""
        s4 = self.down4(x)                                  # (B, 4w, S/4, S/4)
        s8 = self.down8(s4)                                 # (B, 8w, S/8, S/8)
        y8 = self.more8(self.fuse8(self.up8(self.down16(s8)) + s8))  # (B, 8w, S/8, S/8)
        y4 = self.more4(self.fuse4(self.up4(y8) + s4))               # (B, 4w, S/4, S/4)
        return self.heatmaps(y4)


@dataclass
class KeypointNetConfig:
    arch: str = "kpheat"      # basic_cnn | kpnet | kpheat | hourglass
    layout: str = "kaggle15"  # which points, in which order (data/layouts.py)
    in_channels: int = 1      # 1 grey, 3 RGB
    image_size: int = 96      # side of the square face crop
    width: int = 24           # kpnet: channels of the first stage
    dropout: float = 0.3      # kpnet: dropout in the head
    depth: int = 0            # hourglass: residual blocks added after each join (0-4)
    loss: str = "l1"          # l1 (measured best) | mse (the tutorial's L2) | smooth_l1, on unit coordinates;
                              # l1_nme: l1 with each face weighted as NME weighs it (68 points only)
    heatmap_loss: float = 0.0  # heatmap nets: weight of heatmap_divergence, added to the loss (0: off)
    margin: float = 0.15      # 68-point crops: extra around the points' extent, a fraction of its side
                              # (checkpoints from before it was recorded load with this value)


class KeypointNet(nn.Module):
    """A keypoint model with its loss (MSE masked to labelled coordinates) and metrics (RMSE in
    source pixels; NME for layouts with eye corners and complete labels)."""

    task = "keypoints"

    @property
    def primary_metric(self) -> tuple[str, str]:
        """The validation figure that picks the best checkpoint: NME for 68 points (faces of
        every size weigh alike, so photos with large faces do not drown the small frames),
        RMSE in source pixels otherwise (as Kaggle scores)."""
        return ("nme", "min") if self.layout.name == "ibug68" else ("rmse", "min")

    def __init__(self, cfg: KeypointNetConfig):
        super().__init__()
        self.cfg = cfg
        self.layout = get_layout(cfg.layout)
        outputs = 2 * self.layout.num_points
        if cfg.arch == "basic_cnn":
            self.model = BasicCNN(cfg.in_channels, cfg.image_size, outputs)
        elif cfg.arch == "kpnet":
            self.model = KPNet(cfg.in_channels, cfg.image_size, outputs, cfg.width, cfg.dropout)
        elif cfg.arch == "kpheat":
            self.model = HeatmapNet(cfg.in_channels, cfg.image_size, self.layout.num_points, cfg.width)
        elif cfg.arch == "hourglass":
            self.model = HourglassNet(cfg.in_channels, cfg.image_size, self.layout.num_points, cfg.width, cfg.depth)
        else:
            raise ValueError(f"unknown keypoint net {cfg.arch!r} (use basic_cnn, kpnet, kpheat or hourglass)")
        if cfg.loss not in ("mse", "l1", "smooth_l1", "l1_nme"):
            raise ValueError(f"unknown loss {cfg.loss!r} (use mse, l1, smooth_l1 or l1_nme)")
        if cfg.loss == "l1_nme" and self.layout.name != "ibug68":
            raise ValueError(f"loss l1_nme weighs faces by their eye corners' distance: 68-point layout only, "
                             f"not {cfg.layout}")
        if cfg.heatmap_loss and not self.has_spread or not 0 <= cfg.heatmap_loss < float("inf"):
            raise ValueError(f"heatmap loss {cfg.heatmap_loss:g}: a weight >= 0, and only for the heatmap nets "
                             f"(kpheat, hourglass), not {cfg.arch}")
        if cfg.depth and cfg.arch != "hourglass" or not 0 <= cfg.depth <= 4:
            raise ValueError(f"keypoint net depth {cfg.depth}: 0 to 4, and only for the hourglass")

    def forward(self, x):
        if self.training and self.cfg.heatmap_loss:
            return self.model(x, logits=True)  # ((B, 2K), (B, K, h, w)): the loss needs the maps
        return self.model(x)  # (B, 2K) unit coordinates

    def loss(self, out, points: torch.Tensor) -> torch.Tensor:
        """Mean error over labelled coordinates only (NaN marks a missing label): squared by
        default, as the tutorial; absolute, or Huber with a 1-pixel knee, by config. With
        ``heatmap_loss``, plus that weight times the heatmaps' mean ``heatmap_divergence``."""
        if isinstance(out, tuple):
            out, logits = out
            target = pixels_to_unit(points, self.cfg.image_size)
            js = heatmap_divergence(logits, target, self.model.grid)
            known = torch.isfinite(target).all(-1)
            extra = self.cfg.heatmap_loss * js.sum() / known.sum().clamp(min=1)
            return self.coordinate_loss(out, points) + extra
        return self.coordinate_loss(out, points)

    def coordinate_loss(self, out: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        target = pixels_to_unit(points, self.cfg.image_size).flatten(1)  # (B, 2K)
        mask = ~torch.isnan(target)
        diff = torch.where(mask, out.float() - target.nan_to_num(), 0.0)
        if self.cfg.loss == "mse":
            per = diff.pow(2)
        elif self.cfg.loss == "l1":
            per = diff.abs()
        elif self.cfg.loss == "l1_nme":
            per = diff.abs() * nme_weights(target.view(len(target), -1, 2), self.layout.eye_corners)[:, None]
        else:
            per = nn.functional.smooth_l1_loss(diff, torch.zeros_like(diff), reduction="none", beta=2 / self.cfg.image_size)
        return per.sum() / mask.sum().clamp(min=1)

    def to_pixels(self, out: torch.Tensor) -> torch.Tensor:
        """(B, 2K) outputs -> (B, K, 2) points in crop pixels."""
        return unit_to_pixels(out.float().view(out.shape[0], -1, 2), self.cfg.image_size)

    def predict(self, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
        """Points in crop pixels (B, K, 2); with ``flip`` the mirrored face is predicted too and
        the two answers averaged (test-time augmentation)."""
        if not flip:
            return self.to_pixels(self(x))
        # one pass over both: a batch twice the size runs faster than two passes
        points, mirrored = self.to_pixels(self(torch.cat([x, x.flip(-1)]))).chunk(2)
        return self.average_mirrored(points, mirrored)

    @property
    def has_spread(self) -> bool:
        """Whether the net reads its points off heatmaps, and so can say how spread they are."""
        return self.cfg.arch in ("kpheat", "hourglass")

    def predict_spread(self, x: torch.Tensor, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``predict``'s points (B, K, 2) and the heatmaps' mean entropy (B,) (``soft_argmax``;
        with ``flip``, the mean of the face's and its mirror image's), for heatmap nets."""
        if not self.has_spread:
            raise ValueError(f"a {self.cfg.arch} net has no heatmaps to measure the spread of")
        if not flip:
            out, spread = self.model(x, spread=True)
            return self.to_pixels(out), spread
        out, spread = self.model(torch.cat([x, x.flip(-1)]), spread=True)
        points, mirrored = self.to_pixels(out).chunk(2)
        return self.average_mirrored(points, mirrored), spread.view(2, -1).mean(0)

    def average_mirrored(self, points: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
        """The mean of the points of faces and those of their mirror images, mapped back."""
        mirrored = mirrored[:, self.layout.flip_permutation()]
        mirrored[..., 0] = self.cfg.image_size - 1 - mirrored[..., 0]
        return (points + mirrored) / 2

    def picture(self, data, points: torch.Tensor):
        """Faces with predicted (red) and true (green) points, an (H, W, 3) uint8 grid."""
        return face_grid(data.images, points, data.points)

    def metrics(self, points: torch.Tensor, data) -> dict[str, float]:
        """Errors of predicted crop-pixel points (N, K, 2) against a KeypointDataset, in the
        source image's pixels."""
        scale = (data.boxes[:, 2] - data.boxes[:, 0]) / data.size  # (N,) source px per crop px
        err = (points - data.points) * scale[:, None, None]      # (N, K, 2)
        labelled = ~torch.isnan(err)
        out = {"rmse": float(err[labelled].pow(2).mean().sqrt()), "count": len(data)}
        if self.layout.name == "ibug68":
            out.update(nme_summary(per_face_nme(points, data.points)))
        sources = getattr(data, "sources", None)
        if sources is not None and int(sources.max()) > 0:  # each joined source on its own
            for k in range(int(sources.max()) + 1):
                mine = sources == k
                part = err[mine]
                out[f"rmse_source{k}"] = float(part[~torch.isnan(part)].pow(2).mean().sqrt())
                if self.layout.name == "ibug68":
                    out[f"nme_source{k}"] = nme(points[mine], data.points[mine])
        return out


def nme_weights(target: torch.Tensor, eyes=(36, 45), floor: float = 0.2) -> torch.Tensor:
    """(B, K, 2) unit coordinates -> (B,) weights that make an error count as NME counts it: in
    proportion to 1 / the outer eye corners' distance, scaled to average 1 over the faces that
    have both corners (the others weigh 1). A face whose corners are closer than ``floor`` (in
    unit coordinates; a full profile) weighs as if they were that far apart."""
    distance = (target[:, eyes[0]] - target[:, eyes[1]]).norm(dim=-1)  # NaN where a corner is missing
    known = torch.isfinite(distance)
    inverse = 1 / distance.clamp(min=floor)
    if not known.any():
        return torch.ones(len(target), device=target.device)
    return torch.where(known, inverse / inverse[known].mean(), 1.0)


def per_face_nme(pred: torch.Tensor, true: torch.Tensor, eyes=(36, 45)) -> torch.Tensor:
    """Each completely labelled face's mean point error over its outer-eye-corner distance."""
    complete = ~torch.isnan(true).flatten(1).any(1)
    pred, true = pred[complete], true[complete]
    return (pred - true).norm(dim=-1).mean(1) / (true[:, eyes[0]] - true[:, eyes[1]]).norm(dim=-1)


def nme_summary(errors: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """The 300-W papers' figures of per-face NMEs: the mean (``nme``), the share of faces over 8%
    and over 10% (``failure8``, ``failure10``) and the area under the cumulative error curve up to
    8%, as a fraction of its box (``auc8``; 1 would be every face exact)."""
    if len(errors) == 0:  # nothing to score (None, so JSON says null)
        return {f"{prefix}{k}": None for k in ("nme", "failure8", "failure10", "auc8")}
    grid = torch.linspace(0, 0.08, 801)
    curve = (errors[None, :] <= grid[:, None]).float().mean(1)  # share of faces within each error
    return {f"{prefix}nme": float(errors.mean()), f"{prefix}failure8": float((errors > 0.08).float().mean()),
            f"{prefix}failure10": float((errors > 0.10).float().mean()),
            f"{prefix}auc8": float(torch.trapezoid(curve, grid) / 0.08)}


def nme(pred: torch.Tensor, true: torch.Tensor, eyes=(36, 45)) -> float:
    """Mean point-to-point error over the outer-eye-corner distance (300-W's normalisation),
    averaged over faces with all points labelled."""
    complete = ~torch.isnan(true).flatten(1).any(1)
    pred, true = pred[complete], true[complete]
    if len(true) == 0:
        return float("nan")
    per_face = (pred - true).norm(dim=-1).mean(1) / (true[:, eyes[0]] - true[:, eyes[1]]).norm(dim=-1)
    return float(per_face.mean())

