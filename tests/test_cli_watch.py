"""``tripletface watch``: outputs, exit codes, and what is left when the video breaks off."""

import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from test_video import (  # noqa: F401 (rec: the gallery fixture)
    crossing,
    rec,
    stream_that_stops,
    temporary_on_a_full_disk,
    walking,
)
from videos import decoded_frames, live_stream, truncate, write_video

import tripletface.recognize
import tripletface.video
from tripletface.cli import build_parser, main
from tripletface.errors import GalleryUnavailable
from tripletface.recognize import FaceRecognizer


@pytest.fixture(scope="module")
def cross(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "cross.mkv", 50, crossing, (400, 240))


def watch(rec, source, *options: str) -> int:  # noqa: F811
    return main(["watch", str(source), "--gallery", str(rec.gallery_path), *options])


def read_events(path: Path) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert "summary" in lines[-1] and all("summary" not in line for line in lines[:-1])
    return lines[:-1], lines[-1]["summary"]


def test_watch_writes_events_annotated_video_and_snapshots(rec, cross, tmp_path, capsys):  # noqa: F811
    events, video, snaps = tmp_path / "e.jsonl", tmp_path / "out.mp4", tmp_path / "snaps"
    code = watch(
        rec, cross, "--events", str(events), "--annotate", str(video), "--snapshots", str(snaps)
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    tracks, summary = read_events(events)
    assert sorted(t["name"] or "" for t in tracks) == ["", "eileen"]
    for track in tracks:
        assert set(track) == {"track", "name", "first", "last", "frames", "distance"}
        assert 0 <= track["first"] < track["last"] <= 2.0 and track["frames"] > 20
    assert [(s["name"], s["tracks"]) for s in summary] == [("eileen", 1), (None, 1)]
    assert decoded_frames(video) == (50, 25.0)
    (snapshot,) = snaps.glob("cross-*-track*.png")
    assert "eileen (track" in out.out and "seen: eileen from 00:00.0" in out.out
    # the stranger's snapshot is enrolled as it is; then the stranger is named in the video
    later = tmp_path / "later.db"
    assert main(["enroll", "stranger", str(snapshot), "--gallery", str(later)]) == 0
    assert main(["watch", str(cross), "--gallery", str(later), "--events", str(events)]) == 0
    tracks, _ = read_events(events)
    assert sorted(t["name"] or "" for t in tracks) == ["", "stranger"]


def test_the_threshold_decides_who_is_known(rec, tmp_path):  # noqa: F811
    walk = write_video(tmp_path / "walk.mp4", 25, walking)
    events = tmp_path / "e.jsonl"
    assert watch(rec, walk, "--events", str(events), "--threshold", "0.001") == 0
    (track,), _ = read_events(events)
    assert track["name"] is None and track["distance"] > 0.001  # her distance, now too far


class Terminal(io.StringIO):
    """Standard error as a terminal, where the progress bar shows."""

    def isatty(self) -> bool:
        return True


def test_a_file_shows_a_progress_bar_with_frames_per_second(rec, tmp_path, monkeypatch):  # noqa: F811
    walk = write_video(tmp_path / "walk.mp4", 25, walking)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert watch(rec, walk) == 0
    last = sys.stderr.getvalue().split("\r")[-1]
    assert re.match(r"walk\.mp4: 100%.* 25/25 \[.*[0-9.]+frame/s\]", last), last


def test_a_truncated_video_keeps_what_came_before(rec, cross, tmp_path, capsys):  # noqa: F811
    cut = truncate(cross, tmp_path / "cut.mkv", 0.6)
    events, video = tmp_path / "e.jsonl", tmp_path / "out.mp4"
    code = watch(rec, cut, "--events", str(events), "--annotate", str(video), "--workers", "0")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"tripletface: error: {cut}: the video ends at")
    tracks, summary = read_events(events)
    assert {t["name"] for t in tracks} == {"eileen", None} and len(summary) == 2
    frames, rate = decoded_frames(video)  # finalised: it plays to the point where it broke off
    assert 5 < frames < 50 and rate == 25.0


def test_missing_and_unreadable_sources_are_one_line(rec, tmp_path, capsys):  # noqa: F811
    events = tmp_path / "e.jsonl"
    assert watch(rec, tmp_path / "gone.mp4", "--events", str(events)) == 2
    assert capsys.readouterr().err == f"tripletface: error: {tmp_path / 'gone.mp4'}: no such file\n"
    assert not events.exists()
    assert watch(rec, "/dev/video98") == 2
    assert capsys.readouterr().err.startswith("tripletface: error: /dev/video98: no such camera")
    text = tmp_path / "notes.webm"
    text.write_text("not a video\n")
    assert watch(rec, text, "--events", str(events)) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"tripletface: error: {text}: cannot read it as")
    assert watch(rec, "rtsp://127.0.0.1:9/door") == 2  # nobody serves on the discard port
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "tripletface: error: rtsp://127.0.0.1:9/door: cannot read it as a video "
        "(Connection refused)"
    ]
    assert not events.exists()
    with pytest.raises(SystemExit):
        watch(rec, tmp_path / "gone.mp4", "--start", "soon")
    assert "not a time" in capsys.readouterr().err


def test_an_events_file_that_cannot_be_written_is_one_line(rec, tmp_path, capsys):  # noqa: F811
    blank = write_video(tmp_path / "blank.mp4", 2, lambda index: [])
    events, video = tmp_path / "gone" / "e.jsonl", tmp_path / "out.mp4"
    assert watch(rec, blank, "--events", str(events), "--annotate", str(video)) == 2
    assert capsys.readouterr().err == (
        f"tripletface: error: --events {events}: cannot write there (No such file or directory): "
        "give a path in an existing folder\n"
    )
    assert not video.exists()  # refused before the first frame: nothing half written


def loading_the_model_fails(*args) -> None:
    """Stands for the encoder's loading where a test wants to fail before it, seconds sooner."""
    raise AssertionError("the model was loaded")


def test_snapshots_where_a_file_is_is_one_line(rec, tmp_path, monkeypatch, capsys):  # noqa: F811
    blank = write_video(tmp_path / "blank.mp4", 2, lambda index: [])
    taken, events = tmp_path / "afile", tmp_path / "e.jsonl"
    taken.touch()
    monkeypatch.setattr(tripletface.recognize, "load_runtime", loading_the_model_fails)
    assert watch(rec, blank, "--snapshots", str(taken), "--events", str(events)) == 2
    assert capsys.readouterr().err == (
        f"tripletface: error: --snapshots {taken}: cannot write there (File exists): "
        "give a folder's path, new or existing\n"
    )
    assert taken.read_bytes() == b"" and not events.exists()


@pytest.mark.parametrize("kind", ["http", "rtsp"])
def test_a_stream_that_stops_keeps_what_came_before(rec, tmp_path, capsys, kind):  # noqa: F811
    events, video = tmp_path / "e.jsonl", tmp_path / "out.mp4"
    with stream_that_stops(kind, tmp_path) as url:
        code = watch(rec, url, "--events", str(events), "--annotate", str(video), "--workers", "0")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"tripletface: error: {url}: the ")
    tracks, summary = read_events(events)
    assert [t["name"] for t in tracks] == ["eileen"] and summary[0]["name"] == "eileen"
    frames, rate = decoded_frames(video)  # finalised: it plays to the point where it broke off
    assert 5 < frames < 60 and rate == 25.0


def test_start_and_duration_in_minutes_and_seconds(rec, tmp_path, capsys):  # noqa: F811
    walk = write_video(tmp_path / "walk.mp4", 50, walking)
    events = tmp_path / "e.jsonl"
    assert watch(rec, walk, "--start", "00:00.8", "--duration", "0.8", "--events", str(events)) == 0
    (track,), _ = read_events(events)
    assert 0.8 <= track["first"] < track["last"] < 1.6


def comes_and_goes(index: int):
    """The astronaut walking for 1.6 s, gone for 1.4 s (her track ends), back for 3 s."""
    return walking(index % 50) if index < 40 or index >= 75 else []


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_live_stream_runs_until_a_signal_then_finishes_cleanly(rec, tmp_path, stop):  # noqa: F811
    data = write_video(tmp_path / "live.ts", 150, comes_and_goes).read_bytes()
    events, video = tmp_path / "e.jsonl", tmp_path / "out.mp4"
    with live_stream(data, pause=0.12) as (url, sent):  # 6 s of video in about 6 s
        command = [sys.executable, "-m", "tripletface", "watch", url]
        command += ["--gallery", str(rec.gallery_path), "--events", str(events)]
        process = subprocess.Popen(
            [*command, "--annotate", str(video)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while process.poll() is None and time.monotonic() < deadline:
                if events.exists() and events.read_text().endswith("\n"):
                    break
                time.sleep(0.05)
            # the first track's line is on disk while the stream still runs: flushed at once
            assert process.poll() is None
            first = json.loads(events.read_text())
            while sent() < 0.7 * len(data) and time.monotonic() < deadline:
                time.sleep(0.05)  # she is back
            assert process.poll() is None and sent() < len(data)
            process.send_signal(stop)
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 0, err
    tracks, summary = read_events(events)
    assert tracks[0] == first and first["name"] == "eileen" and first["last"] < 1.7
    assert [t["name"] for t in tracks] == ["eileen", "eileen"]
    assert [(s["name"], s["tracks"]) for s in summary] == [("eileen", 2)]
    frames, rate = decoded_frames(video)
    assert 75 < frames < 150 and rate == 25.0
    assert "seen: eileen" in out


@pytest.mark.parametrize(("suffix", "rate"), [(".avi", 15), (".webm", 30), (".mov", 12)])
def test_each_container_is_read_and_annotated_at_its_own_rate(rec, tmp_path, suffix, rate):  # noqa: F811
    source = write_video(tmp_path / f"walk{suffix}", 25, walking, rate=rate)
    events, video = tmp_path / "e.jsonl", tmp_path / "out.mp4"
    assert watch(rec, source, "--events", str(events), "--annotate", str(video)) == 0
    (track,), _ = read_events(events)
    assert track["name"] == "eileen" and track["frames"] >= 10
    assert decoded_frames(video) == (25, float(rate))
    with av.open(str(video)) as container:
        assert container.streams.video[0].codec_context.name == "h264"


@pytest.mark.parametrize("text", ["nan", "inf", "-5", "1:-30", "-1:30", "1:nan", "1:2:3:4"])
def test_a_time_that_is_not_finite_or_is_negative_is_a_usage_error(text, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["watch", "door.mp4", f"--start={text}"])
    assert stopped.value.code == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert error.endswith(f"argument --start: {text!r} is not a time >= 0 (seconds or MM:SS)")


@pytest.mark.parametrize(
    ("text", "seconds"), [("12.5", 12.5), ("1:30", 90.0), ("01:02:03.5", 3723.5), ("0", 0.0)]
)
def test_times_are_seconds_or_minutes_and_seconds(text, seconds):
    args = build_parser().parse_args(["watch", "door.mp4", "--start", text, "--duration", text])
    assert args.start == args.duration == seconds


def test_an_output_that_is_the_video_itself_is_refused_before_decoding(rec, tmp_path, capsys):  # noqa: F811
    walk = write_video(tmp_path / "walk.mp4", 5, walking)
    before = walk.read_bytes()
    (tmp_path / "link.mp4").symlink_to(walk)
    os.link(walk, tmp_path / "hard.mp4")
    tries = [
        ("--events", walk, walk),
        ("--annotate", walk, walk),
        ("--annotate", tmp_path / "link.mp4", walk),  # a link to it
        ("--events", tmp_path / "sub" / ".." / "walk.mp4", walk),
        ("--events", tmp_path / "hard.mp4", walk),  # the same file under another name
        ("--annotate", walk, tmp_path / "link.mp4"),  # the source given through a link
    ]
    (tmp_path / "sub").mkdir()
    for option, output, source in tries:
        assert watch(rec, source, option, str(output)) == 2
        assert capsys.readouterr().err == (
            f"tripletface: error: {option} {output}: that is the video watched, {source}; "
            "give another path\n"
        )
        assert walk.read_bytes() == before
    events = tmp_path / "out.mp4"
    assert watch(rec, walk, "--events", str(events), "--annotate", str(events)) == 2
    assert capsys.readouterr().err == (
        f"tripletface: error: --annotate {events}: --events writes there too; "
        "give each output its own path\n"
    )
    assert not events.exists()


def test_a_start_past_the_end_says_so_with_the_duration(rec, tmp_path, capsys):  # noqa: F811
    walk = write_video(tmp_path / "walk.mp4", 50, walking)
    events = tmp_path / "e.jsonl"
    for start in ("5", "2", "1:00"):
        assert watch(rec, walk, "--start", start, "--events", str(events)) == 2
        seconds = float(start) if ":" not in start else 60.0
        assert capsys.readouterr().err == (
            f"tripletface: error: {walk}: --start {seconds:g} s is past the end of the video "
            "(2.00 s long); give an earlier --start\n"
        )
        assert not events.exists()  # refused before anything is written


def test_an_events_file_on_a_full_disk_is_one_line(rec, tmp_path, capsys):  # noqa: F811
    walk = write_video(tmp_path / "walk.mp4", 25, walking)
    assert watch(rec, walk, "--events", "/dev/full", "--workers", "0") == 2
    err = capsys.readouterr().err
    assert err == (
        "tripletface: error: --events /dev/full: cannot write there (No space left on device): "
        "make room or give another path; the events before this one are in it\n"
    )


def test_a_disk_that_fills_up_leaves_the_events_written_whole(
    rec,  # noqa: F811
    cross,
    tmp_path,
    monkeypatch,
    capsys,
):
    events, video = tmp_path / "e.jsonl", tmp_path / "out.mp4"
    real = os.write
    log: list[int] = []  # the events file's descriptor, known from its first line
    tracks: list[bytes] = []

    def filling(fd: int, data) -> int:
        """The disk fills up half way through the second track's line."""
        if not log and bytes(data[:9]) == b'{"track":':
            log.append(fd)
        if fd not in log:
            return real(fd, data)
        tracks.append(bytes(data))
        if len(tracks) == 1:
            return real(fd, data)
        if len(tracks) == 2:
            return real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", filling)
    code = watch(rec, cross, "--events", str(events), "--annotate", str(video), "--workers", "0")
    monkeypatch.undo()
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err == [
        f"tripletface: error: --events {events}: cannot write there (No space left on device): "
        "make room or give another path; the events before this one are in it"
    ]
    assert events.read_bytes() == tracks[0]  # the first line whole, no half of the second
    assert json.loads(tracks[0])["track"] >= 1
    assert decoded_frames(video) == (50, 25.0)  # the annotated video is finalised all the same


@pytest.mark.parametrize("suffix, seen", [(".mp4", 0), (".mkv", 2)])
def test_an_annotated_video_on_a_full_disk_is_one_line_and_leaves_no_file(
    rec,  # noqa: F811
    cross,
    tmp_path,
    monkeypatch,
    capsys,
    suffix,
    seen,
):
    """The disk is full from the start: MP4 finds it out at its first packet, before any track
    ended; Matroska, buffering these few frames, only when the video is closed, after both."""
    monkeypatch.setattr(tripletface.video, "create_temporary_beside", temporary_on_a_full_disk)
    events, video = tmp_path / "e.jsonl", tmp_path / f"out{suffix}"
    code = watch(rec, cross, "--events", str(events), "--annotate", str(video), "--workers", "0")
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err == [
        f"tripletface: error: --annotate {video}: cannot write there (No space left on device): "
        "make room or give another path"
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["e.jsonl"]
    tracks, summary = read_events(events)  # whole lines, then the summary of what was seen
    assert len(tracks) == seen and sum(s["tracks"] for s in summary) == seen


def test_a_database_outage_on_a_live_source_is_one_warning_line(rec, tmp_path, monkeypatch, capsys):  # noqa: F811
    def down(*args) -> None:
        raise GalleryUnavailable("postgresql://db/people: the database cannot be reached (gone)")

    monkeypatch.setattr(FaceRecognizer, "match", down)
    events = tmp_path / "e.jsonl"
    with stream_that_stops("http", tmp_path) as url:
        code = watch(rec, url, "--events", str(events), "--workers", "0")
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 2  # the warning, then the end of the test stream
    assert err[0] == (
        "tripletface: warning: postgresql://db/people: the database cannot be reached (gone); "
        "faces go unnamed until it is back, watching on"
    )
    assert err[1].startswith(f"tripletface: error: {url}: the ")
    tracks, _ = read_events(events)
    assert [t["name"] for t in tracks] == [None]
