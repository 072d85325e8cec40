"""The JSON the API takes and gives: a pydantic model per request and answer (OpenAPI schemas)."""

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from tripletface.gallery import NAME_LENGTH

Name = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH, description="a person's name")]
Base64Image = Annotated[
    str, Field(description="the photo file's bytes, base64-encoded (a data: URL is accepted)")
]
ImageFile = Annotated[bytes, Field(description="the photo file (JPEG, PNG, WebP, GIF, BMP, TIFF)")]


class Error(BaseModel):
    """Every 4xx and 5xx answer."""

    error: str = Field(description="one line: what is wrong and what to do")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    people: int
    faces: int
    encoder: str


class EnrollOptions(BaseModel):
    largest: bool = Field(False, description="enroll the largest face of a photo with several")


class VerifyOptions(BaseModel):
    name: Name


class ImageJson(BaseModel):
    image: Base64Image


class EnrollJson(ImageJson, EnrollOptions):
    pass


class VerifyJson(ImageJson, VerifyOptions):
    pass


class ImageForm(BaseModel):
    image: ImageFile


class EnrollForm(ImageForm):
    largest: bool = False


class VerifyForm(ImageForm, VerifyOptions):
    pass


class Enrolled(BaseModel):
    name: str
    face_ids: list[int] = Field(description="ids of the faces added, committed to the gallery")


class Face(BaseModel):
    box: list[int] = Field(
        min_length=4, max_length=4, description="[left, top, right, bottom] in image pixels"
    )
    name: str | None = Field(description="the nearest enrolled person, null for a stranger")
    distance: float = Field(description="squared Euclidean distance to the nearest enrolled face")
    confidence: float | None = Field(
        description="estimated probability that the faces are the same person (null: no model)"
    )


class Identified(BaseModel):
    faces: list[Face]


class Verified(BaseModel):
    same: bool
    distance: float = Field(description="smallest squared distance to the person's faces")
    threshold: float = Field(description="distances up to this count as the same person")
    confidence: float | None = Field(
        description="estimated probability that the faces are the same person (null: no model)"
    )


class Person(BaseModel):
    name: str
    faces: int


class Removed(BaseModel):
    removed: int = Field(description="number of faces deleted with the person")
