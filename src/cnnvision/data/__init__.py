"""Datasets: Kaggle CSVs, the 68-point frames, synthetic faces, MNIST. ``load_keypoints``
picks the reader from the file itself."""
from pathlib import Path

from cnnvision.data.dataset import KeypointDataset, split_by_identity
from cnnvision.data.kaggle import load_kaggle, read_rows
from cnnvision.errors import InputError


def sniff(path: Path) -> str:
    """'kaggle' or 'faces68', from the CSV header."""
    rows = read_rows(path)
    _, header = next(rows)
    rows.close()
    if "Image" in [h.strip() for h in header]:
        return "kaggle"
    if len(header) == 137:
        return "faces68"
    raise InputError(f"{path}: unrecognised CSV: neither the Kaggle layout (keypoint columns and 'Image') "
                     "nor the 68-point layout (file name, then 136 coordinates)")


def load_keypoints(path: str | Path | None, images: str | Path | None = None, size: int = 96,
                   channels: int = 1, skip_bad_rows: bool = False, use_cache: bool = True,
                   synthetic_count: int = 2400) -> KeypointDataset:
    """Any supported keypoint data; ``None`` means the embedded synthetic faces."""
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
    from cnnvision.data.faces68 import load_faces68
    return load_faces68(path, images, size, channels, use_cache)


__all__ = ["KeypointDataset", "load_keypoints", "split_by_identity", "sniff"]
