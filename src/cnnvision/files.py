"""Writing files atomically: to a temporary file beside the target, then one rename.

A crash, a full disk or Ctrl-C at any moment leaves either the old file or the new one, never
half of one. A temporary file's name carries its writer's process id
(``.NAME.PID-RANDOM.tmp``): any exit Python sees removes it, and one left by a process that was
killed outright (``kill -9``) is swept by the next run that writes into that folder
(``sweep_temporaries``), while another live process's temporaries are left alone.
"""
import errno
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path


TMP_SUFFIX = ".tmp"
_TEMPORARY = re.compile(r"^\..+\.(\d+)-[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9]+)?$")


def pid_alive(pid: int) -> bool:
    """Whether a process of this id exists (one we may not signal counts as existing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_name(path: Path, suffix: str = TMP_SUFFIX) -> Path:
    """A temporary name beside ``path`` for writers that need a name, not a file (ONNX export,
    video encoding), in the form ``sweep_temporaries`` recognises; ``suffix`` keeps what a
    writer reads the format from (``.tmp.mp4``)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}{suffix}")


def sweep_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries that killed writers left in ``folder`` (not its subfolders): files
    named as ``atomic_open`` names them whose process is gone. Returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))) and entry.is_file():
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs):
    """``open(path, mode)`` whose result appears at ``path`` only when the block succeeds."""
    path = Path(path)
    if path.is_dir():  # said of the target, not of the temporary file the rename would fail on
        raise IsADirectoryError(errno.EISDIR, "Is a directory, expected a file name", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; these are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_path(path: str | Path, suffix: str = TMP_SUFFIX):
    """A temporary name beside ``path`` for a writer that opens files itself; renamed to ``path``
    when the block succeeds, removed when it does not."""
    path = Path(path)
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def write_json(path: str | Path, obj) -> None:
    """Atomically write JSON, so a failure never leaves half a file where the user looks."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def save_image(image, path: str | Path) -> None:
    """Atomically save a PIL image in the format its name's extension says."""
    from PIL import Image
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with atomic_open(path, "wb") as f:
        image.save(f, format=fmt)


def free_name(folder: str | Path, stem: str, suffixes: str | tuple[str, ...], used: set[str],
              overwrite: bool = False) -> str:
    """An output's name in ``folder``: ``unique_name`` (never two of this run's outputs on one
    name) that, unless ``overwrite``, also steps past files already there, so nothing the user
    had is replaced (``photo_faces_2.png`` beside an earlier ``photo_faces.png``). With several
    ``suffixes`` (an overlay and its mask), the name is free for all of them."""
    folder, name, k = Path(folder), stem, 1
    suffixes = (suffixes,) if isinstance(suffixes, str) else suffixes
    while name in used or (not overwrite and any((folder / f"{name}{s}").exists() for s in suffixes)):
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return name


def refuse_existing(path: str | Path | None, flag: str, overwrite: bool) -> None:
    """A named output file that exists is replaced only with ``--overwrite``."""
    from cnnvision.errors import InputError
    if path not in (None, "-") and not overwrite and Path(path).is_file():
        raise InputError(f"{flag} {path}: exists; add --overwrite to replace it")


def unique_name(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``, ... : the first not in ``used`` (which it joins), so two
    inputs of one name never overwrite each other's outputs."""
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return name


def plain(value):
    """A path, or a list of paths (several sources), as config.json stores it."""
    if isinstance(value, list):
        return [str(v) if v is not None else None for v in value]
    return str(value) if value else None
