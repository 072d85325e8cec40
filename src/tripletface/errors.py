"""Errors that tripletface reports to users, each with the exit code the CLI returns for it."""


class TripletfaceError(Exception):
    """Base class: a one-line message that says what is wrong and what to do."""

    exit_code = 2


class InputError(TripletfaceError):
    """Bad input: an unreadable file, a malformed data set, a wrong argument or tensor."""


class GalleryError(TripletfaceError):
    """A gallery that cannot be used as asked: corrupt, read-only, another encoder, empty."""


class GalleryUnavailable(GalleryError):  # noqa: N818 (the name other branches use)
    """The gallery's database cannot be reached now (a server down): try again later."""

    exit_code = 3


class PhotoTakenError(GalleryError):
    """A photo whose content is already enrolled as another person: one photo shows one person
    (HTTP 409)."""
