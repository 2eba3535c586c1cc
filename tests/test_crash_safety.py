"""Run folders and outputs under kills, interrupts, two runs at once and the user's own files.

Kills at chosen points (not random timing): a child process trains and kills itself with
SIGKILL at a hook, as ``kill -9`` would; benchmarks/crash_test.py does the random kills."""
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from cnnvision import checkpoint
from cnnvision.cli import main
from cnnvision.files import atomic_open, free_name, sweep_temporaries
from cnnvision.runs import LOCK, RunFolder, lock_held

TRAIN = ["train", "--synthetic-count", "160", "--image-size", "48", "--width", "8", "--net", "kpnet",
         "--epochs", "3", "--batch-size", "16", "--log-every", "100"]


def one_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in needles), err


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def epochs_in(folder):
    with open(folder / "metrics.csv", newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def same_weights(a, b):
    wa, wb = (torch.load(p, weights_only=True)["model"] for p in (a, b))
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def child(args: list[str]) -> subprocess.CompletedProcess:
    """The CLI in its own process on one thread, as every run whose weights are compared here is
    (so the thread count cannot change the sums)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cnnvision", *args], capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every interrupted one must end equal to."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert child([*TRAIN, "--out", str(out)]).returncode == 0
    return out


def killed_at(hook: str, epoch: int, args: list[str], tmp_path) -> subprocess.CompletedProcess:
    """Run the CLI in a child that SIGKILLs itself at ``hook`` of ``epoch``: 'best' (after
    last.pt, before best.pt), 'csv' (before metrics.csv), 'last' (half-way through writing
    last.pt's temporary)."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        import cnnvision.checkpoint as checkpoint
        from cnnvision import solver
        from cnnvision.cli import main
        def die():
            os.kill(os.getpid(), signal.SIGKILL)
        hook, epoch = {hook!r}, {epoch}
        if hook == "best":
            keep = solver.Solver.save_best
            solver.Solver.save_best = lambda self, state: die() if self.epoch == epoch else keep(self, state)
        elif hook == "csv":
            keep_csv = solver.Solver.write_metrics_csv
            solver.Solver.write_metrics_csv = lambda self: die() if self.epoch == epoch else keep_csv(self)
        elif hook == "last":
            keep_save = checkpoint.save
            def save(path, state):
                if str(path).endswith("last.pt") and state["epoch"] == epoch:
                    with checkpoint.atomic_open(path, "wb") as f:
                        f.write(b"half a checkpoint")
                        f.flush()
                        die()
                keep_save(path, state)
            checkpoint.save = save
        sys.exit(main({args!r}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)


@pytest.mark.parametrize("hook", ["best", "csv", "last"])
def test_a_kill_at_each_write_is_repaired_by_resume(hook, straight, tmp_path):
    out = tmp_path / "run"
    done = killed_at(hook, 2, [*TRAIN, "--out", str(out)], tmp_path)
    assert done.returncode == -signal.SIGKILL
    assert (out / LOCK).exists() and not lock_held(out)  # kill -9 leaves the file; the kernel freed the lock
    checkpoint.load(out / "last.pt")
    checkpoint.load(out / "best.pt")
    if hook == "last":
        assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # the half-written one
    resumed = child([*TRAIN, "--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    said = resumed.stdout
    if hook == "best":
        assert "repaired" in said and "best.pt" in said
    assert epochs_in(out) == [1, 2, 3]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")] and not lock_held(out)
    assert same_weights(out / "last.pt", straight / "last.pt")
    last, best = (checkpoint.load(out / n) for n in ("last.pt", "best.pt"))
    assert best["metrics"]["rmse"] == last["best"]  # best.pt holds what last.pt records as the best


def test_resume_repairs_what_an_earlier_version_left(straight, tmp_path, capsys):
    """Duplicate rows (appended before last.pt was saved) and no record of them in last.pt."""
    out = tmp_path / "run"
    assert main([*TRAIN, "--epochs", "2", "--out", str(out)]) == 0
    state = torch.load(out / "last.pt", weights_only=True)
    for key in ("history", "batch", "rng"):
        state.pop(key)
    torch.save(state, out / "last.pt")
    rows = (out / "metrics.csv").read_text().splitlines()
    (out / "metrics.csv").write_text("\n".join([rows[0], rows[1], rows[1], rows[2], rows[2], rows[2]]) + "\n")
    (out / "best.pt").unlink()
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 0
    assert epochs_in(out) == [1, 2, 3]
    checkpoint.load(out / "best.pt")


def test_a_folder_of_the_users_files_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"mine": 1}')
    (out / "metrics.csv").write_text("a,b\n1,2\n")
    before = digests(out)
    assert main([*TRAIN, "--out", str(out)]) == 2
    one_line(capsys, str(out), "not a cnnvision run", "config.json")
    assert digests(out) == before


def test_a_second_run_into_a_claimed_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    with RunFolder.claim(out, resume=False):
        assert main([*TRAIN, "--out", str(out)]) == 2
        one_line(capsys, str(out), "another run", f"process {os.getpid()}")
    assert not lock_held(out)


def test_two_runs_started_at_once_one_trains(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-m", "cnnvision", *TRAIN, "--epochs", "1", "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    assert sorted(code for code, _ in results) == [0, 2]
    refused = next(err for code, err in results if code == 2).strip().splitlines()
    assert len(refused) == 1 and "another run" in refused[0]


def test_a_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK).write_text(f"{int(dead.stdout)} 1\n")
    (out / ".cnnvision-run").touch()
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    assert not lock_held(out)


def test_a_failed_start_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "new"
    assert main(["train", "--data", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert not out.exists()


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "cnnvision", *TRAIN, "--epochs", "200", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=60)
    err = p.stderr.read().strip().splitlines()
    assert code == 128 + signal.SIGTERM
    assert err == ["cnnvision train: terminated"]
    assert not [q for q in out.iterdir() if q.name.endswith(".tmp")] and not lock_held(out)
    checkpoint.load(out / "last.pt")


def test_resume_goes_on_from_a_max_steps_stop_exactly(straight, tmp_path):
    """9 steps an epoch: stop inside epochs 1 and 2, then go on to the end, equal to one run."""
    out = tmp_path / "run"
    assert child([*TRAIN, "--max-steps", "4", "--out", str(out)]).returncode == 0
    assert child([*TRAIN, "--out", str(out), "--resume", "--max-steps", "13"]).returncode == 0
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 13
    assert epochs_in(out) == [1, 2]  # epoch 2 so far, its row replaced when it is done
    again = child([*TRAIN, "--out", str(out), "--resume", "--max-steps", "13"])
    assert again.returncode == 0 and "leaves nothing to train" in again.stdout
    assert child([*TRAIN, "--out", str(out), "--resume"]).returncode == 0
    assert epochs_in(out) == [1, 2, 3]
    assert same_weights(out / "last.pt", straight / "last.pt")


def test_a_killed_writers_temporaries_are_swept_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".last.pt.{int(dead.stdout)}-abc_12.tmp"
    live = tmp_path / f".best.pt.{os.getppid()}-xyz.tmp"
    video = tmp_path / f".clip_faces.mp4.{int(dead.stdout)}-0a1b.tmp.mp4"
    mine = tmp_path / ".notes.tmp"
    for f in (stale, live, video, mine):
        f.write_bytes(b"x")
    assert sorted(p.name for p in sweep_temporaries(tmp_path)) == sorted([stale.name, video.name])
    assert live.exists() and mine.exists()


def test_atomic_open_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target) as f:
            f.write("new, half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_free_name_steps_past_files_on_disk(tmp_path):
    (tmp_path / "a_faces.png").write_bytes(b"")
    used: set[str] = set()
    assert free_name(tmp_path, "a_faces", ".png", used) == "a_faces_2"
    assert free_name(tmp_path, "a_faces", ".png", used) == "a_faces_3"
    assert free_name(tmp_path, "a_faces", ".png", set(), overwrite=True) == "a_faces"


def test_predict_never_replaces_files_without_overwrite(tmp_path, capsys):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "faces_faces.png").write_bytes(b"the user's")
    results = tmp_path / "r.json"
    assert main(["predict", "--sample", "--out", str(out), "--json", str(results)]) == 0
    assert (out / "faces_faces.png").read_bytes() == b"the user's"
    assert (out / "faces_faces_2.png").exists()
    capsys.readouterr()
    assert main(["predict", "--sample", "--out", str(out), "--json", str(results)]) == 2
    one_line(capsys, str(results), "exists", "--overwrite")
    first = json.loads(results.read_text())
    assert main(["predict", "--sample", "--out", str(out), "--json", str(results), "--overwrite"]) == 0
    assert (out / "faces_faces.png").read_bytes() != b"the user's"
    assert json.loads(results.read_text()) == first


def test_a_failing_export_leaves_no_temporary(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")

    def broken(*args, **kwargs):
        open(args[2], "wb").write(b"partial")
        raise RuntimeError("exporter failed")
    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError):
        main(["export", "--pretrained", "keypoints15", "--onnx", str(tmp_path / "m.onnx")])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, "Terminated"), (signal.SIGINT, "KeyboardInterrupt")])
def test_a_signal_during_a_checkpoint_write_waits_until_it_is_in_place(signum, raised, tmp_path, monkeypatch):
    """torch.save cannot be interrupted cleanly (its zip writer fails again on the way out, and the
    user would get a traceback): the signal takes effect once the checkpoint is written."""
    from cnnvision.runs import Terminated, handle_sigterm
    real_save = torch.save

    def interrupted(obj, f):
        os.kill(os.getpid(), signum)  # arrives in the middle of the write
        real_save(obj, f)

    previous = signal.getsignal(signal.SIGTERM)
    handle_sigterm()
    monkeypatch.setattr(torch, "save", interrupted)
    try:
        with pytest.raises(Terminated if raised == "Terminated" else KeyboardInterrupt):
            checkpoint.save(tmp_path / "c.pt", {"net": {"task": "keypoints"}, "model": {}})
    finally:
        signal.signal(signal.SIGTERM, previous)
        monkeypatch.undo()
    assert checkpoint.load(tmp_path / "c.pt")["model"] == {}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_marker_touched_while_the_folder_is_checked_is_a_run_not_foreign_files(tmp_path, monkeypatch):
    """Two runs started into one folder: the second may look at it just as the first touches
    its marker. Whatever it saw a moment before, the listing that holds the marker says 'a run'
    (then the lock refuses it as 'another run'), never 'files that are not a cnnvision run'."""
    from cnnvision.errors import InputError
    from cnnvision.runs import MARKER
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).touch()
    (out / MARKER).touch()
    monkeypatch.setattr(RunFolder, "is_run", lambda self: False)  # the marker not there yet, a moment ago
    RunFolder(out).check(resume=False)
    (out / "notes.txt").write_text("mine")
    (out / MARKER).unlink()
    with pytest.raises(InputError, match="not a cnnvision run"):
        RunFolder(out).check(resume=False)
