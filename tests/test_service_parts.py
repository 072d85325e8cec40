"""The service's parts without a server: API keys, names, encoder batching, request bodies."""

import asyncio
import base64
import functools
import io
import json
import os
import signal
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from json import loads

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tripletface.errors import InputError
from tripletface.gallery import SQLiteGallery, open_gallery
from tripletface.service import uploads
from tripletface.service.app import create_app
from tripletface.service.batching import EncoderBatcher
from tripletface.service.engine import Engine, NotFoundError
from tripletface.service.keys import add_key, allows, key_digest, load_keys, scope_of
from tripletface.service.photos import NotAnImageError, TooLargeError, decode_base64, decode_image
from tripletface.service.uploads import MissingFieldError, read_body
from tripletface.workers import worker_pool


def test_keys_file_round_trip_holds_only_hashes(tmp_path):
    path = tmp_path / "keys.txt"
    write, read = add_key(path, "write", "admin"), add_key(path, "read")
    keys = load_keys(path)
    assert [(k.scope, k.label) for k in keys] == [("write", "admin"), ("read", "")]
    assert scope_of(keys, write) == "write" and scope_of(keys, read) == "read"
    assert scope_of(keys, write + "x") is None
    assert write not in path.read_text() and key_digest(write) in path.read_text()
    assert allows("write", "read") and not allows("read", "write")


def test_the_keys_file_is_private_and_a_killed_writers_temporary_goes(tmp_path):
    path = tmp_path / "keys.txt"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    leftover = tmp_path / f".keys.txt.{child.pid}-{'0' * 16}.tmp"
    leftover.write_text("write 00 half")
    old = os.umask(0o022)
    try:
        add_key(path, "read")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keys.txt"]


def test_a_bad_keys_line_is_named(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("# comment\n\nwrite nothex\n")
    with pytest.raises(InputError, match=r"keys.txt:3:"):
        load_keys(path)


def test_concurrent_requests_share_one_encoder_pass():
    passes = []

    def encode(chips: np.ndarray) -> np.ndarray:
        passes.append(len(chips))
        return chips.reshape(len(chips), -1).astype(np.float32).sum(axis=1, keepdims=True)

    async def main():
        batcher = EncoderBatcher(encode, wait=0.05)
        runner = asyncio.create_task(batcher.run())
        requests = [np.full((1 + i % 3, 2, 2, 3), i, np.uint8) for i in range(8)]
        answers = await asyncio.gather(*(batcher.embed(chips) for chips in requests))
        runner.cancel()
        batcher.close()
        return requests, answers

    requests, answers = asyncio.run(main())
    assert passes == [sum(len(r) for r in requests)]  # one pass for all eight
    for chips, answer in zip(requests, answers, strict=True):
        assert np.array_equal(answer, encode(chips))


@pytest.mark.parametrize("kind", ["JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_photos_in_the_listed_formats_are_decoded(kind):
    """MPO: the two-image JPEG of many phones and cameras."""
    pixels = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    image, buffer = Image.fromarray(pixels), io.BytesIO()
    image.save(
        buffer,
        format=kind,
        **({"save_all": True, "append_images": [image]} if kind == "MPO" else {}),
    )
    decoded = decode_image(buffer.getvalue())
    assert decoded.shape == (24, 32, 3) and decoded.dtype == np.uint8
    if kind in ("PNG", "BMP", "TIFF"):  # lossless
        assert np.array_equal(decoded, pixels)


def test_formats_outside_the_list_are_refused_unopened():
    """EPS would run Ghostscript on the upload; PPM is harmless but not listed either."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto showpage\n"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PPM")
    for data in (eps, buffer.getvalue(), b"", b"<svg xmlns='http://www.w3.org/2000/svg'/>"):
        with pytest.raises(NotAnImageError):
            decode_image(data)


def _chunks(data: bytes, size: int = 7):
    async def stream():
        for start in range(0, len(data), size):
            yield data[start : start + size]

    return stream()


def _read(content_type: str, data: bytes, limit: int = 10_000):
    return asyncio.run(read_body(content_type, None, _chunks(data), limit))


def test_multipart_and_json_bodies_give_the_same_fields():
    form = (
        b'--XX\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        b'\x89PNG bytes\r\n--XX\r\nContent-Disposition: form-data; name="name"\r\n\r\n'
        b"Ada\r\n--XX--\r\n"
    )
    body = _read("multipart/form-data; boundary=XX", form)
    assert (body.image, body.base64_text, body.fields) == (b"\x89PNG bytes", False, {"name": "Ada"})
    body = _read("application/json", b'{"image": "iVBORw==", "name": "Ada"}')
    assert (body.image, body.base64_text, body.fields) == (b"iVBORw==", True, {"name": "Ada"})
    assert decode_base64(b"data:image/png;base64,iVBORw==") == b"\x89PNG"


def test_bodies_over_the_limit_and_without_an_image_are_refused():
    with pytest.raises(TooLargeError):
        _read("application/json", b'{"image": "' + b"A" * 200 + b'"}', limit=100)
    with pytest.raises(MissingFieldError):
        _read("application/json", b'{"picture": "abc"}')
    with pytest.raises(InputError, match="malformed"):
        _read("multipart/form-data; boundary=XX", b"--XX\r\nContent-Disposition: form-da")


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
_VALUES = st.recursive(
    st.one_of(_TEXT, st.booleans(), st.integers()),
    lambda inner: st.dictionaries(st.one_of(_TEXT, st.just("image")), inner, max_size=3),
    max_leaves=6,
)


def _whole(raw: bytes):
    """What read_body should give for a JSON body: (image bytes, fields) from parsing it whole."""
    expected = json.loads(raw)
    return expected.pop("image").encode("ascii", "replace"), expected


@given(
    fields=st.dictionaries(_TEXT, _VALUES, max_size=4),
    image=st.one_of(st.text("ABCDEFabc+/=", max_size=40), _TEXT),
    indent=st.sampled_from([None, 0, 3]),
    first=st.booleans(),
    ascii_only=st.booleans(),
)
def test_a_json_body_gives_what_parsing_it_whole_gives(fields, image, indent, first, ascii_only):
    fields.pop("image", None)
    items = [("image", image), *fields.items()]
    document = dict(items if first else items[::-1])
    raw = json.dumps(document, indent=indent, ensure_ascii=ascii_only).encode()
    body = _read("application/json", raw, limit=len(raw))
    assert (body.image, body.fields) == _whole(raw) and body.base64_text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"\\u0069mage": "", "a": {"image": "payload"}}',  # the top-level key escaped
        '{"image": "", "k": "\u6922\u616d\u6567\u3a22\u2220\u7878\u2022"}'.encode(
            "utf-16-le"
        ),  # UTF-16 bytes that spell "image": "xx" inside another string
        '{"image": "QUJD\u00e9"}'.encode(),
        b'{"image": "x", "image": "y"}',
    ],
)
def test_bodies_the_photo_cannot_be_cut_from_are_parsed_whole(raw):
    body = _read("application/json", raw, limit=len(raw))
    assert (body.image, body.fields) == _whole(raw)


def test_a_deeply_nested_json_body_is_refused():
    with pytest.raises(InputError, match="not valid JSON"):
        _read("application/json", b'{"image": "", "a": ' + b"[" * 100_000, limit=10**6)


def test_the_photo_of_a_json_body_is_cut_out_not_parsed(monkeypatch):
    parsed = []
    monkeypatch.setattr(uploads.json, "loads", lambda text: parsed.append(len(text)) or loads(text))
    image = base64.b64encode(bytes(3_000_000))
    raw = b'{"name": "Ada", \n "image" :  "' + image + b'", "largest": true}'
    body = _read("application/json", raw, limit=len(raw))
    assert (body.image, body.fields) == (image, {"name": "Ada", "largest": True})
    assert max(parsed) < 100  # the scanner never saw the photo's 4 MB of text


class _GalleryOnly:
    """The part of a FaceRecognizer that an Engine's gallery work uses: a 4-d gallery file,
    opened by the thread that uses it (as FaceRecognizer opens it)."""

    encoder_name = "test"
    chips = None  # the chip maker detection workers are sent: these tests detect nothing

    def __init__(self, path):
        self.path = path

    @functools.cached_property
    def gallery(self) -> SQLiteGallery:
        return open_gallery(self.path, "test", "v1", 4)

    def close(self) -> None:
        if "gallery" in vars(self):
            self.gallery.close()


def test_a_person_another_process_removed_meanwhile_is_not_found(tmp_path, monkeypatch):
    """Two DELETEs of one person on two servers (or the CLI's remove): the one that comes second
    is told 404, as for anyone not enrolled, not 400."""
    path = tmp_path / "people.db"
    with open_gallery(path, "test", "v1", 4) as gallery:
        gallery.add_faces("ada", np.eye(4, dtype=np.float32)[:1])
    remove = SQLiteGallery.remove

    def removed_elsewhere_first(self, name: str) -> int:
        monkeypatch.setattr(SQLiteGallery, "remove", remove)
        with open_gallery(path, "test", "v1", 4) as other:
            other.remove(name)
        return remove(self, name)

    monkeypatch.setattr(SQLiteGallery, "remove", removed_elsewhere_first)
    engine = Engine(_GalleryOnly(path), ThreadPoolExecutor(1))
    try:
        with pytest.raises(NotFoundError, match="'ada' is not enrolled"):
            asyncio.run(engine.remove("ada"))
    finally:
        engine.close()


def test_a_killed_detection_worker_gives_503_and_an_unhealthy_server(tmp_path):
    """A worker killed (the kernel's OOM killer, say) leaves the pool broken for good: every
    photo is refused with a 503 saying to restart, and /healthz says so too (it is what a
    supervisor watches), not a 500 on every request behind a healthy /healthz."""
    from fastapi.testclient import TestClient

    pool = worker_pool(1)
    os.kill(pool.submit(os.getpid).result(), signal.SIGKILL)
    engine = Engine(_GalleryOnly(tmp_path / "people.db"), pool)
    with TestClient(create_app(engine)) as client:
        answer = client.post("/v1/identify", files={"image": b"a photo"})
        assert answer.status_code == 503 and "restart" in answer.json()["error"], answer.text
        health = client.get("/healthz")
        assert health.status_code == 503 and "restart" in health.json()["error"], health.text
        assert client.get("/metrics").status_code == 200
    engine.close()


def test_health_and_gauges_count_without_reading_the_people_list(tmp_path, monkeypatch):
    """A gallery of millions of people: /healthz and /metrics ask the database for two counts
    instead of reading every person's row."""
    from fastapi.testclient import TestClient

    path = tmp_path / "people.db"
    with open_gallery(path, "test", "v1", 4) as gallery:
        gallery.add_faces("ada", np.eye(4, dtype=np.float32)[:2])
        gallery.add_faces("bob", np.eye(4, dtype=np.float32)[2:3])

    def listed(self) -> list:
        """What people() must not be asked for here."""
        raise AssertionError("the whole people list was read")

    monkeypatch.setattr(SQLiteGallery, "people", listed)
    engine = Engine(_GalleryOnly(path), ThreadPoolExecutor(1))
    with TestClient(create_app(engine)) as client:
        assert client.get("/healthz").json() == {
            "status": "ok",
            "people": 2,
            "faces": 3,
            "encoder": "test",
        }
        metrics = client.get("/metrics").text.splitlines()
        assert "tripletface_gallery_people 2.0" in metrics
        assert "tripletface_gallery_faces 3.0" in metrics
    engine.close()
