"""What the landmark check and the lower detector threshold cost: the photo pipeline's
photos/sec on the same 640x480 one-face photos as compare_speed.py, at 0.9 without the check
(the pipeline before it had one), at THRESHOLD without it, and as shipped; the setups take
turns, round by round, and each figure is the median of the rounds.

    python benchmarks/check_cost.py [--rounds 3]
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from cnnvision.apps.faces import THRESHOLD, FacePipeline
from compare_speed import one_face_photos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        photos = [Image.open(p).convert("RGB") for p in one_face_photos(Path(folder))]
    setups = {"0.9, no check": FacePipeline.pretrained(threshold=0.9, max_spread=None),
              f"{THRESHOLD}, no check": FacePipeline.pretrained(max_spread=None),
              f"{THRESHOLD}, with the check (shipped)": FacePipeline.pretrained()}
    speeds = {name: [] for name in setups}
    found = {}
    for pipeline in setups.values():
        pipeline.predict(photos[:4])  # warm-up
    for _ in range(a.rounds):
        for name, pipeline in setups.items():
            start = time.perf_counter()
            found[name] = sum(len(pipeline.predict([im])[0]) for im in photos)
            speeds[name].append(len(photos) / (time.perf_counter() - start))
    for name, runs in speeds.items():
        print(f"{name}: {statistics.median(runs):.1f} photos/sec (rounds {', '.join(f'{r:.1f}' for r in runs)}); "
              f"{found[name]} faces on {len(photos)} photos")


if __name__ == "__main__":
    main()
