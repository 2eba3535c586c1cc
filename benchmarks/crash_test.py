"""Crash safety under ``kill -9``: random kills of training, predict, export and submit, each
followed by checks; two runs started into one folder at once; a folder of the user's own files.

Training: a small keypoint run is killed at random moments (startup, steps, evaluation and the
checkpoint writes alike) and started again (``--resume`` once it has a last.pt) until it finishes,
then started afresh in a new folder while kills remain. After every kill: each checkpoint loads,
no file that existed before is gone, metrics.csv has each epoch once and is never ahead of
last.pt; after every later start that got past claiming the folder, no temporary of a killed
process is left; every finished run's final weights equal an uninterrupted run's, bit for bit.
predict / export / submit: killed at random, then every output present must open whole
(PNG, JSON, ONNX, CSV) and, after the next run, no temporary may remain.

    python benchmarks/crash_test.py [--kills 50] [--seed 0] [--json FILE]
"""
import argparse
import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cnnvision.runs import lock_held

TRAIN = ["train", "--synthetic-count", "160", "--image-size", "48", "--width", "8", "--net", "kpnet",
         "--epochs", "10", "--batch-size", "16", "--log-every", "100"]
TEMPORARY = re.compile(r"^\..+\.(\d+)-[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9]+)?$")


def cli(args: list[str], out_path: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = open(out_path, "w") if out_path else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "cnnvision", *args], stdout=out, stderr=subprocess.STDOUT, env=env)


def run_to_end(args: list[str]) -> int:
    return cli(args).wait()


def kill_at_random(args: list[str], rng: random.Random, lo: float, hi: float, log: Path) -> tuple[bool, int, int]:
    """Start, then kill -9 after a random delay: (killed, pid, exit status). Not killed when it
    ended first."""
    p = cli(args, log)
    delay = rng.uniform(lo, hi)
    try:
        return False, p.pid, p.wait(delay)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        return True, p.pid, p.wait()


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if TEMPORARY.match(p.name)] if folder.is_dir() else []


def weights(path: Path) -> dict:
    import torch
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


def check_run_folder(folder: Path, before: set[str], problems: list[str], tag: str) -> set[str]:
    """Every checkpoint loads, nothing that was there is gone, metrics.csv has each epoch once and
    is not ahead of last.pt. Returns the files present now."""
    from cnnvision import checkpoint
    from cnnvision.errors import InputError
    present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    for name in sorted(before - present):
        if name in ("last.pt", "best.pt", "metrics.csv", "config.json"):
            problems.append(f"{tag}: {name} lost")
    last_epoch = None
    for name in ("last.pt", "best.pt"):
        if name in present:
            try:
                state = checkpoint.load(folder / name)
                if name == "last.pt":
                    last_epoch = state["epoch"] + (1 if state.get("batch") else 0)
            except InputError as e:
                problems.append(f"{tag}: {name} corrupt ({e})")
    if "metrics.csv" in present:
        with open(folder / "metrics.csv", newline="") as f:
            epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
        if len(epochs) != len(set(epochs)):
            problems.append(f"{tag}: metrics.csv has an epoch twice ({epochs})")
        if last_epoch is not None and epochs and max(epochs) > last_epoch:
            problems.append(f"{tag}: metrics.csv ({max(epochs)}) ahead of last.pt ({last_epoch})")
    for name in ("config.json", "metrics.json"):
        if name in present:
            try:
                json.loads((folder / name).read_text())
            except ValueError:
                problems.append(f"{tag}: {name} is not whole JSON")
    if "predictions.png" in present:
        check_png(folder / "predictions.png", problems, tag)
    return present


def check_png(path: Path, problems: list[str], tag: str) -> None:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # any decoder error means a broken file
        problems.append(f"{tag}: {path.name} broken ({e.__class__.__name__})")


def passed_claim(log: Path) -> bool:
    text = log.read_text() if log.exists() else ""
    return "data:" in text or "resumed from" in text


def crash_training(root: Path, kills: int, rng: random.Random, problems: list[str]) -> dict:
    reference = root / "reference"
    t0 = time.time()
    assert run_to_end([*TRAIN, "--out", str(reference)]) == 0, "the uninterrupted run failed"
    duration = time.time() - t0
    done, finished, compared, k, left = 0, 0, 0, 0, 0
    while done < kills:
        folder = root / f"crash{k}"
        k += 1
        present: set[str] = set()
        dead: set[int] = set()  # processes killed in this folder
        while True:
            args = [*TRAIN, "--out", str(folder)] + (["--resume"] if (folder / "last.pt").exists() else [])
            log = root / "last.log"
            started = time.time()
            if done >= kills:
                killed, pid, code = False, None, cli(args, log).wait()
            else:
                killed, pid, code = kill_at_random(args, rng, 0.1 * duration, duration, log)
            if not killed and code == 0 and "--resume" not in args:  # a whole run: kill sooner from now on
                duration = min(duration, time.time() - started)
            tag = f"train kill {done + 1}" if killed else "train finish"
            if passed_claim(log):  # it swept: no killed process's temporary may be left
                stray = [p.name for p in temporaries(folder) if int(TEMPORARY.match(p.name).group(1)) in dead]
                if stray:
                    problems.append(f"{tag}: temporaries of killed runs left: {stray}")
            present = check_run_folder(folder, present, problems, tag)
            if killed:
                done += 1
                dead.add(pid)
                left += len(temporaries(folder))
                continue
            if code != 0:
                problems.append(f"{tag}: exit status {code}: {log.read_text()[-300:]}")
                break
            finished += 1
            if temporaries(folder):
                problems.append(f"{tag}: temporaries left after a finished run: {temporaries(folder)}")
            if lock_held(folder):
                problems.append(f"{tag}: the lock was not released")
            compared += 1
            if not same_weights(folder / "last.pt", reference / "last.pt"):
                problems.append(f"{tag}: final weights differ from the uninterrupted run's ({folder})")
            break
    return {"kills": done, "runs_finished": finished, "final_weights_compared": compared,
            "temporaries_left_by_kills": left, "seconds_per_run": round(duration, 1)}


def crash_outputs(root: Path, name: str, args: list[str], outputs: list[Path], folder: Path, kills: int,
                  rng: random.Random, problems: list[str]) -> dict:
    """Run a command once to time it, then kill it at random moments of such a run ``kills``
    times; after each, its outputs must be whole; after a last full run, no temporary may remain."""
    log = root / f"{name}.log"
    t0 = time.time()
    if cli(args, log).wait() != 0:
        problems.append(f"{name}: exit status non-zero: {log.read_text()[-300:]}")
        return {"kills": 0}
    duration = time.time() - t0
    done = attempts = left = 0
    while done < kills and attempts < 3 * kills:
        attempts += 1
        started = time.time()
        killed, _, code = kill_at_random(args, rng, 0.1 * duration, duration, log)
        left += len(temporaries(folder)) if killed else 0
        if not killed and code == 0:  # it ended first: kill sooner from now on
            duration = min(duration, time.time() - started)
        if not killed and code != 0:
            problems.append(f"{name}: exit status {code}: {log.read_text()[-300:]}")
        done += killed
        for path in outputs:
            check_output(path, problems, f"{name} kill {done}")
        for png in folder.glob("*.png"):
            check_png(png, problems, f"{name} kill {done}")
    code = cli(args, log).wait()
    if code != 0:
        problems.append(f"{name} final run: exit status {code}: {log.read_text()[-300:]}")
    if temporaries(folder):
        problems.append(f"{name}: temporaries left after the next run: {[p.name for p in temporaries(folder)]}")
    for path in outputs:
        check_output(path, problems, f"{name} final run")
    return {"kills": done, "temporaries_left_by_kills": left, "seconds_per_run": round(duration, 1)}


def check_output(path: Path, problems: list[str], tag: str) -> None:
    if not path.exists():
        return
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".onnx":
            import onnx
            onnx.checker.check_model(onnx.load(str(path)))
        elif path.suffix == ".csv":
            rows = list(csv.reader(open(path, newline="")))
            if rows[0] != ["RowId", "Location"] or len(rows) < 2:
                raise ValueError("not a whole submission")
    except Exception as e:  # any failure to read it whole is what this test looks for
        problems.append(f"{tag}: {path.name} not whole ({e.__class__.__name__}: {str(e)[:80]})")


def kaggle_test_files(folder: Path, count: int) -> tuple[Path, Path]:
    from cnnvision.data.kaggle import KEYPOINT_COLUMNS
    rng = np.random.default_rng(0)
    test, lookup = folder / "test.csv", folder / "IdLookupTable.csv"
    with open(test, "w") as f:
        f.write("ImageId,Image\n")
        for i in range(count):
            f.write(f"{i + 1}," + " ".join(map(str, rng.integers(0, 256, 96 * 96))) + "\n")
    with open(lookup, "w") as f:
        f.write("RowId,ImageId,FeatureName,Location\n")
        row = 1
        for i in range(count):
            for name in KEYPOINT_COLUMNS:
                f.write(f"{row},{i + 1},{name},\n")
                row += 1
    return test, lookup


def two_at_once(root: Path, tries: int, problems: list[str]) -> dict:
    """Two runs started into one folder at the same moment: exactly one may train."""
    ok = 0
    for t in range(tries):
        folder = root / f"pair{t}"
        logs = [root / f"pair{t}_{i}.log" for i in range(2)]
        procs = [cli([*TRAIN, "--epochs", "2", "--out", str(folder)], log) for log in logs]
        codes = [p.wait() for p in procs]
        refused = [i for i, c in enumerate(codes) if c != 0]
        lines = [logs[i].read_text().strip().splitlines() for i in refused]
        if sorted(codes)[0] == 0 and len(refused) == 1 and len(lines[0]) == 1 and "another run" in lines[0][0]:
            ok += 1
        else:
            problems.append(f"two at once, try {t + 1}: exit statuses {codes}; refused said {lines}")
    return {"tries": tries, "exactly_one_ran": ok}


def user_folder(root: Path, problems: list[str]) -> dict:
    folder = root / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": true}\n')
    (folder / "metrics.csv").write_text("my,own,header\n1,2,3\n")
    (folder / "predictions.png").write_bytes(os.urandom(1000))
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    log = root / "mine.log"
    code = cli([*TRAIN, "--out", str(folder)], log).wait()
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    said = log.read_text().strip().splitlines()
    if code == 0 or after != digest or len(said) != 1:
        problems.append(f"user folder: exit {code}, files {'unchanged' if after == digest else 'CHANGED'}, said {said}")
    return {"refused": code != 0, "files_identical": after == digest, "message": said[0] if said else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=50, help="kill -9's in all (about half of them in training)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    root = Path(tempfile.mkdtemp(prefix="cnnvision-crash-"))
    problems: list[str] = []
    train_kills = a.kills - 3 * (a.kills // 4)
    each = a.kills // 4
    t0 = time.time()
    report = {"training": crash_training(root, train_kills, rng, problems)}

    sample = Path(__import__("cnnvision").__file__).parent / "samples" / "faces.jpg"
    photos = root / "photos"
    photos.mkdir()
    for i in range(24):
        shutil.copy(sample, photos / f"photo{i:02d}.jpg")
    out = root / "predicted"
    report["predict"] = crash_outputs(
        root, "predict", ["predict", str(photos), "--out", str(out), "--json", str(out / "faces.json"), "--overwrite"],
        [out / "faces.json"], out, each, rng, problems)
    exported = root / "exported"
    exported.mkdir()
    report["export"] = crash_outputs(
        root, "export", ["export", "--pretrained", "landmarks68", "--onnx", str(exported / "landmarks68.onnx")],
        [exported / "landmarks68.onnx"], exported, each, rng, problems)
    test, lookup = kaggle_test_files(root, 600)
    submitted = root / "submitted"
    submitted.mkdir()
    report["submit"] = crash_outputs(
        root, "submit", ["submit", "--pretrained", "keypoints15", "--test", str(test), "--lookup", str(lookup),
                         "--out", str(submitted / "submission.csv")],
        [submitted / "submission.csv"], submitted, each, rng, problems)
    report["two_runs_into_one_folder"] = two_at_once(root, 5, problems)
    report["folder_of_user_files"] = user_folder(root, problems)
    report["kills"] = sum(report[k]["kills"] for k in ("training", "predict", "export", "submit"))
    report["problems"] = problems
    report["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(report, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
