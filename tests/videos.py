"""Small test videos made with PyAV: real faces (scikit-image's photos) moving over a background."""

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import skimage.data
from PIL import Image

FORMATS = {
    ".mp4": "mp4",
    ".mkv": "matroska",
    ".ts": "mpegts",
    ".avi": "avi",
    ".mov": "mov",
    ".webm": "webm",
    ".h264": "h264",  # raw H.264: no container, no timestamps, no duration, no index
    ".mjpeg": "mjpeg",  # raw MJPEG, as many IP cameras record it
    ".mjpg": "mjpeg",
}
# The codec each container is usually found with (H.264 otherwise).
CODECS = {".webm": "libvpx", ".avi": "mpeg4", ".mjpeg": "mjpeg", ".mjpg": "mjpeg"}
# Codecs that take their pixels in another layout than 4:2:0 of limited range.
PIXEL_FORMATS = {"mjpeg": "yuvj420p"}

Placement = tuple[np.ndarray, int, int]


def astronaut_head(height: int = 130) -> np.ndarray:
    """Eileen Collins' head and shoulders from scikit-image's astronaut photo, ``height`` tall."""
    crop = skimage.data.astronaut()[0:260, 110:330]
    width = round(height * crop.shape[1] / crop.shape[0])
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.BILINEAR))


def lfw_face(index: int = 0, side: int = 130) -> np.ndarray:
    """Another person: one of scikit-image's 25 x 25 LFW faces, enlarged, as RGB."""
    face = (skimage.data.lfw_subset()[index] * 255).astype(np.uint8)
    big = Image.fromarray(face).resize((side, side), Image.BICUBIC)
    return np.stack([np.asarray(big)] * 3, axis=-1)


def write_video(
    path: Path,
    frames: int,
    placements: Callable[[int], list[Placement]],
    size: tuple[int, int] = (320, 240),
    rate: int = 25,
) -> Path:
    """A video of ``frames`` frames where frame i shows placements(i): (sprite, left, top)."""
    width, height = size
    suffix = Path(path).suffix
    container = av.open(str(path), "w", format=FORMATS[suffix])
    codec = CODECS.get(suffix, "libx264")
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = PIXEL_FORMATS.get(codec, "yuv420p")
    for index in range(frames):
        image = np.full((height, width, 3), 70, dtype=np.uint8)
        image[:, :, 2] = np.linspace(40, 160, width, dtype=np.uint8)[None, :]
        for sprite, left, top in placements(index):
            _paste(image, sprite, left, top)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return Path(path)


def _paste(image: np.ndarray, sprite: np.ndarray, left: int, top: int) -> None:
    """Draw the sprite with its top-left corner at (left, top), clipped to the image."""
    height, width = image.shape[:2]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + sprite.shape[1], width), min(top + sprite.shape[0], height)
    if x1 > x0 and y1 > y0:
        image[y0:y1, x0:x1] = sprite[y0 - top : y1 - top, x0 - left : x1 - left]


def decoded_frames(path: Path) -> tuple[int, float]:
    """(number of frames, frames per second) of a video, decoded to the end."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), float(stream.average_rate)


def truncate(path: Path, out: Path, share: float = 0.5) -> Path:
    """The first ``share`` of the file's bytes, as a video cut off in mid-stream."""
    data = Path(path).read_bytes()
    Path(out).write_bytes(data[: int(len(data) * share)])
    return Path(out)


@contextlib.contextmanager
def live_stream(data: bytes, pause: float = 0.0) -> Iterator[tuple[str, Callable[[], int]]]:
    """An HTTP server on loopback sending ``data`` as a live MPEG-TS stream (no length
    announced) in 50 chunks ``pause`` seconds apart, then hanging up: yields its URL and a
    function giving how many bytes it has sent."""
    sent = [0]
    closing = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            chunk = max(1, len(data) // 50)
            try:
                for start in range(0, len(data), chunk):
                    self.wfile.write(data[start : start + chunk])
                    self.wfile.flush()
                    sent[0] = min(len(data), start + chunk)
                    if closing.wait(pause):
                        return
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = False  # server_close() waits for the handler
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/live.ts", lambda: sent[0]
    finally:
        closing.set()
        server.shutdown()
        server.server_close()
        thread.join()
