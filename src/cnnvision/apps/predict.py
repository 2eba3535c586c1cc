"""``cnnvision predict`` on real workloads: photos, folders and videos streamed through the face
pipeline in batches, each result written as it comes, one unreadable file never sinking the rest.

Outputs, any together: JSON (``--json FILE``, or ``-`` for stdout; the whole result at the end),
JSON Lines (``--jsonl FILE``: a line per photo or video frame as soon as it is done, so a run
killed halfway keeps what it did), CSV (``--csv FILE``: a row per face), overlays and annotated
videos (``--out DIR``) and face crops aligned by the eyes (``--crops DIR``).
Exit status: 0 all inputs done, 1 some skipped (each named on stderr), 2 usage errors.

Nothing the user had is replaced unless ``overwrite``: overlays, videos and crops whose names are
taken get numbered ones (``photo_faces_2.png``), and an existing ``--json``/``--jsonl``/``--csv``
file is refused. Every file but the JSON Lines appears whole or not at all (written to a
temporary name, then renamed); the JSON Lines file is streamed on purpose.
"""
import csv
import json
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnvision.apps.faces import Face, FacePipeline, draw_faces
from cnnvision.apps.media import Frame, VideoWriter, aligned_crop, expand, photo_or_frames, video_rate
from cnnvision.errors import InputError
from cnnvision.files import atomic_open, free_name, refuse_existing, save_image, sweep_temporaries, write_json


def rle(mask: np.ndarray) -> list[int]:
    """Run lengths of a class map read row by row: value, count, value, count, ..."""
    flat = mask.ravel()
    edges = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], edges])
    counts = np.diff(np.concatenate([starts, [len(flat)]]))
    return [int(v) for pair in zip(flat[starts], counts) for v in pair]


def face_json(face: Face) -> dict:
    """The CLI's JSON of a face; with parts, the crop's class map run-length encoded."""
    out = face.to_json()
    if face.parts is not None:
        from cnnvision.data.parts import CLASSES
        out["parts"] = {"crop": [round(float(v), 1) for v in face.crop], "size": list(face.parts.shape),
                        "classes": list(CLASSES), "rle": rle(face.parts)}
    return out


@dataclass
class Outputs:
    """Where results go, opened once for the whole run."""
    out_dir: Path | None = None
    crops_dir: Path | None = None
    json_path: str | None = None
    jsonl: object = None
    csv_writer: object = None
    collected: dict = field(default_factory=dict)
    used: set = field(default_factory=set)
    videos: dict = field(default_factory=dict)  # source -> VideoWriter
    overwrite: bool = False  # replace files of the same names instead of numbering new ones

    def add(self, item: Frame, faces: list[Face]) -> None:
        found = [face_json(f) for f in faces]
        record = {"path": item.source, "faces": found} if item.frame is None else \
            {"path": item.source, "frame": item.frame, "time": item.time, "faces": found}
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        if self.json_path is not None:
            if item.frame is None:
                self.collected[item.source] = found
            else:
                self.collected.setdefault(item.source, []).append({k: record[k] for k in ("frame", "time", "faces")})
        if self.csv_writer is not None:
            for k, f in enumerate(faces):
                self.csv_writer.writerow([item.source, "" if item.frame is None else item.frame, k,
                                          *[f"{v:.1f}" for v in f.box], f"{f.score:.4f}",
                                          *[f"{v:.2f}" for v in np.asarray(f.keypoints).ravel()]])
        stem = Path(item.source).stem + ("" if item.frame is None else f"_{item.frame:06d}")
        if self.crops_dir is not None:
            for k, f in enumerate(faces):
                name = free_name(self.crops_dir, f"{stem}_face{k}", ".png", self.used, self.overwrite)
                save_image(aligned_crop(item.image, np.asarray(f.keypoints)), self.crops_dir / f"{name}.png")
        if self.out_dir is not None:
            drawn = draw_faces(item.image, faces)
            if item.frame is None:
                name = free_name(self.out_dir, stem + "_faces", ".png", self.used, self.overwrite)
                save_image(drawn, self.out_dir / f"{name}.png")
            else:
                writer = self.videos.get(item.source)
                if writer is None:
                    name = free_name(self.out_dir, Path(item.source).stem + "_faces", ".mp4", self.used, self.overwrite)
                    writer = self.videos[item.source] = VideoWriter(self.out_dir / f"{name}.mp4",
                                                                    video_rate(item.source), *drawn.size)
                writer.write(drawn)

    def close_video(self, source: str) -> None:
        writer = self.videos.pop(source, None)
        if writer is not None:
            writer.close()

    def abort_videos(self) -> None:
        """After an error or an interrupt: no half-written video is left behind."""
        for writer in self.videos.values():
            writer.abort()
        self.videos.clear()


CSV_HEADER = ["path", "frame", "face", "x0", "y0", "x1", "y1", "score"] + [f"{c}{i}" for i in range(68) for c in "xy"]


def run_predict(inputs: list[str], pipeline: FacePipeline, out_dir: str | None = None, json_path: str | None = None,
                jsonl_path: str | None = None, csv_path: str | None = None, crops_dir: str | None = None,
                every: int = 1, max_frames: int | None = None, batch: int = 16, stdout=None, stderr=None,
                overwrite: bool = False) -> dict:
    """Run the pipeline over every input; returns counts: ``photos``, ``frames``, ``faces`` and the
    ``skipped`` inputs (each already named on ``stderr`` with its reason)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if every < 1:
        raise InputError(f"--every {every}: must be 1 or more")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"--max-frames {max_frames}: must be 1 or more")
    for flag, given in (("--out", out_dir), ("--crops", crops_dir)):
        if given is not None:
            folder = Path(given)
            if folder.exists() and not folder.is_dir():
                raise InputError(f"{flag} {given}: is a file, expected a folder")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"{flag} {given}: cannot create the folder ({e.strerror})") from None
            sweep_temporaries(folder)  # what an earlier, killed run left half-written
    for flag, given in (("--json", json_path), ("--jsonl", jsonl_path), ("--csv", csv_path)):
        if given not in (None, "-") and Path(given).is_dir():
            raise InputError(f"{flag} {given}: is a folder, expected a file name")
        refuse_existing(given, flag, overwrite)
    counts = {"photos": 0, "frames": 0, "faces": 0, "skipped": 0}
    with ExitStack() as stack:
        jsonl = None if jsonl_path is None else stdout if jsonl_path == "-" else \
            stack.enter_context(open_output(jsonl_path, "--jsonl"))
        table = None
        if csv_path is not None:
            into = stdout if csv_path == "-" else stack.enter_context(open_output(csv_path, "--csv", "", whole=True))
            table = csv.writer(into)
            table.writerow(CSV_HEADER)
        outs = Outputs(Path(out_dir) if out_dir else None, Path(crops_dir) if crops_dir else None, json_path,
                       jsonl, table, overwrite=overwrite)
        stack.callback(outs.abort_videos)  # runs last; videos finished normally are no longer there
        pending: list[Frame] = []

        def flush():
            if not pending:
                return
            for item, faces in zip(pending, pipeline.predict([p.image for p in pending])):
                outs.add(item, faces)
                counts["faces"] += len(faces)
                counts["frames" if item.frame is not None else "photos"] += 1
            pending.clear()

        for path in expand(inputs):
            video = False
            try:
                for item in photo_or_frames(path, every, max_frames):
                    video = video or item.frame is not None
                    pending.append(item)
                    if len(pending) >= batch:
                        flush()
            except InputError as e:
                counts["skipped"] += 1
                print(f"cnnvision predict: skipped {e}", file=stderr)
            if video and outs.out_dir is not None:  # finish its annotated copy before the next input
                flush()
                outs.close_video(path)
        flush()
        for source in list(outs.videos):
            outs.close_video(source)
    if json_path == "-":
        stdout.write(json.dumps(outs.collected) + "\n")
    elif json_path is not None:
        write_json(json_path, outs.collected)
    return counts


def open_output(path: str, flag: str, newline: str | None = None, whole: bool = False):
    """An output file: streamed where asked, line by line (a killed run keeps its lines), or with
    ``whole`` a context that writes a temporary file and renames it when the run is done."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if whole:
            sweep_temporaries(Path(path).parent)
            return atomic_open(path, "w", newline=newline)
        return open(path, "w", newline=newline)
    except OSError as e:
        raise InputError(f"{flag} {path}: cannot write ({e.strerror})") from None

