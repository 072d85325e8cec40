"""The people in a video file, stream or camera: detected now and then, tracked in between.

    with Watch(rec, "door.mp4") as session:        # rec: a FaceRecognizer
        for result in session:                     # one FrameResult per decoded frame
            result.faces                           # [FaceView(track, box, name, distance)]
            result.ended                           # [TrackEvent] of the tracks that just ended

Decoding is PyAV's (FFmpeg in its wheel): files, rtsp:// or http:// streams, /dev/video* cameras.
Detection (the recognizer's ``chips``: HOG boxes and aligned chips) runs in one forked worker
process on the second core while this one follows every face with dlib's correlation tracker
(Danelljan et al., "Accurate Scale Estimation for Robust Visual Tracking", BMVC 2014), updated
every other frame. A detection lands a few frames after the frame it was made on: it is matched to
the tracks as they were on that frame, and its box is moved by as much as the track has moved
since; a new face's tracker starts on that frame and runs over the frames since. Faces are
embedded when their track starts, when boxes are ambiguous and once every ``embed_every``
seconds; ``tracking.Tracker`` decides the rest, names included.
"""

import math
import multiprocessing as mp
import os
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import av
import av.error
import dlib
import numpy as np
from PIL import Image

from tripletface.cache import create_temporary_beside, move_into_place, write_atomic
from tripletface.data.images import draw_labelled_boxes
from tripletface.errors import GalleryError, GalleryUnavailable, InputError, TripletfaceError
from tripletface.faces.extract import ChipMaker
from tripletface.outputs import cannot_write, os_reason, output_folder
from tripletface.tracking import Box, Tracker, TrackEvent, box_iou
from tripletface.workers import worker_pool

# Network streams give up after this many seconds without data (opening, then each read).
STREAM_TIMEOUT = 10.0
# Seconds of a live source between two tries of a gallery database that cannot be reached:
# each try may wait for the connection's timeout, while the frames wait.
GALLERY_RETRY = 5.0
# A file whose frames stop this much before its stated duration is truncated.
_END_SLACK = 0.5
# A detection still running this many times detect_every frames after its frame is waited
# for: beyond that faces would move too far from their boxes, and new ones be found late.
_MAX_LAG = 2
# A face's tracker is restarted on its detected box when they overlap less than this.
_RESTART_IOU = 0.7
# Times closer than this are the same instant (frame times are rounded from timestamps).
_TICK = 1e-6
# Tracks missed by more detection rounds than this in a row are followed but not drawn.
_HIDE_AFTER = 1
# Output containers for --annotate, by suffix; all take H.264.
_OUTPUT_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


def source_kind(source: str) -> str:
    """The kind of a source: "camera" (/dev/video*), "stream" (a URL) or "file"."""
    if source.startswith("/dev/"):
        return "camera"
    return "stream" if "://" in source else "file"


class VideoSource:
    """A video opened with PyAV: ``frames()`` yields (seconds from its start, H x W x 3 uint8 RGB).

    Raises InputError naming the source for a missing file or camera, something that is not a
    video, and a video that breaks off: mid-file, before its stated duration, or (a camera or a
    live stream) at all, since those only end when asked to.
    """

    def __init__(self, source: str | Path, start: float = 0.0, duration: float | None = None):
        self.name = str(source)
        self.kind = source_kind(self.name)
        self.start = float(start)
        self.duration = duration
        if self.kind != "stream" and not Path(self.name).exists():
            what = "camera (see ls /dev/video*)" if self.kind == "camera" else "file"
            raise InputError(f"{self.name}: no such {what}")
        self._open()
        self.rate = _frame_rate(self._stream)
        self.length = self._length()
        # A local file is never live, whatever its format (raw H.264 or MJPEG state no length);
        # a URL is, unless it states a length (a recording served over HTTP).
        self.live = self.kind == "camera" or (self.kind == "stream" and self.length is None)
        self.elapsed = 0.0
        if not self.live and self.length is not None and self.start >= self.length:
            self._container.close()
            raise self._past_end(self.length)

    def _open(self) -> None:
        """Open the source and its first video stream; InputError naming it if it cannot be."""
        options, timeout, kind = {}, None, None
        if self.kind == "camera":
            kind = "v4l2"
        elif self.kind == "stream":
            options = {"rtsp_transport": "tcp"} if self.name.startswith("rtsp") else {}
            timeout = (STREAM_TIMEOUT, STREAM_TIMEOUT)
        try:
            self._container = av.open(self.name, format=kind, options=options, timeout=timeout)
        except (av.error.FFmpegError, OSError) as error:
            raise InputError(
                f"{self.name}: cannot read it as a video ({os_reason(error)})"
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{self.name}: has no video stream")
        self._stream = self._container.streams.video[0]

    def _length(self) -> float | None:
        """Seconds the source says it lasts, None for a live one."""
        if self.kind == "camera":
            return None
        stream = self._stream
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        if self._container.duration:
            return self._container.duration / av.time_base
        return None

    @property
    def frame_count(self) -> int | None:
        """Frames expected between start and end, for a progress bar; None if unknown."""
        if self.length is None:
            return None
        end = self.length if self.duration is None else min(self.length, self.start + self.duration)
        return max(0, round((end - self.start) * self.rate))

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """(seconds, RGB frame) from ``start`` for ``duration`` seconds, or to the end."""
        if self.start > 0 and not self.live:
            self._seek(self.start)
        end = math.inf if self.duration is None else self.start + self.duration
        origin = None
        decoded = shown = 0
        try:
            for frame in self._container.decode(self._stream):
                if origin is None:
                    origin = self._origin(frame)
                # Raw H.264 has no timestamps: its frames come at the rate it announces.
                time = frame.time - origin if frame.time is not None else decoded / self.rate
                decoded += 1
                if time < self.start - _TICK:
                    continue
                if time >= end - _TICK:
                    return
                self.elapsed = time
                shown += 1
                yield time, frame.to_ndarray(format="rgb24")
        except (av.error.FFmpegError, OSError) as error:
            raise InputError(
                f"{self.name}: the video breaks off at {self.elapsed:.2f} s ({os_reason(error)}); "
                "what came before is kept"
            ) from None
        if self.live:
            raise InputError(f"{self.name}: the stream stopped at {self.elapsed:.2f} s")
        # Every frame came before start: a file that states no length, or a start in its last frame.
        if decoded and not shown:
            raise self._past_end(time + 1 / self.rate)
        if (
            self.length is not None
            and self.elapsed + 1 / self.rate < min(self.length, end) - _END_SLACK
        ):
            raise InputError(
                f"{self.name}: the video ends at {self.elapsed:.2f} s of {self.length:.2f} s "
                "(truncated or damaged); what came before is kept"
            )

    def _past_end(self, length: float) -> InputError:
        """The error for a start at or after the end of a file ``length`` seconds long."""
        return InputError(
            f"{self.name}: --start {self.start:.10g} s is past the end of the video "
            f"({length:.2f} s long); give an earlier --start"
        )

    def _origin(self, frame) -> float:
        """The time of the source's first frame: 0 of the seconds reported."""
        stream = self._stream
        if self.live or frame.time is None:
            return frame.time or 0.0
        return float(stream.start_time * stream.time_base) if stream.start_time else 0.0

    def _seek(self, seconds: float) -> None:
        """Move to the last key frame before ``seconds``; where the file cannot seek (raw H.264
        has no index), to its start: ``frames`` decodes and skips the frames before."""
        try:
            self._container.seek(int(seconds * av.time_base), backward=True)
        except (av.error.FFmpegError, OSError):
            # The failed seek left the demuxer at the end of the file.
            self._container.close()
            self._open()

    def close(self) -> None:
        """Release the file, stream or camera."""
        self._container.close()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _frame_rate(stream) -> float:
    """Frames per second the stream announces (25 when it announces none)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 25.0


@dataclass(frozen=True)
class FaceView:
    """A face on a frame: its track, box (left, top, right, bottom), name so far, distance."""

    track: int
    box: tuple[int, int, int, int]
    name: str | None
    distance: float | None


@dataclass(frozen=True)
class FrameResult:
    """One decoded frame: index, seconds, RGB pixels, the faces shown, the tracks just ended."""

    index: int
    time: float
    image: np.ndarray = field(repr=False)
    faces: list[FaceView]
    ended: list[TrackEvent]


class _Detections:
    """The recognizer's chip maker run on one frame at a time, in a forked worker process
    (dlib holds the GIL while it detects), or in this process when ``parallel`` is False."""

    def __init__(self, maker: ChipMaker, parallel: bool) -> None:
        self.maker = maker
        self._pool = None
        if parallel and "fork" in mp.get_all_start_methods():
            self._pool = worker_pool(1)  # its worker dies with this process, also on kill -9
            self._pool.submit(int).result()  # fork now, before the decoder starts its threads
        self.pending: tuple[int, float, np.ndarray, dict, Future] | None = None

    def submit(self, index: int, time: float, frame: np.ndarray, at: dict[int, Box]) -> None:
        if self._pool is not None:
            future = self._pool.submit(self.maker, frame)
        else:
            future = Future()
            future.set_result(self.maker(frame))
        self.pending = (index, time, frame, at, future)

    def take(self, wait: bool):
        """The pending detection (index, time, frame, track boxes then, (boxes, chips)) if it is
        done, or once done when ``wait``; else None."""
        if self.pending is None or not (wait or self.pending[-1].done()):
            return None
        *made, future = self.pending
        self.pending = None
        return (*made, future.result())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def snapshots_folder(path: str | Path, option: str = "snapshots") -> Path:
    """The folder ``Watch`` saves snapshots into, made now with its parents; InputError naming
    ``option`` and ``path`` if it cannot be. Watch's one check, which a caller that loads a
    model first (the CLI) makes before it, to fail in a moment rather than seconds."""
    return output_folder(path, option)


class Watch:
    """Recognise the people of a video source with a FaceRecognizer; iterate for FrameResults.

    The source opens at construction (InputError at once if it cannot be read). detect_every:
    frames between the starts of two detections at least; track_every: frames between two
    updates of a face's correlation tracker (about 4 ms each), boxes moving on at their last
    speed in between; parallel: detect in a worker process
    (False: in this process, frame for frame the same on every run); snapshots: folder where the
    best crop of every unknown track is saved as PNG when it ends, made at construction
    (InputError at once if it cannot be); the ``Tracker`` options
    (``patience``, ``embed_every``, ...) go to ``tracker``. A decoding error, or a source that
    stops, ends the tracks first (their events come with the last FrameResult) and is raised
    after it. ``stop()`` (from a signal handler, say) ends the iteration cleanly after a frame.

    The gallery is followed as it changes: people enrolled or removed meanwhile are named or
    not from the next detection on, and nobody enrolled leaves every face unknown. A gallery
    database that cannot be reached is GalleryUnavailable at construction; later, a file's
    watch ends as if the video broke off, while a live source's goes on (a warning, then one
    when it is back; no names meanwhile beyond the votes tracks already had; tried again every
    ``GALLERY_RETRY`` seconds). ``started``: when the watch began, in the snapshots' names.
    """

    def __init__(
        self,
        recognizer,
        source: str | Path,
        start: float = 0.0,
        duration: float | None = None,
        detect_every: int = 5,
        track_every: int = 2,
        parallel: bool = True,
        snapshots: str | Path | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        if detect_every < 1:
            raise InputError(f"detect_every must be at least 1 frame, got {detect_every}")
        self.recognizer = recognizer
        self.tracker = tracker or Tracker(reid_distance=recognizer.threshold)
        self.detect_every = int(detect_every)
        self.track_every = max(1, int(track_every))
        self.snapshots = snapshots_folder(snapshots) if snapshots is not None else None
        # In the snapshots' names: track ids start at 1 on every run.
        self.started = datetime.now()
        # The gallery is followed as it changes: asked whether anyone is enrolled again only
        # once its generation moves. A gallery that cannot be reached now is raised now.
        self._generation: int | None = None
        self._enrolled = False
        self._anyone()
        # The database's outage under way (a live source watches on through it), and the
        # frame time from which it is tried again.
        self.outage: GalleryUnavailable | None = None
        self._retry = 0.0
        # HOG alone: "auto" falls back to the CNN on every frame without a face, seconds each.
        maker = recognizer.chips
        self._maker = replace(maker, detector="hog") if maker.detector == "auto" else maker
        self._parallel = parallel
        self.source = VideoSource(source, start, duration)
        self.rate = self.source.rate
        self._stopped = False

    def stop(self) -> None:
        """Finish after the frame being processed, as if the source had ended."""
        self._stopped = True

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stopped

    def __iter__(self) -> Iterator[FrameResult]:
        detections = _Detections(self._maker, self._parallel)
        trackers: dict[int, _Follower] = {}
        crops: dict[int, tuple[int, np.ndarray]] = {}
        held: FrameResult | None = None
        # The frames a pending detection may lag behind by, for new faces' trackers.
        recent: deque[tuple[int, np.ndarray]] = deque(maxlen=_MAX_LAG * self.detect_every + 1)
        last_submit = -self.detect_every
        failure: TripletfaceError | None = None
        try:
            for index, (time, frame) in enumerate(self.source.frames()):
                recent.append((index, frame))
                moved = {i: follower.follow(frame) for i, follower in trackers.items()}
                self.tracker.carry(moved)
                if detections.pending is None and index - last_submit >= self.detect_every:
                    at = {t.id: t.box for t in self.tracker.tracks}
                    detections.submit(index, time, frame, at)
                    last_submit = index
                lagging = index - last_submit >= _MAX_LAG * self.detect_every
                done = detections.take(wait=lagging)
                ended = self._detected(done, recent, trackers, crops) if done else []
                if held is not None:
                    yield held
                held = FrameResult(index, time, frame, self._faces(), ended)
                if self._stopped:
                    break
            done = detections.take(wait=True)  # the last frames' detection, still running
            if done is not None and held is not None:
                ended = self._detected(done, recent, trackers, crops)
                held = replace(held, ended=held.ended + ended)
        except TripletfaceError as error:
            failure = error
        finally:
            detections.close()
        # The source is over (or broke off): every track ends with the last frame.
        last = self.tracker.finish()
        self._save_snapshots(last, crops)
        if held is not None:
            yield replace(held, ended=held.ended + last)
        if failure is not None:
            raise failure

    def _detected(self, done, recent, trackers: dict, crops: dict) -> list[TrackEvent]:
        """Feed one detection round to the tracker; restart the followers on the faces found.
        recent: the last (index, frame) pairs decoded, this one last."""
        made, time, seen, at, (boxes, chips) = done
        later = [image for index, image in recent if index > made]
        frame = recent[-1][1]
        rec = self.recognizer
        wanted = self.tracker.wanted(time, boxes, at)
        embeddings: list = [None] * len(boxes)
        votes: list = [None] * len(boxes)
        rows = [j for j, want in enumerate(wanted) if want]
        if rows:
            # One thread: the detection worker holds the other core, and torch's threads
            # spin-waiting for a busy core made a few chips 10x slower (2 cores, loaded).
            with rec.runtime.threads(1):
                embedded = rec.embed(chips[rows])
            answers = self._answers(time, [boxes[j] for j in rows], embedded)
            for j, row, answer in zip(rows, embedded, answers, strict=True):
                embeddings[j], votes[j] = row, answer
        update = self.tracker.update(time, boxes, embeddings, votes, at)
        now = {t.id: t for t in self.tracker.tracks}
        for found, track_id in zip(boxes, update.joined, strict=True):
            track = now.get(track_id)
            if track is None:
                continue
            then, follower = at.get(track_id), trackers.get(track_id)
            if follower is None:
                # A new face, found a few frames ago: followed from there to this frame,
                # since it may have moved too far since for its box to overlap it.
                trackers[track_id] = _Follower(seen, found, self.track_every)
                trackers[track_id].catch_up(later)
            else:
                box = _shifted(found, then, follower.box) if then else found
                # Restarting a tracker costs about four updates: only when it has drifted.
                if box_iou(box, follower.box)[0, 0] < _RESTART_IOU:
                    trackers[track_id] = _Follower(frame, box, self.track_every)
            track.box = trackers[track_id].box
            area = (found[2] - found[0]) * (found[3] - found[1])
            if self.snapshots is not None and area > crops.get(track_id, (0, None))[0]:
                crops[track_id] = (area, _crop(seen, found))
        for event in update.ended:
            trackers.pop(event.track, None)
        self._save_snapshots(update.ended, crops)
        return update.ended

    def _answers(
        self, time: float, boxes: list[Box], embedded: np.ndarray
    ) -> list[tuple[str | None, float] | None]:
        """Each face's vote (name or None, distance) by the gallery as it is now; no vote
        (None) while nobody is enrolled or, for a live source, while the database is down."""
        if self.outage is not None and time < self._retry:
            return [None] * len(boxes)
        try:
            matches = self._matches(boxes, embedded)
        except GalleryUnavailable as error:
            if not self.source.live:
                raise  # a file can be watched again later, all of it named
            if self.outage is None:
                warnings.warn(
                    f"{error}; faces go unnamed until it is back, watching on", stacklevel=2
                )
            self.outage, self._retry = error, time + GALLERY_RETRY
            return [None] * len(boxes)
        if self.outage is not None:
            self.outage = None
            where = self.recognizer.gallery.location
            warnings.warn(f"{where}: the database is back: faces are named again", stacklevel=2)
        if matches is None:
            return [None] * len(boxes)
        return [(m.name, m.distance) for m in matches]

    def _matches(self, boxes: list[Box], embedded: np.ndarray) -> list | None:
        """The recognizer's Matches of the faces, or None while nobody is enrolled."""
        if not self._anyone():
            return None
        seen = self._generation
        try:
            return self.recognizer.match(boxes, embedded)
        except GalleryError as error:
            # Another process may have removed the last person between the check and the
            # search (an empty gallery): a failure only if the gallery did not change since.
            if isinstance(error, GalleryUnavailable) or self.recognizer.gallery.generation == seen:
                raise
            return None

    def _anyone(self) -> bool:
        """Whether anyone is enrolled in the gallery now (read again when it changed)."""
        gallery = self.recognizer.gallery
        generation = gallery.generation
        if generation != self._generation:
            self._generation, self._enrolled = generation, not gallery.is_empty()
        return self._enrolled

    def _faces(self) -> list[FaceView]:
        """The tracks detected lately, as drawn on the frame."""
        views = []
        for track in self.tracker.tracks:
            if track.misses <= _HIDE_AFTER:
                name, distance = track.name()
                box = tuple(round(v) for v in track.box)
                views.append(FaceView(track.id, box, name, distance))
        return views

    def _save_snapshots(self, ended: list[TrackEvent], crops: dict) -> None:
        """The best crop of each ended unknown track as SNAPSHOTS/SOURCE-STARTED-trackN.png
        (STARTED: the run's local time, YYYYmmdd-HHMMSS), or -2.png, -3.png... beside a file of
        that name: never over one."""
        for event in ended:
            best = crops.pop(event.track, None)
            if self.snapshots is not None and best is not None and event.name is None:
                stem = Path(self.source.name).stem or "video"
                name = f"{stem}-{self.started:%Y%m%d-%H%M%S}-track{event.track:05d}.png"
                pixels = Image.fromarray(best[1])
                write_atomic(
                    self.snapshots / name,
                    lambda stream, image=pixels: image.save(stream, format="PNG"),
                    sync=False,
                    replace=False,
                )

    def close(self) -> None:
        """Release the source."""
        self.source.close()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Follower:
    """dlib's correlation tracker on one face, updated on every ``every``-th frame; on the
    frames between, the box moves on at the speed the tracker last measured."""

    def __init__(self, frame: np.ndarray, box: Box, every: int) -> None:
        self._tracker = dlib.correlation_tracker()
        self._tracker.start_track(frame, dlib.drectangle(*box))
        self.box = self._tracked = tuple(box)
        self._velocity = (0.0, 0.0, 0.0, 0.0)
        self._every = every
        self._age = 0

    def follow(self, frame: np.ndarray) -> Box:
        """The box on the next frame."""
        self._age += 1
        if self._age % self._every == 0:
            before = self._tracked
            pairs = zip(self._update(frame), before, strict=True)
            self._velocity = tuple((a - b) / self._every for a, b in pairs)
        else:
            self.box = tuple(a + v for a, v in zip(self.box, self._velocity, strict=True))
        return self.box

    def catch_up(self, frames: list[np.ndarray]) -> Box:
        """The box on the last of the frames that followed, on which the tracker runs every
        ``every``-th frame counting back from the last; its speed is the mean over them."""
        if not frames:
            return self.box
        start = self._tracked
        for frame in frames[::-1][:: self._every][::-1]:
            self._update(frame)
        self._velocity = tuple((a - b) / len(frames) for a, b in zip(self.box, start, strict=True))
        return self.box

    def _update(self, frame: np.ndarray) -> Box:
        """Run the correlation tracker on the frame; the box it finds."""
        self._tracker.update(frame)
        p = self._tracker.get_position()
        self.box = self._tracked = (p.left(), p.top(), p.right(), p.bottom())
        return self.box


def _shifted(box: Box, then: Box, now: Box) -> Box:
    """A box detected on an earlier frame, moved and scaled as the track has since then."""
    scale = (now[2] - now[0]) / max(then[2] - then[0], 1e-6)
    cx = (box[0] + box[2]) / 2 + (now[0] + now[2] - then[0] - then[2]) / 2
    cy = (box[1] + box[3]) / 2 + (now[1] + now[3] - then[1] - then[3]) / 2
    half_w, half_h = (box[2] - box[0]) * scale / 2, (box[3] - box[1]) * scale / 2
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def _crop(frame: np.ndarray, box: Box, margin: float = 0.5) -> np.ndarray:
    """The face box widened by ``margin`` of its size on every side, within the frame: a crop
    in which a detector finds the face again (for tripletface enroll)."""
    height, width = frame.shape[:2]
    w, h = box[2] - box[0], box[3] - box[1]
    left, top = max(0, int(box[0] - margin * w)), max(0, int(box[1] - margin * h))
    right, bottom = min(width, int(box[2] + margin * w)), min(height, int(box[3] + margin * h))
    return frame[top:bottom, left:right].copy()


def draw_faces(image: np.ndarray, faces: list[FaceView]) -> np.ndarray:
    """A copy of the RGB frame with each face's box and name (green) or "unknown" (red)."""
    return draw_labelled_boxes(
        image,
        [face.box for face in faces],
        [f"{face.name or 'unknown'} #{face.track}" for face in faces],
        [face.name is not None for face in faces],
    )


class AnnotatedVideo:
    """H.264 video written frame by frame at a constant rate into a temporary file beside
    ``path``, which becomes ``path`` when closed, also after an error of the caller's: always
    playable. An OSError of its own (a full disk) removes the temporary instead, and is raised as
    a one-line InputError naming ``option`` (the argument that gave ``path``) and ``path``."""

    def __init__(self, path: str | Path, rate: float, option: str = "annotated video") -> None:
        self.path = Path(path)
        self.option = option
        self.format = _OUTPUT_FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise InputError(
                f"{self.path}: write the annotated video as {', '.join(_OUTPUT_FORMATS)}"
            )
        if not self.path.parent.is_dir():
            raise InputError(f"{self.path}: no such folder {self.path.parent}")
        self.rate = Fraction(rate).limit_denominator(1001)
        self.frames = 0
        self._container = None
        self._stream = None
        self._tmp: Path | None = None

    def write(self, image: np.ndarray) -> None:
        """Append one RGB frame (cropped to even sides, as 4:2:0 H.264 needs)."""
        image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]
        with self._abandoned_on_oserror():
            if self._container is None:
                self._open(image.shape[1], image.shape[0])
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        self.frames += 1

    def _open(self, width: int, height: int) -> None:
        """Create the temporary and its container, for frames of ``width`` x ``height``."""
        fd, self._tmp = create_temporary_beside(self.path)
        os.close(fd)
        self._container = av.open(str(self._tmp), "w", format=self.format)
        self._stream = self._container.add_stream("libx264", rate=self.rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.time_base = 1 / self.rate
        self._stream.options = {"preset": "veryfast", "crf": "23"}

    def close(self) -> None:
        """Flush the encoder, close the container and move it into place."""
        if self._container is None:
            return
        with self._abandoned_on_oserror():
            try:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            finally:
                container, self._container = self._container, None
                container.close()
            move_into_place(self._tmp, self.path)

    @contextmanager
    def _abandoned_on_oserror(self) -> Iterator[None]:
        """Run the block; if it raises an OSError, close the container (muxing into it again
        after a failed write crashes FFmpeg), remove the temporary and raise the InputError."""
        try:
            yield
        except OSError as error:
            container, self._container = self._container, None
            # Already failing: a second failure of the same disk would only hide the first.
            if container is not None:
                with suppress(OSError):
                    container.close()
            if self._tmp is not None:
                with suppress(OSError):
                    self._tmp.unlink(missing_ok=True)
            raise cannot_write(
                self.option, self.path, error, "make room or give another path"
            ) from None

    def __enter__(self) -> "AnnotatedVideo":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def events(
    recognizer, source: str | Path, frames: bool = False, **options
) -> Iterator[TrackEvent | FrameResult]:
    """TrackEvents of a video source as its tracks end and, with ``frames``, after them each
    FrameResult with its faces drawn on the image; ``options`` as for ``Watch``."""
    with Watch(recognizer, source, **options) as session:
        for result in session:
            yield from result.ended
            if frames:
                yield replace(result, image=draw_faces(result.image, result.faces))
