"""Writing files atomically: to a temporary file beside the target, then one rename.

A crash, a full disk or Ctrl-C at any moment leaves either the old file or the new one, never
half of one, and no temporary behind.
"""
import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def write_json(path: str | Path, obj) -> None:
    """Atomically write JSON, so a failure never leaves half a file where the user looks."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


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
