"""What each speed change of the photo pipeline bought, in one run: the pipeline as stop 18
shipped it (a plain detector, a second landmark pass for every face) against the same with the
second pass only where the first framing moves (``REFINE_BELOW``), and against the pipeline as
shipped now (also the strided detector at its own threshold). Same 640x480 one-face photos as
compare_speed.py; torch ``auto`` and fp32 limited to AVX2 (a CPU without BF16), each setup in its
own process (timed as ``cnnvision benchmark --pipeline`` times), taking turns round by round;
medians of the rounds.

    git show 97a6efb:src/cnnvision/pretrained/face-detector.pt > /tmp/stop18-detector.pt
    python benchmarks/speed_changes.py --before /tmp/stop18-detector.pt [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from compare_speed import AVX2, one_face_photos


def one(detector: str | None, threshold: float | None, refine_below: float | None, precision: str,
        photos: list[str]) -> dict:
    """Photos/sec of one pipeline setup over ``photos``, timed as ``cnnvision benchmark --pipeline``
    times the shipped one (batches of 16 photos, best of 3 passes after a warm-up)."""
    from cnnvision import checkpoint
    from cnnvision.apps.faces import DETECTOR, LANDMARKS, FacePipeline
    from cnnvision.benchmark import benchmark_pipeline
    options = {} if refine_below is None else {"refine_below": refine_below}
    pipeline = FacePipeline(checkpoint.load_net(detector) if detector else checkpoint.load_net(pretrained=DETECTOR),
                            checkpoint.load_net(pretrained=LANDMARKS), threshold=threshold, precision=precision,
                            runtime="torch",  # the float nets, as these figures were measured
                            **options)
    r = benchmark_pipeline(photos, pipeline=pipeline)
    return {"photos_per_sec": r["photos_per_sec"], "faces": r["faces_found"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="stop 18's face-detector.pt (see above)")
    ap.add_argument("--before-threshold", type=float, default=0.75, help="its pipeline threshold")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one setup, as JSON
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(**json.loads(a.one))))
        return
    setups = {"stop 18: plain detector, every face refined": (a.before, a.before_threshold, 2.0),
              "plain detector, second pass where it moves": (a.before, a.before_threshold, None),
              "shipped now: strided detector, second pass where it moves": (None, None, None)}
    kinds = {"auto": ("auto", {}), "fp32, AVX2 only": ("fp32", AVX2)}
    rates: dict[str, list[float]] = {}
    faces: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        photos = [str(p) for p in one_face_photos(Path(folder))]
        for _ in range(a.rounds):
            for kind, (precision, env) in kinds.items():
                for name, (detector, threshold, refine_below) in setups.items():
                    job = {"detector": detector, "threshold": threshold, "refine_below": refine_below,
                           "precision": precision, "photos": photos}
                    done = subprocess.run([sys.executable, __file__, "--before", a.before, "--one", json.dumps(job)],
                                          capture_output=True, text=True, env={**os.environ, **env}, check=True)
                    r = json.loads(done.stdout.strip().splitlines()[-1])
                    rates.setdefault(f"{kind} | {name}", []).append(r["photos_per_sec"])
                    faces[f"{kind} | {name}"] = r["faces"]
    for key, runs in rates.items():
        print(f"{key}: {statistics.median(runs):.1f} photos/sec (rounds {', '.join(f'{r:.1f}' for r in runs)}); "
              f"{faces[key]} faces on {len(photos)} photos")


if __name__ == "__main__":
    main()
