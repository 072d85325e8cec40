"""API keys: a file of key hashes with a scope each, and the check of a presented key.

The file holds one key a line, ``SCOPE SHA256 [LABEL]``; blank lines and ``#`` comments are
ignored. SCOPE is ``read`` (identify, verify, list people) or ``write`` (also enroll and remove).
Only SHA-256 hashes are stored: a key is 32 random bytes, too many to guess, so a fast hash
is enough (passwords would need a slow one). ``tripletface api-key FILE --scope read`` adds a line
and prints the new key once.
"""

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from tripletface.cache import move_into_place, temporary_path
from tripletface.errors import InputError

SCOPES = ("read", "write")


@dataclass(frozen=True)
class ApiKey:
    """One accepted key: the SHA-256 hex digest of its text, its scope and an optional label."""

    digest: str
    scope: str
    label: str = ""


def key_digest(key: str) -> str:
    """SHA-256 hex digest of a key's text, the only form in which keys are stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_keys(path: str | Path) -> list[ApiKey]:
    """The keys of a keys file; InputError naming the line that is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the API keys file ({error})") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split(None, 2)
        if not words:
            continue
        if len(words) < 2 or words[0] not in SCOPES or not _is_digest(words[1]):
            raise InputError(
                f"{path}:{number}: expected 'SCOPE SHA256 [LABEL]' with SCOPE read or write and "
                "a 64-digit hex hash; add keys with tripletface api-key"
            )
        keys.append(ApiKey(words[1].lower(), words[0], words[2].strip() if len(words) > 2 else ""))
    if not keys:
        raise InputError(f"{path}: no keys; add one with tripletface api-key {path} --scope write")
    return keys


def scope_of(keys: list[ApiKey], presented: str) -> str | None:
    """The scope of the presented key, or None; every stored hash is compared in constant time."""
    digest = key_digest(presented)
    found = None
    for key in keys:
        if hmac.compare_digest(key.digest, digest):
            found = key.scope
    return found


def allows(scope: str, needed: str) -> bool:
    """Does a key of ``scope`` give access to a route that needs ``needed``?"""
    return SCOPES.index(scope) >= SCOPES.index(needed)


def add_key(path: str | Path, scope: str, label: str = "") -> str:
    """A new random key, its hash appended to the keys file (written atomically); the key."""
    if scope not in SCOPES:
        raise InputError(f"scope {scope!r}: use read or write")
    if any(c.isspace() or c == "#" for c in label):
        raise InputError(f"label {label!r}: use a single word without '#'")
    path = Path(path)
    key = secrets.token_urlsafe(32)
    old = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    line = f"{scope} {key_digest(key)} {label}".rstrip() + "\n"
    tmp = temporary_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(old + ("" if old.endswith("\n") or not old else "\n") + line)
        move_into_place(tmp, path)
    except OSError as error:
        raise InputError(f"{path}: cannot write the API keys file ({error.strerror})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return key


_HEADER = "# tripletface API keys: SCOPE (read or write) SHA256-OF-KEY [LABEL], one a line\n"


def _is_digest(word: str) -> bool:
    return len(word) == 64 and all(c in "0123456789abcdefABCDEF" for c in word)
