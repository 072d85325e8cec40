import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from rtsp_server import rtsp_stream
from videos import astronaut_head, decoded_frames, lfw_face, live_stream, truncate, write_video

from tripletface import video as video_module
from tripletface.cache import temporary_path
from tripletface.data.images import load_image
from tripletface.errors import GalleryUnavailable, InputError
from tripletface.faces.detect import FaceDetector
from tripletface.recognize import FaceRecognizer
from tripletface.tracking import Tracker, TrackEvent
from tripletface.video import (
    AnnotatedVideo,
    FrameResult,
    VideoSource,
    Watch,
    _Follower,
    source_kind,
)


@pytest.fixture(scope="module")
def rec(tmp_path_factory, astronaut) -> FaceRecognizer:
    """A recognizer whose gallery holds one person, the astronaut (Eileen Collins)."""
    gallery = tmp_path_factory.mktemp("gallery") / "people.db"
    recognizer = FaceRecognizer(gallery, detector="hog")
    recognizer.enroll("eileen", astronaut, largest=True)
    return recognizer


HEAD = astronaut_head(130)
OTHER = lfw_face(0, 120)


def walking(index: int):
    """The astronaut walking right and coming closer."""
    return [(astronaut_head(130 + index), 10 + 3 * index, 40)]


def crossing(index: int):
    """The astronaut walking right, another person walking left a little lower: they cross."""
    return [(HEAD, 5 + 5 * index, 10), (OTHER, 275 - 5 * index, 100)]


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "walk.mp4", 50, walking)


@pytest.fixture(scope="module")
def cross(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "cross.mkv", 50, crossing, (400, 240))


def run(rec, path, **options) -> list[FrameResult]:
    with Watch(rec, path, parallel=False, **options) as session:
        return list(session)


def ended(results: list[FrameResult]) -> list[TrackEvent]:
    return [event for result in results for event in result.ended]


def inside(box, sprite, left, top) -> bool:
    """Whether the centre of the box lies on the sprite drawn at (left, top)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return left <= cx <= left + sprite.shape[1] and top <= cy <= top + sprite.shape[0]


def test_one_person_is_one_track_named_once(rec, walk):
    results = run(rec, walk)
    assert [r.index for r in results] == list(range(50))
    assert [r.time for r in results] == pytest.approx([i / 25 for i in range(50)])
    (event,) = ended(results)
    assert event.name == "eileen" and event.distance <= rec.threshold
    assert event.first == 0 and event.last >= 1.6 and event.frames >= 40
    shown = [(r.index, f) for r in results for f in r.faces]
    assert len(shown) >= 45
    for index, face in shown:
        assert face.name == "eileen"
        assert inside(face.box, *walking(index)[0])  # the box follows the face


def test_between_detections_the_correlation_tracker_carries_the_box(rec, tmp_path):
    # 8 px a frame, detected every 10th: a box left where it was found would lag up to 72 px
    fast = write_video(tmp_path / "fast.mp4", 30, lambda i: [(HEAD, 10 + 8 * i, 40)], (400, 240))
    left, top, right, bottom = FaceDetector("hog").detect(HEAD)[0].box
    offsets = []
    for result in run(rec, fast, detect_every=10):
        for face in result.faces:
            dx = (face.box[0] + face.box[2] - left - right) / 2 - (10 + 8 * result.index)
            dy = (face.box[1] + face.box[3] - top - bottom) / 2 - 40
            offsets.append((result.index, dx, dy))
    assert len(offsets) == 30
    assert all(abs(dx) <= 12 and abs(dy) <= 6 for _, dx, dy in offsets), offsets


def test_a_face_found_frames_ago_is_followed_to_where_it_is_now(tmp_path):
    # a detection lands a few frames late (the worker): the face has moved on since
    moving = write_video(tmp_path / "m.mp4", 11, lambda i: [(HEAD, 10 + 6 * i, 40)], (400, 240))
    with VideoSource(moving) as source:
        frames = [frame for _, frame in source.frames()]
    left, top, right, bottom = FaceDetector("hog").detect(frames[0])[0].box
    follower = _Follower(frames[0], (left, top, right, bottom), every=2)
    box = follower.catch_up(frames[1:])
    assert (box[0] + box[2]) / 2 - (left + right) / 2 == pytest.approx(60, abs=8)
    assert (box[1] + box[3]) / 2 - (top + bottom) / 2 == pytest.approx(0, abs=6)
    assert follower.follow(frames[-1])[0] - box[0] == pytest.approx(6, abs=3)  # its speed


def test_crossing_faces_keep_their_tracks_and_names(rec, cross, tmp_path):
    results = run(rec, cross, snapshots=tmp_path)
    events = sorted(ended(results), key=lambda e: e.name is None)
    assert [e.name for e in events] == ["eileen", None]
    names = {e.track: e.name for e in events}
    for result in results:
        for face in result.faces:
            sprite, left, top = crossing(result.index)[0 if names[face.track] else 1]
            assert inside(face.box, sprite, left, top), (result.index, face)
    # the unknown face left its best crop, in which a detector finds it again, in the middle
    (snapshot,) = tmp_path.iterdir()
    assert re.fullmatch(rf"cross-\d{{8}}-\d{{6}}-track{events[1].track:05d}\.png", snapshot.name)
    crop = load_image(snapshot)
    left, top, right, bottom = FaceDetector("hog").detect(crop)[0].box  # the largest face
    height, width = crop.shape[:2]
    assert width / 4 < (left + right) / 2 < 3 * width / 4
    assert height / 4 < (top + bottom) / 2 < 3 * height / 4


def test_detection_in_a_worker_process_finds_the_same_people(rec, cross):
    with Watch(rec, cross, parallel=True) as session:
        events = ended(list(session))
    assert sorted(e.name or "" for e in events) == ["", "eileen"]


def test_the_api_yields_events_and_on_request_annotated_frames(rec, walk):
    items = list(rec.watch(walk, parallel=False))
    assert [type(item) for item in items] == [TrackEvent] and items[0].name == "eileen"
    raw = {r.index: r for r in run(rec, walk)}
    items = list(rec.watch(walk, frames=True, parallel=False))
    frames = [item for item in items if isinstance(item, FrameResult)]
    assert len(frames) == 50 and sum(isinstance(item, TrackEvent) for item in items) == 1
    drawn = frames[25]
    left, top, right, bottom = drawn.faces[0].box
    assert not np.array_equal(drawn.image, raw[25].image)
    assert (
        drawn.image[top + 5 : bottom - 5, left + 5 : right - 5]
        == raw[25].image[top + 5 : bottom - 5, left + 5 : right - 5]
    ).all()  # the face itself is untouched, the box drawn around it


def test_start_and_duration_select_a_part(rec, walk):
    results = run(rec, walk, start=0.4, duration=0.8)
    assert results[0].time == pytest.approx(0.4) and results[-1].time == pytest.approx(1.16)
    assert len(results) == 20


def test_with_nobody_enrolled_every_face_is_unknown(tmp_path, walk):
    empty = FaceRecognizer(tmp_path / "empty.db", detector="hog")
    (event,) = ended(run(empty, walk))
    assert event.name is None and event.distance is None


def test_annotated_video_is_h264_at_the_given_rate_and_appears_whole(tmp_path):
    out = tmp_path / "out.mp4"
    with AnnotatedVideo(out, 30) as video:
        for i in range(30):
            video.write(np.full((121, 161, 3), 8 * i, np.uint8))  # odd sides are cropped
            assert not out.exists()  # written beside it until closed
    assert decoded_frames(out) == (30, 30.0)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (160, 120)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    with pytest.raises(InputError, match=r"out\.gif.*\.mp4"):
        AnnotatedVideo(tmp_path / "out.gif", 25)


def temporary_on_a_full_disk(path: Path) -> tuple[int, Path]:
    """``create_temporary_beside`` on a full disk: the temporary is a link to /dev/full."""
    tmp = temporary_path(path)
    tmp.symlink_to("/dev/full")
    return os.open(tmp, os.O_WRONLY), tmp


@pytest.mark.parametrize("suffix, frames", [(".mp4", 30), (".mkv", 2)])
def test_an_annotated_video_on_a_full_disk_is_refused_and_leaves_nothing(
    tmp_path, monkeypatch, suffix, frames
):
    """MP4 finds the disk full at its first packet, in write(); two frames of Matroska only
    when close() flushes them."""
    monkeypatch.setattr(video_module, "create_temporary_beside", temporary_on_a_full_disk)
    out = tmp_path / f"out{suffix}"
    failure = rf"^annotated video {re.escape(str(out))}: cannot write there \(No space left"
    with pytest.raises(InputError, match=failure), AnnotatedVideo(out, 25) as video:
        for i in range(frames):
            video.write(np.full((120, 160, 3), 8 * i, np.uint8))
    assert list(tmp_path.iterdir()) == []  # no half-written video, no temporary


def test_source_kinds():
    assert source_kind("/dev/video0") == "camera"
    assert source_kind("rtsp://10.0.0.2/live") == "stream"
    assert source_kind("clips/door.webm") == "file"


def test_missing_files_cameras_and_non_videos_are_named(rec, tmp_path, walk):
    with pytest.raises(InputError, match=r"nope\.mp4: no such file"):
        Watch(rec, tmp_path / "nope.mp4")
    with pytest.raises(InputError, match=r"/dev/video97: no such camera"):
        VideoSource("/dev/video97")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(InputError, match=r"notes\.mp4: cannot read it as a video"):
        VideoSource(text)
    # an mp4 cut short lacks its index (written last): it cannot be read at all
    with pytest.raises(InputError, match=r"cut\.mp4: cannot read it as a video"):
        VideoSource(truncate(walk, tmp_path / "cut.mp4"))


def test_a_snapshots_folder_that_cannot_be_made_is_named(rec, tmp_path, walk):
    taken = tmp_path / "afile"
    taken.touch()
    with pytest.raises(InputError, match=r"^snapshots .*afile/faces: cannot write there \(Not a"):
        Watch(rec, walk, snapshots=taken / "faces")


def test_a_truncated_video_ends_its_tracks_then_fails(rec, tmp_path, cross):
    cut = truncate(cross, tmp_path / "cut.mkv", 0.6)
    session = Watch(rec, cut, parallel=False)
    results = []
    with pytest.raises(InputError, match=r"cut\.mkv: the video ends at .* of 2\.00 s"):
        for result in session:
            results.append(result)
    assert 5 < len(results) < 50
    events = ended(results)
    assert {e.name for e in events} == {"eileen", None}
    assert all(e.last <= results[-1].time for e in events)


@contextlib.contextmanager
def stream_that_stops(kind: str, folder: Path) -> Iterator[str]:
    """The URL of a live stream of the astronaut walking that stops before 60 frames: over
    HTTP, cut off half way; over RTSP, its publisher done after 40 frames."""
    if kind == "http":
        data = write_video(folder / "live.ts", 60, walking).read_bytes()
        with live_stream(data[: len(data) // 2]) as (url, _):
            yield url
    else:
        with rtsp_stream(write_video(folder / "live.ts", 40, walking), speed=2) as url:
            yield url


@pytest.mark.parametrize("kind", ["http", "rtsp"])
def test_a_stream_that_stops_ends_its_tracks_then_fails(rec, tmp_path, kind):
    with stream_that_stops(kind, tmp_path) as url:
        assert url.startswith(f"{kind}://")
        session = Watch(rec, url, parallel=False)
        assert session.source.live
        results = []
        with pytest.raises(InputError, match=f"{url}: the (video breaks off|stream stopped)"):
            for result in session:
                results.append(result)
    assert 5 < len(results) < 60 and [e.name for e in ended(results)] == ["eileen"]


@pytest.mark.parametrize("suffix", [".h264", ".mjpeg", ".mjpg"])
def test_a_raw_video_file_is_a_file_not_a_stream(rec, tmp_path, suffix):
    raw = write_video(tmp_path / f"walk{suffix}", 50, walking)
    with VideoSource(raw) as source:
        assert not source.live
        times = [time for time, _ in source.frames()]
    assert times == pytest.approx([i / 25 for i in range(50)])  # raw H.264 has no timestamps
    results = run(rec, raw, start=0.4, duration=0.8)
    assert [r.time for r in results] == pytest.approx([0.4 + i / 25 for i in range(20)])
    (event,) = ended(results)
    assert event.name == "eileen" and 0.4 <= event.first < 0.8 and event.last >= 1.0
    past = VideoSource(raw, start=3)
    with pytest.raises(InputError, match=r"--start 3 s is past the end of the video \(2\.00 s"):
        list(past.frames())


def test_a_start_past_the_end_is_refused_before_decoding(walk):
    with pytest.raises(InputError) as refused:
        VideoSource(walk, start=2.5)
    assert str(refused.value) == (
        f"{walk}: --start 2.5 s is past the end of the video (2.00 s long); give an earlier --start"
    )


def visits(*starts: int, frames: int = 20) -> Callable[[int], list]:
    """The astronaut walking in for ``frames`` frames from each of ``starts``, else nobody."""

    def placements(index: int) -> list:
        return next((walking(index - s) for s in starts if s <= index < s + frames), [])

    return placements


def test_a_watch_follows_people_removed_and_enrolled_while_it_runs(tmp_path, astronaut):
    video = write_video(tmp_path / "visits.mp4", 120, visits(0, 50, 100))
    rec = FaceRecognizer(tmp_path / "people.db", detector="hog")
    rec.enroll("eileen", astronaut, largest=True)
    session = Watch(rec, video, parallel=False, tracker=Tracker(patience=0.4, reid_distance=0.1))
    events = []
    for result in session:
        events += result.ended
        if len(events) == 1 and rec.people():
            rec.remove("eileen")  # the last person: every face is unknown now
        if len(events) == 2 and not rec.people():
            rec.enroll("eileen", astronaut, largest=True)  # and she is known again
    assert [e.name for e in events] == ["eileen", None, "eileen"]
    assert events[1].distance is None


@pytest.fixture
def pg_rec(postgres_url, astronaut) -> Iterator[FaceRecognizer]:
    """A recognizer whose PostgreSQL gallery holds the astronaut."""
    with FaceRecognizer(postgres_url, detector="hog") as recognizer:
        recognizer.enroll("eileen", astronaut, largest=True)
        yield recognizer


def test_a_live_watch_goes_on_while_the_database_is_down(postgres, pg_rec, tmp_path):
    rec = pg_rec
    # seen, seen while the database is down, seen after it is back (and a retry is due)
    data = write_video(tmp_path / "live.ts", 230, visits(0, 50, 200)).read_bytes()
    events, down = [], False
    try:
        with live_stream(data) as (url, _), warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            session = Watch(rec, url, parallel=False, tracker=Tracker(patience=0.4))
            with pytest.raises(InputError, match=r"breaks off|stopped"):  # the test stream ends
                for result in session:
                    events += result.ended
                    if len(events) == 1 and not down:
                        postgres.stop()
                        down = True
                    if len(events) == 2 and down:
                        postgres.start()
                        down = False
    finally:
        if down:
            postgres.start()
    assert [e.name for e in events] == ["eileen", None, "eileen"]
    messages = [str(w.message) for w in said]
    assert len(messages) == 2, messages
    assert "the database cannot be reached" in messages[0] and "\n" not in messages[0]
    assert messages[0].endswith("faces go unnamed until it is back, watching on")
    assert messages[1].endswith("the database is back: faces are named again")


def test_a_file_stops_when_the_database_goes_down_after_ending_its_tracks(
    postgres, pg_rec, tmp_path
):
    rec = pg_rec
    video = write_video(tmp_path / "visits.mp4", 75, visits(0, 50))
    events, down = [], False
    try:
        session = Watch(rec, video, parallel=False, tracker=Tracker(patience=0.4))
        with session, pytest.raises(GalleryUnavailable, match="cannot be reached"):
            for result in session:
                events += result.ended
                if len(events) == 1 and not down:
                    postgres.stop()
                    down = True
    finally:
        if down:
            postgres.start()
    # she came back while the database was down: the run stopped there, her first track given
    assert [e.name for e in events] == ["eileen"]


def test_snapshots_of_later_runs_never_replace_earlier_ones(rec, cross, tmp_path):
    snaps = tmp_path / "snaps"
    first = Watch(rec, cross, parallel=False, snapshots=snaps)
    # files already there under every name this run could choose: they stay as they are
    stamp = first.started.strftime("%Y%m%d-%H%M%S")
    for track in range(1, 6):
        (snaps / f"cross-{stamp}-track{track:05d}.png").write_bytes(b"earlier")
    (unknown,) = [e for e in ended(list(first)) if e.name is None]
    first.close()
    taken = snaps / f"cross-{stamp}-track{unknown.track:05d}-2.png"
    assert load_image(taken).shape[2] == 3
    with Watch(rec, cross, parallel=False, snapshots=snaps) as second:
        list(second)
    made = sorted(p for p in snaps.iterdir() if p.read_bytes() != b"earlier")
    assert len(made) == 2 and taken in made and len(list(snaps.iterdir())) == 7
    assert all(re.fullmatch(r"cross-\d{8}-\d{6}-track\d{5}(-\d+)?\.png", p.name) for p in made)
