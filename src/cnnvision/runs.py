"""A training run's folder: claimed by one process, never someone else's files.

``RunFolder.claim(out, resume)`` is the first thing a training does:
- a folder that holds files but no cnnvision run is refused (nothing in it is touched);
- a folder holding a run is refused without ``--resume`` (and needs one to resume);
- the claim is an flock on ``.lock`` (which names the holding process), so of two runs
  started into one folder exactly one gets it; the kernel frees it when its process ends, so
  a lock left by ``kill -9`` is stale and taken over;
- temporary files that killed writers left there are swept.
A run folder is known by its marker ``.cnnvision-run`` (or, for runs of earlier versions, a
``last.pt``). The lock is released when the run ends, whatever way Python sees it end.
"""
import atexit
import os
import signal
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path

from cnnvision.errors import InputError
from cnnvision.files import sweep_temporaries

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

MARKER = ".cnnvision-run"
LOCK = ".lock"


def holder_named(lock: Path) -> str:
    """' (process N)' as the lock file names its holder, or '' while it has not yet written it."""
    try:
        return f" (process {int(lock.read_text().split()[0])})"
    except (OSError, ValueError, IndexError):
        return ""


def lock_held(folder: str | Path) -> bool:
    """Whether some process holds the run folder's lock now (a test of the flock, taken and
    given back at once; without flock, whether the lock file exists)."""
    lock = Path(folder) / LOCK
    if fcntl is None or not lock.exists():
        return lock.exists()
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


class RunFolder:
    def __init__(self, path: Path):
        self.path = path
        self.lock = path / LOCK
        self.fd: int | None = None  # the locked file, while this process holds the folder
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
        if out.is_dir():
            # one listing, not is_run() and then a listing: a run starting into the folder at the
            # same moment may touch its marker between the two, and would be taken for foreign files
            names = {p.name for p in out.iterdir()}
            others = sorted(names - {LOCK}) if not names & {MARKER, "last.pt"} else []
            if others:
                raise InputError(f"{out}: holds files that are not a cnnvision run ({', '.join(others[:3])}"
                                 f"{', ...' if len(others) > 3 else ''}); train into a new or empty folder")

    def acquire(self) -> None:
        """Lock ``.lock`` with flock: the kernel lets one process hold it and drops the lock when
        that process ends, however it ends, so a lock left by ``kill -9`` is free at once (the
        file stays; it is never removed, so no second process can lock a fresh file beside an
        old one). Without flock (Windows), the file is created exclusively and removed again."""
        try:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | (0 if fcntl else os.O_EXCL), 0o644)
        except FileExistsError:
            raise InputError(f"{self.path}: another run{holder_named(self.lock)} is training in this folder "
                             f"(or one was killed: remove {self.lock})") from None
        except OSError as e:
            raise InputError(f"{self.path}: cannot write in the folder ({e.strerror})") from None
        if fcntl:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise InputError(f"{self.path}: another run{holder_named(self.lock)} is training in this folder") \
                    from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        atexit.register(self.release)

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        atexit.unregister(self.release)
        try:
            os.ftruncate(fd, 0)  # nobody's now
            os.close(fd)  # drops the flock
            if not fcntl:
                self.lock.unlink()
        except OSError:
            pass

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.release()
        if kind is not None and self.created:  # e.g. bad data: leave no empty run folder behind
            try:
                if {p.name for p in self.path.iterdir()} <= {MARKER, LOCK}:
                    for name in (MARKER, LOCK):
                        (self.path / name).unlink(missing_ok=True)
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


@contextmanager
def signals_deferred():
    """Ctrl-C and SIGTERM wait until the block is done, then act as they would have. torch.save's
    zip writer, interrupted in the middle of a record, fails again on its way out, and that
    second error would bury the interruption under a traceback (exit status 1, not 130 or 143)."""
    caught = []
    try:
        before = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                  for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread, where signals are handled anyway
        yield
        return
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])  # now, to the handler there was before


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
