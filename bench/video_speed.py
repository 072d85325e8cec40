"""Frames per second and per-track identity accuracy of `tripletface watch` against the
face_recognition video example's method, on a test video built here from real faces.

The video (640 x 480, 25 fps, 60 s by default, written to a temporary folder and deleted): faces
of 3 ORL persons (AT&T; Samaria and Harter 1994) and 6 CelebA persons (celeba299; Liu et al.,
ICCV 2015), 6 of them enrolled (one photo each, not shown in the video) and 3 not, coming in
from the side, moving, zooming (face 80 to 130 px) and leaving; one face per quarter of the frame,
so up to 4 at once, and the truth known for every appearance and frame.

- tripletface: ``tripletface watch VIDEO --gallery G --events E.jsonl``, a fresh process, timed
  end to end (start-up included); its per-frame faces for the accuracy come from the same
  pipeline through the Python API (``Watch``), run once.
- face_recognition (its ``facerec_from_video_file.py`` method): on every frame
  ``face_locations`` (HOG, upsampled once), ``face_encodings``, then ``compare_faces`` at the
  example's tolerance 0.50, the nearest accepted person named (as in its webcam examples). It
  takes about 0.4 s a frame here (this script prints its frames per second), so it is timed on
  every 10th frame of the whole video (a face's cost does not depend on the frames before it: no
  state) and its frames per second are extrapolated from those frames; its accuracy too is
  measured on those frames.

Per-track identity accuracy: an appearance of a person counts as right when the name shown most
often on it (over the frames where its face is wholly in the frame and some box is shown on it)
is its name, or "unknown" for a person not enrolled; an appearance never boxed is wrong. Rounds
interleave one tripletface run with a third of the face_recognition frames; medians are given.
The machine is shared: the load average is printed before and after.

    python bench/video_speed.py [--seconds 60] [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from tripletface.data.images import load_image
from tripletface.faces.detect import FaceDetector

sys.path.insert(0, str(Path(__file__).parent))
from identify_speed import SHIM

DATA = Path(__file__).resolve().parent.parent / ".." / "shared" / "data"
WIDTH, HEIGHT, RATE = 640, 480, 25
MARGIN = 0.3  # of the face box, on each side, in a face's sprite
SAMPLE = 10  # face_recognition runs on every SAMPLE-th frame

BASELINE = """
import json, sys, time
import av, numpy as np, face_recognition
from PIL import Image
video, known_file, frames_file, out = sys.argv[1:5]
known = json.load(open(known_file))
names = [k["name"] for k in known]
encodings = [face_recognition.face_encodings(np.asarray(Image.open(k["photo"]).convert("RGB")))[0]
             for k in known]
wanted = set(json.load(open(frames_file)))
results, spent = {}, 0.0
with av.open(video) as container:
    for index, frame in enumerate(container.decode(video=0)):
        if index not in wanted:
            continue
        rgb = frame.to_ndarray(format="rgb24")
        start = time.perf_counter()
        locations = face_recognition.face_locations(rgb)
        found = face_recognition.face_encodings(rgb, locations)
        faces = []
        for (top, right, bottom, left), encoding in zip(locations, found):
            matches = face_recognition.compare_faces(encodings, encoding, tolerance=0.50)
            distances = face_recognition.face_distance(encodings, encoding)
            best = int(np.argmin(distances))
            faces.append([[left, top, right, bottom], names[best] if matches[best] else None])
        spent += time.perf_counter() - start
        results[index] = faces
json.dump({"seconds": spent, "frames": results}, open(out, "w"))
"""


@dataclass(frozen=True)
class Person:
    name: str
    enrolled: bool
    enroll_photo: np.ndarray
    sprites: list[tuple[np.ndarray, tuple[float, float, float, float]]]  # (image, face box)

    @property
    def label(self) -> str | None:
        """The name a recogniser should give: none for a person not enrolled."""
        return self.name if self.enrolled else None


@dataclass(frozen=True)
class Appearance:
    person: Person
    sprite: int
    quarter: tuple[int, int]
    start: float
    end: float
    zoom_phase: float

    def face_box(self, t: float) -> tuple[tuple[float, ...], float, tuple[int, int]]:
        """(face box in the frame, sprite scale, sprite top-left) at time t."""
        image, (fl, ft, fr, fb) = self.person.sprites[self.sprite]
        qx, qy = self.quarter
        u = (t - self.start) / (self.end - self.start)
        side = 105 + 25 * np.sin(2 * np.pi * (u + self.zoom_phase))  # zooming 80-130 px
        scale = side / (fr - fl)
        w, h = image.shape[1] * scale, image.shape[0] * scale
        home_x = qx * 320 + 160 + 40 * np.sin(3 * np.pi * u)
        outside = -w / 2 if qx == 0 else WIDTH + w / 2
        walk = min(1.0, (t - self.start) / 1.2, (self.end - t) / 1.2)  # in 1.2 s, out in 1.2 s
        cx = outside + (home_x - outside) * max(walk, 0.0)
        cy = qy * 240 + 120 + 15 * np.sin(2 * np.pi * u)
        left, top = round(cx - w / 2), round(cy - h / 2)
        box = (left + fl * scale, top + ft * scale, left + fr * scale, top + fb * scale)
        return box, scale, (left, top)


def one_face(detector: FaceDetector, image: np.ndarray):
    faces = detector.detect(image)
    return faces[0].box if len(faces) == 1 and faces[0].box[2] - faces[0].box[0] >= 60 else None


def sprite_of(image: np.ndarray, box) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The face with MARGIN around it, and the face box inside that crop."""
    left, top, right, bottom = box
    mx, my = MARGIN * (right - left), MARGIN * (bottom - top)
    x0, y0 = max(0, int(left - mx)), max(0, int(top - my))
    x1, y1 = min(image.shape[1], int(right + mx)), min(image.shape[0], int(bottom + my))
    return image[y0:y1, x0:x1].copy(), (left - x0, top - y0, right - x0, bottom - y0)


def persons(detector: FaceDetector) -> list[Person]:
    """3 ORL and 6 CelebA persons with a usable photo to enroll and 3 to show."""
    chosen = []
    for folder, limit, enlarge in ((DATA / "orl", 3, 2), (DATA / "celeba299", 6, 1)):
        for person in sorted(p for p in folder.iterdir() if p.is_dir()):
            usable = []
            for photo in sorted(person.iterdir()):
                image = load_image(photo)
                if enlarge > 1:
                    size = (image.shape[1] * enlarge, image.shape[0] * enlarge)
                    image = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
                box = one_face(detector, image)
                if box is not None:
                    usable.append((image, box))
                if len(usable) == 4:
                    break
            if len(usable) == 4:
                enroll = usable[0][0]
                sprites = [sprite_of(image, box) for image, box in usable[1:]]
                chosen.append((f"{folder.name}-{person.name}", enroll, sprites))
            if sum(name.startswith(folder.name) for name, _, _ in chosen) == limit:
                break
    # Two thirds enrolled: the first two of ORL's, the first four of CelebA's.
    unknown = {chosen[2][0], chosen[7][0], chosen[8][0]}
    return [Person(n, n not in unknown, e, s) for n, e, s in chosen]


def schedule(people: list[Person], seconds: float, rng) -> list[Appearance]:
    """Appearances of 4-9 s in each quarter of the frame, with gaps, nobody twice at once."""
    out: list[Appearance] = []
    for quarter in ((0, 0), (1, 0), (0, 1), (1, 1)):
        t = rng.uniform(0, 2)
        while t < seconds - 4:
            end = min(t + rng.uniform(4, 9), seconds)
            busy = {a.person.name for a in out if a.start < end and t < a.end}
            free = [p for p in people if p.name not in busy]
            person = free[rng.integers(len(free))]
            sprite = int(rng.integers(len(person.sprites)))
            out.append(Appearance(person, sprite, quarter, t, end, float(rng.uniform())))
            t = end + rng.uniform(0.3, 2.0)
    return out


def build_video(path: Path, appearances: list[Appearance], seconds: float, rng) -> dict:
    """Write the video; the truth: frame index -> [(appearance index, face box)] fully shown."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack(
        [90 + 40 * np.sin(xs / 70), 100 + 30 * np.cos(ys / 50), 120 + 0 * xs], axis=-1
    ).astype(np.uint8)
    truth = {}
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=RATE)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    for index in range(round(seconds * RATE)):
        t = index / RATE
        frame = background.copy()
        shown = []
        for k, appearance in enumerate(appearances):
            if not appearance.start <= t < appearance.end:
                continue
            box, scale, (left, top) = appearance.face_box(t)
            image = appearance.person.sprites[appearance.sprite][0]
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            sprite = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            x0, y0 = max(left, 0), max(top, 0)
            x1, y1 = min(left + size[0], WIDTH), min(top + size[1], HEIGHT)
            if x1 > x0 and y1 > y0:
                frame[y0:y1, x0:x1] = sprite[y0 - top : y1 - top, x0 - left : x1 - left]
            if box[0] >= 0 and box[1] >= 0 and box[2] <= WIDTH and box[3] <= HEIGHT:
                shown.append((k, box))
        truth[index] = shown
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return truth


def accuracy(truth: dict, shown: dict, appearances: list[Appearance]) -> dict:
    """How right the names shown are: appearances named right and judged, their errors by kind,
    and face-frames named right of those judged.

    shown: frame index -> [(box, name or None)]; only the frames in it are judged."""
    votes: dict[int, Counter] = {k: Counter() for k in range(len(appearances))}
    judged, right_frames, face_frames = set(), 0, 0
    for index, faces in shown.items():
        for k, box in truth[index]:
            judged.add(k)
            names = [
                name
                for (left, top, right, bottom), name in faces
                if box[0] <= (left + right) / 2 <= box[2] and box[1] <= (top + bottom) / 2 <= box[3]
            ]
            face_frames += 1
            if names:
                votes[k][names[0]] += 1
                right_frames += names[0] == appearances[k].person.label
    errors = Counter()
    for k in judged:
        label = appearances[k].person.label
        given = votes[k].most_common(1)[0][0] if votes[k] else "missed"
        if given != label:
            kind = "missed" if given == "missed" else "enrolled named unknown"
            if given not in ("missed", None):
                kind = "unknown named" if label is None else "named as another"
            errors[kind] += 1
    return {
        "right": len(judged) - sum(errors.values()),
        "judged": len(judged),
        "errors": dict(errors),
        "frames_right": right_frames / max(face_frames, 1),
        "frames": face_frames,
    }


def ours_api(video: Path, gallery: Path) -> dict:
    """Per-frame faces shown by the same pipeline, through the API."""
    from tripletface.recognize import FaceRecognizer
    from tripletface.video import Watch

    rec = FaceRecognizer(gallery, detector="hog", read_only=True)
    shown = {}
    with Watch(rec, video) as session:
        for result in session:
            shown[result.index] = [(f.box, f.name) for f in result.faces]
    return shown


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{load()} at start; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"cores: {os.cpu_count()}; the machine is shared with other jobs")
    rng = np.random.default_rng(args.seed)
    people = persons(FaceDetector("hog"))
    appearances = schedule(people, args.seconds, rng)
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="video_speed.") as work:
        work = Path(work)
        video = work / "people.mp4"
        truth = build_video(video, appearances, args.seconds, rng)
        frames = len(truth)
        most = max(len(v) for v in truth.values())
        enrolled = [p for p in people if p.enrolled]
        print(
            f"video: {WIDTH} x {HEIGHT}, {RATE} fps, {args.seconds:.0f} s ({frames} frames), "
            f"{len(people)} persons ({len(enrolled)} enrolled), {len(appearances)} appearances, "
            f"up to {most} faces wholly in the frame at once"
        )
        gallery = work / "people.db"
        known = []
        for person in enrolled:
            photo = work / f"{person.name}.png"
            Image.fromarray(person.enroll_photo).save(photo)
            known.append({"name": person.name, "photo": str(photo)})
            subprocess.run(
                [
                    str(bin_dir / "tripletface"),
                    "enroll",
                    person.name,
                    str(photo),
                    "--gallery",
                    str(gallery),
                    "--detector",
                    "hog",
                ],
                check=True,
                capture_output=True,
            )
        (work / "known.json").write_text(json.dumps(known))
        (work / "baseline.py").write_text(BASELINE)
        (work / "shim").mkdir()
        (work / "shim" / "pkg_resources.py").write_text(SHIM)
        env = {**os.environ, "PYTHONPATH": str(work / "shim")}
        sampled = list(range(0, frames, SAMPLE))
        ours_times, theirs_per_frame, theirs_shown = [], [], {}
        for r in range(args.rounds):
            start = time.perf_counter()
            subprocess.run(
                [
                    str(bin_dir / "tripletface"),
                    "watch",
                    str(video),
                    "--gallery",
                    str(gallery),
                    "--events",
                    str(work / "events.jsonl"),
                ],
                check=True,
                capture_output=True,
            )
            ours_times.append(time.perf_counter() - start)
            part = sampled[r :: args.rounds]
            (work / "frames.json").write_text(json.dumps(part))
            subprocess.run(
                [
                    sys.executable,
                    str(work / "baseline.py"),
                    str(video),
                    str(work / "known.json"),
                    str(work / "frames.json"),
                    str(work / "out.json"),
                ],
                check=True,
                capture_output=True,
                env=env,
            )
            result = json.loads((work / "out.json").read_text())
            theirs_per_frame.append(result["seconds"] / len(part))
            theirs_shown.update({int(k): v for k, v in result["frames"].items()})
            print(
                f"round {r + 1}: tripletface {frames / ours_times[-1]:.1f} fps; face_recognition "
                f"{1 / theirs_per_frame[-1]:.2f} fps on {len(part)} frames; {load()}"
            )
        ours_fps = frames / statistics.median(ours_times)
        theirs_fps = 1 / statistics.median(theirs_per_frame)
        events = [json.loads(line) for line in (work / "events.jsonl").read_text().splitlines()]
        ours_shown = ours_api(video, gallery)
    ours = accuracy(truth, ours_shown, appearances)
    theirs = accuracy(truth, {k: v for k, v in theirs_shown.items()}, appearances)
    ours_sampled = accuracy(truth, {k: ours_shown[k] for k in theirs_shown}, appearances)
    print()
    print("| | frames per second | per-track identity | face-frames named right |")
    print("|---|---:|---:|---:|")
    rows = [
        (
            f"tripletface watch (median of {args.rounds}, start-up included)",
            f"**{ours_fps:.1f}**",
            ours,
        ),
        ("same run, judged on face_recognition's frames only", "", ours_sampled),
        (f"face_recognition, every frame (timed on every {SAMPLE}th)", f"{theirs_fps:.2f}", theirs),
    ]
    for label, fps, score in rows:
        share = score["right"] / score["judged"]
        print(
            f"| {label} | {fps} | {score['right']}/{score['judged']} ({share:.1%}) | "
            f"{score['frames_right']:.1%} of {score['frames']} |"
        )
    print()
    for label, _, score in rows:
        print(f"errors per appearance, {label}: {score['errors'] or 'none'}")
    print()
    tracks = len(events) - 1
    print(
        f"speed-up {ours_fps / theirs_fps:.1f}x; real time (25 fps): "
        f"{'yes' if ours_fps >= RATE else 'no'}; tripletface made {tracks} tracks for "
        f"{len(appearances)} appearances"
    )
    print(f"{load()} at the end")


if __name__ == "__main__":
    main()
