"""``tripletface watch SOURCE``: the people in a video file, stream or camera, as they come and go.

Prints a line per track when it ends and a summary of who was seen; ``--events`` writes the same
as JSON lines (flushed at once), ``--annotate`` the video with boxes and names, ``--snapshots``
the best crop of every unknown face. Live sources run until SIGINT or SIGTERM, then finish
cleanly (exit 0), and watch on through a gallery database outage (a warning line when it goes
and when it is back). Exit codes: 0 done, 2 bad input, also when the video breaks off or the
events file or annotated video cannot be written (whatever was found until then is written; a
video that cannot be written whole is not left at its path), 3 the gallery's
database cannot be reached (at the start; for a file, also later), 130 when a file is
interrupted.
"""

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import warnings
from pathlib import Path

from tqdm import tqdm

from tripletface.cli.arguments import at_least, print_warning
from tripletface.cli.recognize import recognizer_options
from tripletface.errors import InputError
from tripletface.outputs import cannot_write


def _seconds(text: str) -> float:
    """An argparse type: seconds >= 0, as 12.5 or MM:SS or HH:MM:SS, each part finite and >= 0."""
    try:
        parts = [float(part) for part in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time (seconds or MM:SS)") from None
    # Each part on its own: 1:-30 must not pass as 30 s, nor nan compare as no error.
    if len(parts) > 3 or not all(math.isfinite(part) and part >= 0 for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a time >= 0 (seconds or MM:SS)")
    return sum(part * 60**i for i, part in enumerate(reversed(parts)))


def register(subparsers) -> None:
    """Add the watch subcommand."""
    text = "recognise the people in a video file, stream URL or camera, with face tracking"
    p = subparsers.add_parser("watch", help=text, description=text, parents=[recognizer_options()])
    p.set_defaults(run=watch)
    p.add_argument(
        "source", metavar="SOURCE", help="video file, rtsp:// or http:// URL, /dev/videoN"
    )
    p.add_argument("--detector", choices=("hog", "cnn"), default="hog", help="face detector (hog)")
    p.add_argument("--annotate", type=Path, metavar="OUT.mp4", help="write the video, faces drawn")
    p.add_argument("--events", type=Path, metavar="FILE.jsonl", help="write a JSON line per track")
    p.add_argument(
        "--snapshots", type=Path, metavar="DIR", help="save the best crop of each unknown face"
    )
    p.add_argument("--start", type=_seconds, default=0.0, help="skip to this time (s or MM:SS)")
    p.add_argument("--duration", type=_seconds, help="stop after this long (s or MM:SS)")
    p.add_argument(
        "--detect-every",
        type=at_least(1),
        default=5,
        metavar="N",
        help="frames between detections at least; faces are tracked in between (5)",
    )
    p.add_argument(
        "--workers",
        type=int,
        choices=(0, 1),
        default=1,
        help="processes detecting (1); 0 detects in the main process, the same on every run",
    )


def _line(event) -> str:
    """A human line for an ended track."""
    who = event.name if event.name is not None else "unknown"
    distance = "" if event.distance is None else f", distance {event.distance:.3f}"
    return (
        f"{_clock(event.first)}-{_clock(event.last)} {who} "
        f"(track {event.track}, {event.frames} frames{distance})"
    )


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):02d}:{rest:04.1f}"


def watch(args) -> int:
    from tripletface.recognize import FaceRecognizer
    from tripletface.tracking import summarize
    from tripletface.video import Watch, snapshots_folder

    _check_outputs(args)
    if args.snapshots is not None:
        snapshots_folder(args.snapshots, "--snapshots")  # before the model loads
    rec = FaceRecognizer(
        args.gallery, args.encoder, args.threshold, args.detector, True, args.runtime
    )
    session = Watch(
        rec,
        args.source,
        args.start,
        args.duration,
        args.detect_every,
        parallel=args.workers == 1,
        snapshots=args.snapshots,
    )
    previous = {n: signal.signal(n, lambda *_: session.stop()) for n in _STOP_SIGNALS}
    ended: list = []
    try:
        with warnings.catch_warnings():
            # A database outage that a live source watches on through: one line each time.
            warnings.simplefilter("always")
            warnings.showwarning = print_warning
            _run(session, args, ended)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _print_summary(summarize(ended))
    if session.stopped and not session.source.live:
        print(f"tripletface: interrupted at {session.source.elapsed:.2f} s", file=sys.stderr)
        return 130
    return 0


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _check_outputs(args) -> None:
    """InputError when --events or --annotate would write over the video watched (by any of
    its paths or links), or both over one file."""
    source = Path(args.source)
    given = [("--events", args.events), ("--annotate", args.annotate)]
    outputs = [(option, path) for option, path in given if path is not None]
    for option, path in outputs:
        if _same_file(path, source):
            raise InputError(
                f"{option} {path}: that is the video watched, {args.source}; give another path"
            )
    if len(outputs) == 2 and _same_file(args.events, args.annotate):
        raise InputError(
            f"--annotate {args.annotate}: --events writes there too; give each output its own path"
        )


def _same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file: the same inode if both exist, else the same place."""
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first.resolve() == second.resolve()


class _EventLog:
    """The --events file, opened (emptied) now: JSON lines, each written whole at once (a
    reader following it sees it). A line that cannot be written, on a full disk say, is taken
    back (the file keeps whole lines only), and raised as a one-line InputError naming it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failed = False
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except OSError as error:
            raise cannot_write(
                "--events", path, error, "give a path in an existing folder"
            ) from None

    def write(self, record: dict) -> None:
        """Append one JSON line."""
        line = memoryview((json.dumps(record) + "\n").encode())
        start = os.lseek(self._fd, 0, os.SEEK_CUR)
        try:
            while line:
                line = line[os.write(self._fd, line) :]  # the rest of a partial write
        except OSError as error:
            self.failed = True
            with contextlib.suppress(OSError):  # a device such as /dev/full cannot be cut
                os.ftruncate(self._fd, start)
            fix = "make room or give another path; the events before this one are in it"
            raise cannot_write("--events", self.path, error, fix) from None

    def finish(self, record: dict) -> None:
        """Append the last line, unless a line before could not be written, then close."""
        try:
            if not self.failed:
                self.write(record)
        finally:
            os.close(self._fd)


def _run(session, args, ended: list) -> None:
    """Go through the video, writing its annotated copy and events; ``ended`` collects them.
    The outputs are finalised however the video ends, the summary line included."""
    from tripletface.tracking import summarize
    from tripletface.video import AnnotatedVideo, draw_faces

    with contextlib.ExitStack() as stack:
        stack.enter_context(session)
        out = None
        if args.annotate:
            out = stack.enter_context(AnnotatedVideo(args.annotate, session.rate, "--annotate"))
        log = None
        if args.events:
            # Opened once the source is (a source that cannot be read leaves no events file),
            # and before its first frame is.
            log = _EventLog(args.events)
            stack.callback(lambda: log.finish({"summary": [s.to_json() for s in summarize(ended)]}))
        name = Path(args.source).name or args.source
        total = session.source.frame_count
        bar = tqdm(total=total, desc=name, unit="frame", file=sys.stderr, disable=None)
        stack.enter_context(bar)
        for result in session:
            bar.update()
            if out is not None:
                out.write(draw_faces(result.image, result.faces))
            for event in result.ended:
                ended.append(event)
                tqdm.write(_line(event), file=sys.stdout)
                if log is not None:
                    log.write(event.to_json())


def _print_summary(sightings) -> None:
    """Who was seen, when and for how long, on stdout."""
    if not sightings:
        print("nobody seen")
    for s in sightings:
        who = s.name if s.name is not None else "unknown faces"
        print(
            f"seen: {who} from {_clock(s.first)} to {_clock(s.last)}, "
            f"{s.seconds:.1f} s in {s.tracks} track{'s' if s.tracks > 1 else ''}"
        )
