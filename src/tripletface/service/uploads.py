"""Request bodies as fields, read as they stream in and refused once they pass the size limit.

A POST carries its photo either as multipart/form-data (a file field ``image`` and text fields)
or as JSON (``{"image": "<base64>", ...}``). Both are parsed in memory while the body arrives, so
an oversized upload is refused after ``limit`` bytes, never stored first: nothing reaches the
disk (Starlette's own form parser spools large files to temporary files).
"""

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from tripletface.errors import InputError
from tripletface.service.photos import NotAnImageError, TooLargeError

#: Text fields of a multipart body larger than this are refused (names and flags are short).
MAX_FIELD_BYTES = 4096


class MissingFieldError(InputError):
    """A required field is absent or has the wrong type (HTTP 422)."""


@dataclass
class Body:
    """The image of a request (raw bytes, or base64 text from JSON) and its other fields."""

    image: bytes
    base64_text: bool
    fields: dict[str, object] = field(default_factory=dict)


async def read_body(
    content_type: str | None, length: str | None, chunks: AsyncIterator[bytes], limit: int
) -> Body:
    """The fields of a multipart or JSON body of at most ``limit`` bytes; InputError otherwise."""
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    kind, options = parse_options_header(content_type or "")
    if kind == b"multipart/form-data":
        return await _multipart(options.get(b"boundary"), chunks, limit)
    if kind == b"application/json":
        return _json(await _bounded(chunks, limit))
    raise NotAnImageError(
        f"Content-Type {content_type or 'missing'}: send multipart/form-data with a file field "
        "'image', or application/json with the image base64-encoded"
    )


async def _bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def _json(raw: bytes) -> Body:
    span = _image_span(raw)
    if span is not None:
        rest = raw[: span[0]] + raw[span[1] :]
        data = _json_object(rest)
        # Without escapes in the rest, its top-level "image" can only be the literal cut at.
        if b"\\" not in rest and data.get("image") == "":
            del data["image"]
            return Body(raw[span[0] : span[1]], True, data)
    data = _json_object(raw)
    image = data.pop("image", None)
    if not isinstance(image, str):
        raise MissingFieldError("image: required, the photo's bytes as a base64 string")
    return Body(image.encode("ascii", "replace"), True, data)


def _json_object(text: bytes) -> dict:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError('the body is not valid JSON; send {"image": "<base64>", ...}') from None
    if not isinstance(data, dict):
        raise MissingFieldError('the JSON body must be an object such as {"image": "<base64>"}')
    return data


#: A JSON object key "image" and the opening quote of its string value.
_IMAGE_KEY = re.compile(rb'"image"[ \t\r\n]*:[ \t\r\n]*"')


def _image_span(raw: bytes) -> tuple[int, int] | None:
    """(start, end) of the text of a UTF-8 JSON body's one ``"image": "..."`` string when it is
    ASCII without quotes or backslashes (base64 is), else None.

    The JSON scanner would pass over the photo's megabytes of text on the event loop, holding the
    GIL; byte searches cut it out instead and only the few fields left are parsed (``_json``
    parses the whole body when the cut might not be the photo). Cutting a string free of quotes
    and backslashes leaves every other token as it was.
    """
    if b"\x00" in raw[:4]:  # UTF-16 or UTF-32 (json.detect_encoding): bytes are not characters
        return None
    key = raw.find(b'"image"')
    if key < 1 or raw[key - 1 : key] == b"\\" or raw.find(b'"image"', key + 7) >= 0:
        return None
    match = _IMAGE_KEY.match(raw, key)
    end = -1 if match is None else raw.find(b'"', match.end())
    if end < 0 or raw.find(b"\\", match.end(), end) >= 0:
        return None
    return (match.end(), end) if raw[match.end() : end].isascii() else None


async def _multipart(boundary: bytes | None, chunks: AsyncIterator[bytes], limit: int) -> Body:
    if not boundary:
        raise _malformed("no boundary in its Content-Type")
    parts = _Parts()
    try:
        parser = MultipartParser(boundary, parts.callbacks(), max_size=limit)
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parser.write(chunk)
        parser.finalize()
    except (MultipartParseError, ValueError) as error:
        raise _malformed(str(error)) from None
    if not parts.complete:
        raise _malformed("it ends before its closing boundary")
    image = parts.values.pop("image", None)
    if image is None:
        raise MissingFieldError("image: required, a file field holding the photo")
    text = {}
    for name, value in parts.values.items():
        if len(value) > MAX_FIELD_BYTES:
            raise InputError(f"{name}: a text field of more than {MAX_FIELD_BYTES} bytes")
        try:
            text[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{name}: not UTF-8 text") from None
    return Body(bytes(image), False, text)


class _Parts:
    """Collects the parts of a multipart body by field name (the first of each name wins)."""

    def __init__(self) -> None:
        self.values: dict[str, bytearray] = {}
        self.complete = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._name: str | None = None
        self._data = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_part_data": lambda data, start, end: self._data.extend(data[start:end]),
            "on_part_end": self._end,
            "on_end": self._finish,
        }

    def _begin(self) -> None:
        self._name, self._data = None, bytearray()

    def _header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            _, options = parse_options_header(bytes(self._header_value))
            name = options.get(b"name")
            self._name = None if name is None else name.decode("utf-8", "replace")
        self._header_field, self._header_value = bytearray(), bytearray()

    def _end(self) -> None:
        if self._name is not None and self._name not in self.values:
            self.values[self._name] = self._data

    def _finish(self) -> None:
        self.complete = True


def _malformed(why: str) -> InputError:
    return InputError(
        f"the multipart body is malformed ({why}); let the HTTP client build the form"
    )


def _too_large(limit: int) -> TooLargeError:
    return TooLargeError(
        f"the upload is larger than the server's limit of {limit / 1e6:g} MB; send a smaller "
        "photo (or start the server with a larger --max-upload)"
    )
