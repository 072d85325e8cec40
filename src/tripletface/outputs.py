"""The folders commands write the user's outputs into: made with their parents, or refused with
one line that names the option which gave the path, what is in the way and what to do."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tripletface.errors import InputError


def os_reason(error: Exception) -> str:
    """The OS's (or a library's) own words for an error, without the file name repeated."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def cannot_write(option: str, path: str | Path, error: OSError, fix: str) -> InputError:
    """The one-line InputError for an output that cannot be written: ``option`` (the argument
    that gave it), its path, the OS's reason and ``fix``, what to do."""
    return InputError(f"{option} {path}: cannot write there ({os_reason(error)}): {fix}")


def output_folder(path: str | Path, option: str) -> Path:
    """The folder ``path``, made with its parents if it is not there; InputError naming
    ``option`` and the path if it cannot be (a file in the way, no permission)."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise cannot_write(option, folder, error, "give a folder's path, new or existing") from None
    return folder


@contextmanager
def tentative_folder(path: str | Path, option: str) -> Iterator[Path]:
    """``output_folder`` for a block that may fail before it writes anything: the folders it
    made (``path`` and missing parents) are removed again when the block raises and leaves
    them empty, so a refused run leaves no trace; a folder holding anything is kept."""
    folder = Path(path)
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    output_folder(folder, option)
    try:
        yield folder
    except BaseException:
        for empty in made:  # deepest first; stops at the first that is not empty
            try:
                empty.rmdir()
            except OSError:
                break
        raise
