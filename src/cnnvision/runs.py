"""A training run's folder: claimed by one process, never someone else's files.

``RunFolder.claim(out, resume)`` is the first thing a training does:
- a folder that holds files but no cnnvision run is refused (nothing in it is touched);
- a folder holding a run is refused without ``--resume`` (and needs one to resume);
- the claim is a lock file (``.lock``: the process id and its start time) made with O_EXCL, so
  of two runs started into one folder exactly one gets it; a lock whose process is gone (killed
  with ``kill -9``) is stale and taken over;
- temporary files that killed writers left there are swept.
A run folder is known by its marker ``.cnnvision-run`` (or, for runs of earlier versions, a
``last.pt``). The lock is released when the run ends, whatever way Python sees it end.
"""
import atexit
import os
import signal
from dataclasses import fields, replace
from pathlib import Path

from cnnvision.errors import InputError
from cnnvision.files import pid_alive, sweep_temporaries

MARKER = ".cnnvision-run"
LOCK = ".lock"


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a lock left by a dead
    process whose id was reused is still seen as stale; '' where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def lock_holder(lock: Path) -> int | None:
    """The id of the live process holding ``lock``, or None when the lock is stale or unreadable."""
    try:
        pid_text, _, start = lock.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    if start and process_start(pid) not in ("", start):
        return None  # the id now belongs to another process
    return pid


class RunFolder:
    def __init__(self, path: Path):
        self.path = path
        self.lock = path / LOCK
        self.held = False
        self.created = False  # by this claim: removed again if the run fails before it writes anything

    @classmethod
    def claim(cls, out: str | Path, resume: bool) -> "RunFolder":
        run = cls(Path(out))
        if int(os.environ.get("RANK", "0")) != 0:
            return run  # under torchrun the first process holds the folder for all of them
        run.check(resume)
        run.created = not run.path.exists()
        run.path.mkdir(parents=True, exist_ok=True)
        run.acquire()
        try:
            run.check(resume)  # again, now that no other run can change the folder
            (run.path / MARKER).touch()
            sweep_temporaries(run.path)
        except BaseException as e:
            run.__exit__(type(e), e, None)
            raise
        return run

    def is_run(self) -> bool:
        return (self.path / MARKER).exists() or (self.path / "last.pt").exists()

    def check(self, resume: bool) -> None:
        out = self.path
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: is a file, expected a run folder")
        if resume:
            if not (out / "last.pt").exists():
                raise InputError(f"{out / 'last.pt'}: no such file, nothing to resume")
            return
        if (out / "last.pt").exists():
            raise InputError(f"{out}: already holds a run (last.pt); use --resume to continue it or another --out")
        if out.is_dir() and not self.is_run():
            others = sorted(p.name for p in out.iterdir() if p.name != LOCK)
            if others:
                raise InputError(f"{out}: holds files that are not a cnnvision run ({', '.join(others[:3])}"
                                 f"{', ...' if len(others) > 3 else ''}); train into a new or empty folder")

    def acquire(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = lock_holder(self.lock)
                if holder is not None:
                    raise InputError(f"{self.path}: another run (process {holder}) is training in this folder")
                try:  # stale: its process is gone
                    self.lock.unlink()
                except FileNotFoundError:
                    pass
                continue
            except OSError as e:
                raise InputError(f"{self.path}: cannot write in the folder ({e.strerror})") from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {process_start(os.getpid())}\n")
            self.held = True
            atexit.register(self.release)
            return
        raise InputError(f"{self.path}: cannot take the folder's lock ({self.lock})")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        atexit.unregister(self.release)
        try:
            if lock_holder(self.lock) in (os.getpid(), None):
                self.lock.unlink()
        except OSError:
            pass

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.release()
        if kind is not None and self.created:  # e.g. bad data: leave no empty run folder behind
            try:
                if {p.name for p in self.path.iterdir()} <= {MARKER}:
                    (self.path / MARKER).unlink(missing_ok=True)
                    self.path.rmdir()
            except OSError:
                pass


class Terminated(SystemExit):
    """SIGTERM, turned into an exception so that ``finally`` blocks and ``atexit`` run: partial
    files are removed and run folders unlocked, as after Ctrl-C."""


def handle_sigterm() -> None:
    """From now on SIGTERM ends the program like Ctrl-C does (exit status 143)."""
    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        raise Terminated(128 + signum)
    try:
        signal.signal(signal.SIGTERM, terminated)
    except ValueError:  # not the main thread: leave the default
        pass


def resumed(given, out: Path, task: str):
    """The training config (a task's dataclass) of the run in ``out``, rebuilt from its last.pt:
    every field from the stored settings (older runs kept some only in their net's config),
    except the limits this command may change, ``epochs`` and ``max_steps`` (see
    ``solver.resumed_solver``)."""
    from cnnvision import checkpoint
    from cnnvision.solver import resumed_solver
    stored = checkpoint.run_config(out / "last.pt", task)
    net = stored.get("net") if isinstance(stored.get("net"), dict) else {}
    values = {}
    for f in fields(given):
        if f.name == "net" and net:
            values["net"] = net["arch"]
        elif f.name in stored:
            values[f.name] = stored[f.name]
        elif f.name in net:
            values[f.name] = net[f.name]
    if isinstance(values.get("class_weights"), list):
        values["class_weights"] = tuple(values["class_weights"])
    if "augment" in stored:  # what was used, every field of it (runs from before --augment kept none)
        values["augment"] = stored["augment"] or False
    values["solver"] = resumed_solver(stored["solver"], given.solver)
    return replace(given, **values)
