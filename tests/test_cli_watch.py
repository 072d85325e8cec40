"""``tripletface watch``: outputs, exit codes, and what is left when the video breaks off."""

import http.server
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest
from test_video import crossing, rec, walking  # noqa: F401 (rec: the gallery fixture)
from videos import decoded_frames, truncate, write_video

from tripletface.cli import main


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
    assert len(list(snaps.glob("cross-track*.png"))) == 1
    assert "eileen (track" in out.out and "seen: eileen from 00:00.0" in out.out


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
    assert "/dev/video98: no such camera" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        watch(rec, tmp_path / "gone.mp4", "--start", "soon")
    assert "not a time" in capsys.readouterr().err


def test_start_and_duration_in_minutes_and_seconds(rec, tmp_path, capsys):  # noqa: F811
    walk = write_video(tmp_path / "walk.mp4", 50, walking)
    events = tmp_path / "e.jsonl"
    assert watch(rec, walk, "--start", "00:00.8", "--duration", "0.8", "--events", str(events)) == 0
    (track,), _ = read_events(events)
    assert 0.8 <= track["first"] < track["last"] < 1.6


class Paced(http.server.BaseHTTPRequestHandler):
    """A live stream on loopback: the video's bytes at about its own rate, no length announced."""

    data = b""
    sent = 0

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        chunk = len(self.data) // 50
        try:
            for start in range(0, len(self.data), chunk):
                self.wfile.write(self.data[start : start + chunk])
                self.wfile.flush()
                type(self).sent = start + chunk
                time.sleep(0.08)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_a_live_stream_runs_until_sigterm_then_finishes_cleanly(rec, tmp_path):  # noqa: F811
    Paced.data = write_video(tmp_path / "live.ts", 120, lambda i: walking(i % 50)).read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Paced)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/live.ts"
    events, video = tmp_path / "e.jsonl", tmp_path / "out.mp4"
    command = [
        sys.executable,
        "-m",
        "tripletface",
        "watch",
        url,
        "--gallery",
        str(rec.gallery_path),
    ]
    process = subprocess.Popen(
        [*command, "--events", str(events), "--annotate", str(video)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while Paced.sent < len(Paced.data) // 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        server.shutdown()
        thread.join()
    assert process.returncode == 0, err
    tracks, summary = read_events(events)
    assert tracks and summary[0]["name"] == "eileen"
    frames, rate = decoded_frames(video)
    assert frames > 10 and rate == 25.0
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
