"""The web page in a real browser: Debian's chromium, driven by playwright, on tripletface serve.

One server (a real uvicorn process on loopback, a temporary gallery, API keys required) and one
browser for the module; each test gets a fresh browser context, so a fresh sessionStorage. The
webcam is chromium's fake capture device playing a .y4m video of the astronaut that the module
writes itself. The astronaut photo (scikit-image) shows one real face and, on her suit, a patch
that HOG also takes for a face: identifying the whole photo gives one name and one "unknown".
"""

import io
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from tripletface.service.keys import add_key

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
# Set to write the README's screenshot (docs/images/web-page.png) instead of one in tmp.
SCREENSHOT_ENV = "TRIPLETFACE_SCREENSHOT"
README_SCREENSHOT = Path(__file__).parents[1] / "docs" / "images" / "web-page.png"
# The network is closed and we run as root: no sandbox, nothing that phones home.
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)  # the server shares a loaded machine: seconds, not ms
KNOWN_GREEN = (0x16, 0xA3, 0x4A)  # draw.js draws recognised faces in this colour


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    """A YUV4MPEG2 4:2:0 video of H x W x 3 uint8 RGB frames (H, W even; BT.601 studio range)."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            rgb = frame.astype(np.float32)
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
            u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
            v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
            out.write(b"FRAME\n")
            out.write(np.clip(y + 0.5, 0, 255).astype(np.uint8).tobytes())
            for plane in (u, v):  # chroma averaged over 2 x 2 blocks
                half = plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
                out.write(np.clip(half + 0.5, 0, 255).astype(np.uint8).tobytes())


def read_y4m(path: Path) -> list[np.ndarray]:
    """The Y planes of a YUV4MPEG2 4:2:0 video, to check write_y4m against."""
    data = path.read_bytes()
    header, _, body = data.partition(b"\n")
    tags = {word[:1]: word[1:] for word in header.decode().split()[1:]}
    width, height = int(tags["W"]), int(tags["H"])
    size = width * height * 3 // 2
    frames = body.split(b"FRAME\n")[1:]
    assert all(len(frame) == size for frame in frames)
    return [
        np.frombuffer(frame[: width * height], np.uint8).reshape(height, width) for frame in frames
    ]


def webcam_frame(i: int, count: int = 20) -> np.ndarray:
    """Frame i of a 640 x 480 video of the astronaut's head and shoulders, the view drifting
    up to 10 pixels either way as if live."""
    photo = skimage.data.astronaut()[:372]  # above the patch on her suit
    left = 8 + round(8 * np.sin(2 * np.pi * i / count))
    view = Image.fromarray(photo[:, left : left + 496])  # 496 x 372: 4:3
    return np.asarray(view.resize((640, 480), Image.BILINEAR))


def test_y4m_video_holds_the_frames_luma(tmp_path):
    frames = [np.full((4, 6, 3), value, np.uint8) for value in (0, 128, 255)]
    frames.append(np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8))
    write_y4m(tmp_path / "v.y4m", frames)
    lumas = read_y4m(tmp_path / "v.y4m")
    assert [luma[0, 0] for luma in lumas[:3]] == [16, 126, 235]
    weights = np.array([0.257, 0.504, 0.098])
    expected = np.clip(16 + frames[3].astype(float) @ weights + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(lumas[3], expected)


@dataclass(frozen=True)
class Server:
    """A running tripletface serve: its URL and one key of each scope."""

    url: str
    write_key: str
    read_key: str
    log: Path  # its stdout and stderr, the access log included

    def api(self, key: str | None = None) -> httpx.Client:
        """An HTTP client of the server's API with the write key (or ``key``)."""
        token = key or self.write_key
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """tripletface serve on a free loopback port, a fresh gallery, HOG detection, API keys."""
    folder = tmp_path_factory.mktemp("serve")
    keys = folder / "keys.txt"
    write_key, read_key = add_key(keys, "write", "page"), add_key(keys, "read", "viewer")
    command = [
        sys.executable, "-m", "tripletface", "serve", "--host", "127.0.0.1", "--port", "0",
        "--gallery", str(folder / "gallery.db"), "--detector", "hog", "--workers", "1",
        "--api-keys", str(keys), "--access-log",
    ]  # fmt: skip
    log = folder / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Server(_served_url(process, log), write_key, read_key, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _served_url(process: subprocess.Popen, log: Path) -> str:
    """The URL the server prints once it listens, when it answers /healthz."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"tripletface serve exited with {process.returncode}:\n{log.read_text()}")
        found = re.search(r"serving (http://[^/\s]+)", log.read_text())
        if found:
            try:
                if httpx.get(f"{found[1]}/healthz", timeout=2).status_code == 200:
                    return found[1]
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    pytest.fail(f"tripletface serve did not answer /healthz within 120 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """The astronaut's face, the same face mirrored (another file), the whole photo, a coffee."""
    folder = tmp_path_factory.mktemp("photos")
    whole = skimage.data.astronaut()
    face = whole[:320, 48:368]
    pixels = {
        "face": face,
        "mirrored": face[:, ::-1],
        "whole": whole,
        "coffee": skimage.data.coffee(),
    }
    paths = {}
    for name, image in pixels.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray(image).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One chromium for the module, its fake webcam playing the astronaut."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    video = tmp_path_factory.mktemp("webcam") / "astronaut.y4m"
    write_y4m(video, [webcam_frame(i) for i in range(20)])
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*BROWSER_ARGS, f"--use-file-for-fake-video-capture={video}"],
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def empty_gallery(server):
    """Nobody enrolled when the test starts."""
    with server.api() as api:
        for person in api.get("/v1/people").raise_for_status().json():
            api.delete(f"/v1/people/{person['name']}").raise_for_status()


@pytest.fixture
def page(browser, server, empty_gallery):
    """The page in a fresh browser context (empty sessionStorage), the write key typed in."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(server.url)
    use_key(page, server.write_key)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    # Everything the page loads comes from the server itself (or is made in the page).
    elsewhere = [url for url in fetched if not url.startswith((f"{server.url}/", "blob:", "data:"))]
    assert fetched and not elsewhere, elsewhere


def use_key(page, key: str) -> None:
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("api-key-save").click()


def enroll(server: Server, name: str, photo: Path) -> None:
    with server.api() as api, open(photo, "rb") as image:
        response = api.post(f"/v1/people/{name}/faces", files={"image": image})
        assert response.status_code == 201, response.text


def test_enroll_by_upload_lists_the_person(page, server, photos):
    page.get_by_test_id("enroll-name").fill("Eileen Collins")
    page.get_by_test_id("enroll-file").set_input_files(photos["face"])
    expect(page.get_by_test_id("enroll-preview")).to_be_visible()
    page.get_by_test_id("enroll-submit").click()
    expect(page.get_by_test_id("enroll-status")).to_contain_text("Enrolled Eileen Collins")
    people = page.get_by_test_id("people-list").locator(":scope > *")
    expect(people).to_have_count(1)
    expect(people.first).to_contain_text("Eileen Collins")
    expect(people.first).to_contain_text("1 face")
    with server.api() as api:
        assert api.get("/v1/people").json() == [{"name": "Eileen Collins", "faces": 1}]


def test_api_errors_are_shown_and_nothing_is_enrolled_on_error(page, server, photos):
    page.get_by_test_id("identify-file").set_input_files(photos["face"])
    page.get_by_test_id("identify-submit").click()
    expect(page.get_by_test_id("identify-status")).to_contain_text("empty")  # nobody enrolled
    expect(page.get_by_test_id("identify-status")).to_contain_text("409")
    status = page.get_by_test_id("enroll-status")
    page.get_by_test_id("enroll-name").fill("eileen")
    page.get_by_test_id("enroll-file").set_input_files(photos["coffee"])
    page.get_by_test_id("enroll-submit").click()
    expect(status).to_contain_text("no face")
    expect(status).to_contain_text("400")
    page.get_by_test_id("enroll-file").set_input_files(photos["whole"])  # her face, and the patch
    page.get_by_test_id("enroll-submit").click()
    expect(status).to_contain_text("2 faces")
    with server.api() as api:
        assert api.get("/v1/people").json() == []
    page.get_by_test_id("enroll-largest").check()
    page.get_by_test_id("enroll-submit").click()
    expect(status).to_contain_text("Enrolled eileen")
    with server.api() as api:
        assert api.get("/v1/people").json() == [{"name": "eileen", "faces": 1}]


def test_identify_draws_boxes_and_names(page, server, photos):
    enroll(server, "eileen", photos["face"])
    page.get_by_test_id("identify-file").set_input_files(photos["whole"])
    page.get_by_test_id("identify-submit").click()
    result = page.get_by_test_id("identify-result")
    expect(result.locator(":scope > *")).to_have_count(2)
    expect(result).to_contain_text("eileen")
    expect(result).to_contain_text("unknown")
    with server.api() as api, open(photos["whole"], "rb") as image:
        faces = api.post("/v1/identify", files={"image": image}).json()["faces"]
    known = next(face for face in faces if face["name"] == "eileen")
    left, top, _, bottom = known["box"]
    # The canvas holds the photo at its own size: the box's left edge is drawn in green.
    edge = page.get_by_test_id("identify-canvas").evaluate(
        "(canvas, [x, y]) => Array.from(canvas.getContext('2d').getImageData(x, y, 1, 1).data)",
        [left, (top + bottom) // 2],
    )
    assert np.abs(np.array(edge[:3]) - KNOWN_GREEN).max() < 10, edge
    page.get_by_test_id("identify-file").set_input_files(photos["coffee"])
    page.get_by_test_id("identify-submit").click()
    expect(result).to_have_text("No face found in this photo.")


def test_people_list_and_remove(page, server, photos):
    enroll(server, "ada", photos["face"])
    enroll(server, "grace", photos["mirrored"])
    page.get_by_test_id("people-refresh").click()
    people = page.get_by_test_id("people-list").locator(":scope > *")
    expect(people).to_have_count(2)
    expect(people.nth(0)).to_contain_text("ada")
    expect(people.nth(1)).to_contain_text("grace")
    page.once("dialog", lambda dialog: dialog.accept())
    people.filter(has_text="ada").get_by_test_id("people-remove").click()
    expect(people).to_have_count(1)
    expect(people.first).to_contain_text("grace")
    expect(page.get_by_test_id("people-status")).to_contain_text("Removed ada")
    with server.api() as api:
        assert api.get("/v1/people").json() == [{"name": "grace", "faces": 1}]


def test_enroll_from_a_webcam_snapshot(page, server):
    page.get_by_test_id("enroll-snapshot").click()
    expect(page.get_by_test_id("enroll-preview")).to_contain_text("Webcam snapshot")
    page.get_by_test_id("enroll-name").fill("eileen")
    page.get_by_test_id("enroll-submit").click()
    expect(page.get_by_test_id("enroll-status")).to_contain_text("Enrolled eileen")
    with server.api() as api:
        assert api.get("/v1/people").json() == [{"name": "eileen", "faces": 1}]


def test_live_recognition_names_the_face_on_the_webcam(page, server, photos, tmp_path):
    page.get_by_test_id("enroll-name").fill("eileen")
    page.get_by_test_id("enroll-file").set_input_files(photos["face"])
    page.get_by_test_id("enroll-submit").click()
    expect(page.get_by_test_id("people-list")).to_contain_text("eileen")
    page.get_by_test_id("identify-file").set_input_files(photos["whole"])
    page.get_by_test_id("identify-submit").click()
    expect(page.get_by_test_id("identify-result")).to_contain_text("eileen")
    flight = InFlight(page, "/v1/identify")
    page.get_by_test_id("live-start").click()
    expect(page.get_by_test_id("live-result")).to_contain_text("eileen")
    expect(page.get_by_test_id("live-rate")).to_contain_text("frames/s")
    # Where the overlay has paint: the box (mirrored, as the video is) and its label above it.
    drawn = page.get_by_test_id("live-overlay").evaluate(PAINTED_BOUNDS)
    with server.api() as api:
        photo = io.BytesIO()
        Image.fromarray(webcam_frame(0)).save(photo, "PNG")
        [face] = api.post("/v1/identify", files={"image": photo.getvalue()}).json()["faces"]
    left, _, right, bottom = face["box"]
    assert drawn is not None, "no box drawn over the video"
    # Frames differ from frame 0 by up to 10 pixels of drift and by HOG's box sizes.
    centre = (drawn[0] + drawn[2]) / 2
    assert abs(centre - (640 - (left + right) / 2)) < 25 and abs(drawn[3] - bottom) < 25, drawn
    assert flight.sent >= 2 and flight.most == 1, (flight.sent, flight.most)
    screenshot = README_SCREENSHOT if os.environ.get(SCREENSHOT_ENV) else tmp_path / "page.png"
    save_screenshot(page, screenshot)
    page.get_by_test_id("live-start").click()
    expect(page.get_by_test_id("live-result")).to_be_empty()


PAINTED_BOUNDS = """canvas => {
  const { data, width } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let [left, top, right, bottom] = [Infinity, Infinity, -1, -1];
  for (let i = 3; i < data.length; i += 4) {
    if (!data[i]) continue;
    const x = ((i - 3) / 4) % width, y = Math.floor((i - 3) / 4 / width);
    [left, top] = [Math.min(left, x), Math.min(top, y)];
    [right, bottom] = [Math.max(right, x), Math.max(bottom, y)];
  }
  return right < 0 ? null : [left, top, right, bottom];
}"""


class InFlight:
    """Counts a page's requests to one path: how many were sent, and the most at one time."""

    def __init__(self, page, path: str):
        self.path, self.now, self.sent, self.most = path, 0, 0, 0
        page.on("request", self._start)
        page.on("requestfinished", self._end)
        page.on("requestfailed", self._end)

    def _start(self, request) -> None:
        if request.url.endswith(self.path):
            self.now, self.sent = self.now + 1, self.sent + 1
            self.most = max(self.most, self.now)

    def _end(self, request) -> None:
        if request.url.endswith(self.path):
            self.now -= 1


def save_screenshot(page, path: Path) -> None:
    """The whole page as a small PNG (a 256-colour palette), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(f".{path.name}.raw.png")
    page.screenshot(path=str(raw), full_page=True)
    small = path.with_name(f".{path.name}.tmp.png")
    Image.open(raw).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(
        small, optimize=True
    )
    raw.unlink()
    shutil.move(small, path)


def test_an_api_key_session(browser, server, photos, empty_gallery):
    enroll(server, "ada", photos["face"])
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(server.url)
        status = page.get_by_test_id("people-status")
        expect(status).to_contain_text("API key needed (401)")
        expect(page.get_by_test_id("notice")).to_contain_text("API key")
        missing = status.text_content()
        use_key(page, "not-a-key")  # the server tells a wrong key from a missing one
        expect(status).not_to_have_text(missing)
        expect(status).to_contain_text("API key needed (401)")
        use_key(page, server.read_key)
        expect(page.get_by_test_id("notice")).to_be_hidden()
        people = page.get_by_test_id("people-list").locator(":scope > *")
        expect(people).to_have_count(1)
        expect(people.first).to_contain_text("ada")
        page.get_by_test_id("enroll-name").fill("eileen")
        page.get_by_test_id("enroll-file").set_input_files(photos["mirrored"])
        page.get_by_test_id("enroll-submit").click()
        expect(page.get_by_test_id("enroll-status")).to_contain_text(
            "Not allowed with this key (403)"
        )
        page.once("dialog", lambda dialog: dialog.accept())
        people.first.get_by_test_id("people-remove").click()
        expect(status).to_contain_text("Not allowed with this key (403)")
        expect(people).to_have_count(1)
        stored = page.evaluate("[sessionStorage.length, localStorage.length, document.cookie]")
        assert stored == [1, 0, ""]
        page.reload()  # the key is kept for the session: no need to type it again
        expect(people).to_have_count(1)
        expect(status).to_be_hidden()
        with server.api() as api:
            assert api.get("/v1/people").json() == [{"name": "ada", "faces": 1}]
        # Every request of the page was logged, and no key with it.
        logged = server.log.read_text()
        assert 'DELETE /v1/people/ada HTTP/1.1" 403' in logged
        assert server.read_key not in logged and server.write_key not in logged
    finally:
        context.close()


def test_a_key_that_no_request_can_carry_is_refused_as_a_key(browser, server):
    """A key pasted with an invisible character (here a zero-width space): fetch cannot send it
    in a header and fails before anything reaches the server, which must not read as the
    service being down."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(server.url)
        expect(page.get_by_test_id("people-status")).to_contain_text("API key needed (401)")
        use_key(page, server.read_key + "\u200b")
        expect(page.get_by_test_id("notice")).to_contain_text("not an API key")
        page.get_by_test_id("people-refresh").click()
        expect(page.get_by_test_id("people-status")).to_contain_text("API key needed (401)")
        assert page.evaluate("sessionStorage.length") == 0
        use_key(page, server.read_key)
        expect(page.get_by_test_id("notice")).to_be_hidden()
        expect(page.get_by_test_id("people-status")).to_be_hidden()
    finally:
        context.close()
