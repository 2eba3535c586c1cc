"""Image classification: softmax regression, the tutorial's multilayer perceptron, LeNet-5, and
the Net that gives them a cross-entropy loss and accuracy metrics.

Outputs are one logit per class; ``predict`` turns them into probabilities.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from cnnvision.layers import conv_output_size, conv_relu, linear_relu, pool
from cnnvision.viz import GREEN, RED


def label_grid(images: torch.Tensor, pred: torch.Tensor, true: torch.Tensor, columns: int = 8,
               zoom: int = 3) -> np.ndarray:
    """uint8 (N, C, S, S) images, each with its predicted class written on it, red where it differs
    from the true class (which is then written too) and green where it agrees: (H, W, 3) uint8."""
    font = ImageFont.load_default(size=4 * zoom + 2)
    tiles = []
    for image, p, t in zip(images, pred.tolist(), true.tolist()):
        arr = image.permute(1, 2, 0).numpy()
        im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).convert("RGB")
        im = im.resize((im.width * zoom, im.height * zoom), Image.Resampling.NEAREST)
        d = ImageDraw.Draw(im)
        d.text((2, 0), str(p), fill=GREEN if p == t else RED, font=font)
        if p != t:
            d.text((im.width - 2, im.height), f"true {t}", fill=(200, 200, 200), font=font, anchor="rd")
        d.rectangle([0, 0, im.width - 1, im.height - 1], outline=(60, 60, 60))
        tiles.append(np.asarray(im))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r:r + columns], 1) for r in range(0, len(tiles), columns)]
    return np.concatenate(rows, 0)


def softmax_regression(in_channels: int, image_size: int, classes: int) -> nn.Sequential:
    """One linear layer on the raw pixels: multinomial logistic regression."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, classes))


def mlp(in_channels: int, image_size: int, classes: int, hidden: tuple[int, ...], dropout: float) -> nn.Sequential:
    """Fully connected layers with ReLU: the tutorial's 784 -> 128 -> 32 -> 10 by default."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * image_size * image_size
    for h in hidden:
        layers.append(linear_relu(width, h, dropout))
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


class LeNet5(nn.Module):
    """LeCun et al. (1998)'s layout: conv 5x5x6, pool, conv 5x5x16, pool, fc 120, fc 84, then the
    classes; with ReLU and max pooling for the paper's scaled tanh and trainable subsampling, and
    optional batch norm after each convolution.

    The paper pads the 28x28 digits to 32x32 and convolves without padding; 'same' padding on the
    first convolution is the same thing, so the second stage sees 14x14 and the head 16x5x5.
    """

    def __init__(self, in_channels: int, image_size: int, classes: int, batch_norm: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            conv_relu(in_channels, 6, 5, batch_norm=batch_norm), pool(2),   # (B, 6, 14, 14) for 28x28
            conv_relu(6, 16, 5, padding=0, batch_norm=batch_norm), pool(2),  # (B, 16, 5, 5)
        )
        side = conv_output_size(conv_output_size(conv_output_size(image_size, 2, 2), 5), 2, 2)
        self.head = nn.Sequential(
            nn.Flatten(),                                   # (B, 16 * side * side)
            linear_relu(16 * side * side, 120, dropout),
            linear_relu(120, 84, dropout),
            nn.Linear(84, classes),
        )

    def forward(self, x):
        return self.head(self.features(x))  # (B, C, S, S) -> (B, classes)


@dataclass
class ClassifierConfig:
    arch: str = "lenet5"            # softmax | mlp | lenet5
    in_channels: int = 1            # 1 grey, 3 RGB
    image_size: int = 28            # side of the square input
    num_classes: int = 10           # outputs
    hidden: tuple[int, ...] = (128, 32)  # mlp: widths of the hidden layers
    batch_norm: bool = True         # lenet5: batch norm after each convolution
    dropout: float = 0.0            # mlp and lenet5: dropout after each hidden fully connected layer
    label_smoothing: float = 0.0    # cross-entropy's target smoothing

    def __post_init__(self):
        self.hidden = tuple(self.hidden)  # a list when read back from JSON


class ClassifierNet(nn.Module):
    """A classifier with its loss (cross-entropy) and metrics (accuracy, count, confusion matrix
    with true classes as rows and predicted classes as columns)."""

    task = "classification"
    primary_metric = ("accuracy", "max")

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.arch == "softmax":
            self.model = softmax_regression(cfg.in_channels, cfg.image_size, cfg.num_classes)
        elif cfg.arch == "mlp":
            self.model = mlp(cfg.in_channels, cfg.image_size, cfg.num_classes, cfg.hidden, cfg.dropout)
        elif cfg.arch == "lenet5":
            self.model = LeNet5(cfg.in_channels, cfg.image_size, cfg.num_classes, cfg.batch_norm, cfg.dropout)
        else:
            raise ValueError(f"unknown classifier {cfg.arch!r} (use softmax, mlp or lenet5)")

    def forward(self, x):
        return self.model(x)  # (B, classes) logits

    def loss(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.float(), labels, label_smoothing=self.cfg.label_smoothing)

    def predict(self, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """Class probabilities (B, classes). ``flip`` is accepted, as the Solver passes it, and
        ignored: a mirrored digit is not the same digit."""
        return self(x).float().softmax(1)

    def picture(self, data, probs: torch.Tensor) -> np.ndarray:
        """The digits with predicted classes, misclassified ones first: an (H, W, 3) uint8 grid."""
        pred = probs.argmax(1)
        order = torch.argsort((pred == data.labels).int(), stable=True)
        return label_grid(data.images[order], pred[order], data.labels[order])

    def metrics(self, probs: torch.Tensor, data) -> dict:
        """Accuracy of predicted probabilities (N, classes) against a ClassificationDataset."""
        k = self.cfg.num_classes
        pred = probs.argmax(1)
        confusion = torch.bincount(data.labels * k + pred, minlength=k * k).view(k, k)  # (true, predicted)
        return {"accuracy": float((pred == data.labels).float().mean()), "count": len(data),
                "confusion": confusion.tolist()}
