"""``cnnvision predict`` on workloads, each run as a user would (a separate process):

1. a folder of N photos (drawn faces, 320x240) of which 1% are corrupt: results written, one
   error line per bad file, exit status 1;
2. peak memory (max RSS) on a folder of ``--few`` photos against one of ``--many``;
3. a 640x480 video of ``--seconds`` seconds at 25 fps: frames per second through ``predict``
   and whether the annotated video it writes decodes, frame for frame.

    python benchmarks/predict_workload.py [--photos 1000] [--few 100] [--many 10000] [--seconds 60]
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnnvision.benchmark import demo_photos


def make_folder(folder: Path, count: int, corrupt: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    base = demo_photos(20, 320, 240, seed=7)
    for i in range(count):
        path = folder / f"photo_{i:05d}.jpg"
        if i < corrupt:
            path.write_bytes(b"\xff\xd8\xff\xe0 broken " + bytes(i))
        else:
            base[i % len(base)].save(path, quality=85)


def run(args: list[str]) -> tuple[int, str, str, float, float]:
    """Exit status, stdout, stderr, wall seconds and the child's peak memory in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cnnvision", *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return done.returncode, done.stdout, done.stderr, wall, max(peak, before) / 1024


def peak_of(folder: Path, out: Path) -> float:
    """Peak memory of one predict over a folder, measured in a fresh interpreter."""
    code = ("import resource, subprocess, sys; subprocess.run([sys.executable, '-m', 'cnnvision', 'predict', "
            f"{str(folder)!r}, '--no-overlay', '--jsonl', {str(out)!r}]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--few", type=int, default=100)
    ap.add_argument("--many", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--json")
    a = ap.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bad = a.photos // 100
        make_folder(tmp / "mixed", a.photos, corrupt=bad)
        rc, out, err, wall, _ = run(["predict", str(tmp / "mixed"), "--no-overlay", "--jsonl", str(tmp / "mixed.jsonl")])
        lines = (tmp / "mixed.jsonl").read_text().splitlines()
        result["folder"] = {"photos": a.photos, "corrupt": bad, "results_written": len(lines),
                            "error_lines": sum("skipped" in line for line in err.splitlines()), "exit_status": rc,
                            "photos_per_sec": round(len(lines) / wall, 1), "summary": out.strip()}

        make_folder(tmp / "few", a.few)
        make_folder(tmp / "many", a.many)
        few, many = peak_of(tmp / "few", tmp / "few.jsonl"), peak_of(tmp / "many", tmp / "many.jsonl")
        result["memory"] = {"photos_few": a.few, "peak_mb_few": round(few), "photos_many": a.many,
                            "peak_mb_many": round(many), "ratio": round(many / few, 3)}

        import av
        video = tmp / "clip.mp4"
        frames = int(a.seconds * 25)
        photos = demo_photos(25, 640, 480, seed=3)
        with av.open(str(video), "w") as container:
            stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
            stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
            for i in range(frames):
                for packet in stream.encode(av.VideoFrame.from_image(photos[(i // 5) % len(photos)])):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        rc, out, err, wall, _ = run(["predict", str(video), "--jsonl", str(tmp / "video.jsonl"), "--out", str(tmp / "ov")])
        written = tmp / "ov" / "clip_faces.mp4"
        with av.open(str(written)) as container:
            decoded = sum(1 for _ in container.decode(video=0))
        result["video"] = {"seconds": a.seconds, "frames": frames, "exit_status": rc,
                           "frames_per_sec": round(frames / wall, 1),
                           "json_lines": len((tmp / "video.jsonl").read_text().splitlines()),
                           "annotated_frames_decoded": decoded}
    print(json.dumps(result, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
