"""Parse once, then load in a fraction of a second: the role TFRecords played in the tutorial.

A parsed source file is stored as an uncompressed ``.npz`` of arrays under the cache folder,
keyed by the file's absolute path, size, modification time and the parse options, so an edited
file is parsed again. Writes are atomic.
"""
import hashlib
import os
from pathlib import Path

import numpy as np

from cnnvision.files import atomic_open

CACHE_VERSION = 2


def cache_dir() -> Path:
    root = os.environ.get("CNNVISION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cnnvision")
    return Path(root)


def cache_key(path: Path, *options) -> str:
    st = path.stat()
    text = repr((CACHE_VERSION, str(path.resolve()), st.st_size, st.st_mtime_ns, options))
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def load(key: str) -> dict[str, np.ndarray] | None:
    file = cache_dir() / f"{key}.npz"
    if not file.exists():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None  # a damaged cache entry is just a miss


def cached(key: str, build, use_cache: bool = True) -> dict[str, np.ndarray]:
    """The arrays stored under ``key``, or ``build()``'s, stored for next time (``use_cache``
    False: always built, never stored)."""
    arrays = load(key) if use_cache else None
    if arrays is None:
        arrays = build()
        if use_cache:
            save(key, arrays)
    return arrays


def save(key: str, arrays: dict[str, np.ndarray]) -> None:
    try:
        with atomic_open(cache_dir() / f"{key}.npz", "wb") as f:
            np.savez(f, **arrays)
    except OSError:
        pass  # a read-only cache folder only costs speed
