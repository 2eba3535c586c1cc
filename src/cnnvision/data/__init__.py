"""Datasets: Kaggle CSVs, the 68-point frames, synthetic faces, MNIST. ``load_keypoints``
picks the reader from the file itself."""
from pathlib import Path

from cnnvision.data.dataset import KeypointDataset, join, split_by_identity
from cnnvision.data.kaggle import load_kaggle, read_rows
from cnnvision.errors import InputError


def sniff(path: Path) -> str:
    """'kaggle', 'faces68' or 'web68' (the web-faces layout), from the CSV header."""
    from cnnvision.data.photos import is_web_faces
    rows = read_rows(path)
    _, header = next(rows)
    rows.close()
    if "Image" in [h.strip() for h in header]:
        return "kaggle"
    if len(header) == 137:
        return "faces68"
    if is_web_faces(header):
        return "web68"
    raise InputError(f"{path}: unrecognised CSV: neither the Kaggle layout (keypoint columns and 'Image'), "
                     "the 68-point layout (file name, then 136 coordinates) nor the web-faces layout")


def load_keypoints(path: str | Path | None, images: str | Path | None = None, size: int = 96,
                   channels: int = 1, skip_bad_rows: bool = False, use_cache: bool = True,
                   synthetic_count: int = 2400, margin: float | None = None,
                   val_fraction: float = 0.15) -> KeypointDataset:
    """Any supported keypoint data; ``None`` means the embedded synthetic faces. ``margin``: the
    crop of 68-point faces (default: the reader's). ``val_fraction``: for the web-faces layout,
    whose reader holds out the detector's validation photos itself."""
    if path is None:
        from cnnvision.data.synthetic import synthetic_faces
        return synthetic_faces(synthetic_count, size, channels)
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    kind = sniff(path)
    if kind == "kaggle":
        if images is not None:
            raise InputError(f"{path}: a Kaggle CSV holds its own pixels; --images is for the 68-point layout")
        if size != 96 or channels != 1:
            raise InputError(f"{path}: Kaggle faces are 96x96 grey; --image-size and --channels do not apply")
        return load_kaggle(path, skip_bad_rows=skip_bad_rows, use_cache=use_cache)
    if kind == "web68":
        from cnnvision.data.faces68 import MARGIN, load_web68
        if images is None:
            raise InputError(f"{path}: the web-faces layout names photos: give their folder with --images")
        return load_web68(path, images, size, channels, use_cache, MARGIN if margin is None else margin, val_fraction)
    from cnnvision.data.faces68 import load_faces68
    if margin is None:
        return load_faces68(path, images, size, channels, use_cache)
    return load_faces68(path, images, size, channels, use_cache, margin)


def load_sources(paths: list[str | None], images: list[str | None], size: int = 96, channels: int = 1,
                 skip_bad_rows: bool = False, use_cache: bool = True, synthetic_count: int = 2400,
                 shares: list[float] | None = None, val_fraction: float = 0.15) -> KeypointDataset:
    """Several keypoint files trained on together (``--data A --images DA --data B --images DB``).
    The ``images`` folders go, in order, to the sources that need one (68-point CSVs; a Kaggle
    CSV holds its own pixels). With a Kaggle CSV among them, 68-point sources become Kaggle-style
    crops with the 15 points (``load_kaggle_style``). ``shares`` (normalised to sum to 1) sets
    each source's part of a training batch (default: in proportion to its size)."""
    if shares is not None:
        if len(shares) != len(paths):
            raise InputError(f"--share has {len(shares)} values for {len(paths)} --data sources; give one per source")
        if any(not (0 <= s < float("inf")) for s in shares) or sum(shares) <= 0:
            raise InputError(f"--share {','.join(f'{s:g}' for s in shares)}: shares must be numbers >= 0, not all 0")
        shares = [s / sum(shares) for s in shares]
    kinds = [sniff(Path(p)) if p is not None and Path(p).is_file() else "faces68" for p in paths]
    need = kinds.count("faces68") + kinds.count("web68") if paths != [None] else 0
    if len(images) != need and not (len(paths) == 1 and not images):
        raise InputError(f"{len(images)} --images folders for {need} 68-point --data files; give one --images per "
                         "68-point --data, in order")
    if "kaggle" in kinds and "web68" in kinds:
        raise InputError("the web-faces layout cannot train beside a Kaggle CSV: its points are not Kaggle's 15")
    if len(paths) == 1 and not shares:
        return load_keypoints(paths[0], images[0] if images else None, size, channels, skip_bad_rows, use_cache,
                              synthetic_count, val_fraction=val_fraction)
    folders = iter(images)
    parts = []
    for path, kind in zip(paths, kinds):
        if kind == "kaggle":
            parts.append(load_keypoints(path, None, size, channels, skip_bad_rows, use_cache))
        elif "kaggle" in kinds:
            from cnnvision.data.faces68 import load_kaggle_style
            parts.append(load_kaggle_style(path, next(folders), use_cache))
        else:
            parts.append(load_keypoints(path, next(folders), size, channels, skip_bad_rows, use_cache, synthetic_count,
                                        val_fraction=val_fraction))
    return join(parts, tuple(shares) if shares else None)


__all__ = ["KeypointDataset", "load_keypoints", "load_sources", "split_by_identity", "sniff"]
