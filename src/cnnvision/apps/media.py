"""What ``predict`` reads: image files, folders of them, and videos frame by frame.

Folders are walked recursively and sorted, keeping files with an image extension. Videos (and
animated GIFs) are decoded with PyAV, which ships FFmpeg in its wheels (the ``video`` extra);
frames stream one at a time, so an hour of video costs the memory of a few frames.
"""
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnvision import images as imgs
from cnnvision.errors import InputError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Frame:
    """One picture to run the pipeline on: a photo (``frame`` None) or a video frame."""
    source: str
    image: Image.Image
    frame: int | None = None
    time: float | None = None


def expand(inputs: list[str]) -> Iterator[str]:
    """Each input path, with folders replaced by the image and video files under them (sorted).
    A path that does not exist is passed on, to fail as a file of its own."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
            yield from (str(p) for p in found)
        else:
            yield item


def is_video(path: str) -> bool:
    """A video file, or an animated GIF (more than one frame)."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return True
    if suffix == ".gif":
        try:
            with Image.open(path) as im:
                return getattr(im, "n_frames", 1) > 1
        except (OSError, ValueError):
            return False
    return False


def frames(path: str, every: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
    """The frames of a video (every ``every``-th, at most ``max_frames``), as RGB images."""
    try:
        import av
    except ImportError:
        raise InputError(f'{path}: reading video needs the video extra: pip install "cnnvision[video]"') from None
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{path}: cannot open video ({e.__class__.__name__})") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: holds no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        taken = 0
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i % every:
                    continue
                if max_frames is not None and taken >= max_frames:
                    return
                t = float(frame.time) if frame.time is not None else None
                yield Frame(path, frame.to_image().convert("RGB"), i, t)
                taken += 1
        except av.FFmpegError as e:
            raise InputError(f"{path}: video broken at frame {taken} ({e.__class__.__name__})") from None


class VideoWriter:
    """An annotated copy of a video: frames in, H.264 MP4 out (MPEG-4 Part 2 where the FFmpeg in
    PyAV lacks libx264), written to a temporary name and moved into place when closed."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        import av
        from cnnvision.files import temporary_name
        self.path, self.tmp = path, temporary_name(path, ".tmp.mp4")
        self.container = av.open(str(self.tmp), mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        rate = max(1, round(fps))
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"

    def write(self, image: Image.Image) -> None:
        import av
        image = image.convert("RGB").crop((0, 0, self.stream.width, self.stream.height))
        for packet in self.stream.encode(av.VideoFrame.from_image(image)):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # closing a half-encoded stream may fail: the file goes anyway
            pass
        self.tmp.unlink(missing_ok=True)


def video_rate(path: str) -> float:
    import av
    with av.open(path) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else 25.0


def aligned_crop(photo: Image.Image, keypoints: np.ndarray, size: int = 112) -> Image.Image:
    """The face turned upright and scaled by its eyes: the centres of the two eyes (points 36-41
    and 42-47) land at fixed places of a size x size square (0.35 and 0.65 across, 0.4 down),
    the framing face-recognition tools expect."""
    right, left = keypoints[36:42].mean(0), keypoints[42:48].mean(0)  # the subject's right eye is on the image's left
    want_r, want_l = np.array([0.35, 0.4]) * size, np.array([0.65, 0.4]) * size
    d_src, d_dst = left - right, want_l - want_r
    scale = np.linalg.norm(d_dst) / max(np.linalg.norm(d_src), 1e-6)
    angle = np.arctan2(d_src[1], d_src[0])
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    # output pixel (u, v) -> photo pixel: rotate by the eyes' angle, scale, then shift onto the eyes
    a, b, d, e = cos, -sin, sin, cos
    c = right[0] - (a * want_r[0] + b * want_r[1])
    f = right[1] - (d * want_r[0] + e * want_r[1])
    return photo.transform((size, size), Image.Transform.AFFINE, (a, b, c, d, e, f),
                           resample=Image.Resampling.BILINEAR)


def photo_or_frames(path: str, every: int, max_frames: int | None) -> Iterator[Frame]:
    if is_video(path):
        yield from frames(path, every, max_frames)
    else:
        yield Frame(path, imgs.open_image(path, 3))
