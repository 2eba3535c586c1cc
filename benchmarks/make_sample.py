"""Makes ``src/cnnvision/samples/faces.jpg``, the photo ``cnnvision predict --sample`` runs on: drawn
faces (the project's own, free of any licence) of several sizes on clutter, 640x480.

    python benchmarks/make_sample.py
"""
from pathlib import Path

import numpy as np
from PIL import Image

from cnnvision.data.scenes import clutter
from cnnvision.data.synthetic import _face_points, draw_face

OUT = Path(__file__).resolve().parents[1] / "src" / "cnnvision" / "samples" / "faces.jpg"


def main() -> None:
    rng = np.random.default_rng(13)  # a seed whose three faces the shipped pipeline finds
    canvas = clutter(rng, 640).crop((0, 0, 640, 480))
    for side, (x, y) in ((200, (40, 140)), (150, (300, 60)), (110, (480, 250))):
        face = draw_face(_face_points(rng, 96), 96, rng, rng).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
        canvas.paste(face, (x, y))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(OUT, quality=92)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
