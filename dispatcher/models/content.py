"""What a message may hold besides plain text: content parts, as OpenAI Chat Completions has them.

A part is text (`{"type": "text", "text": ...}`) or an image
(`{"type": "image_url", "image_url": {"url": ..., "detail": ...}}`) given by an
`https://` URL, which the vendor fetches, or by a base64 `data:image/...` URL.
A data URL must hold an image of a type vendors take (PNG, JPEG, GIF, WEBP),
and its bytes must start as that type's do, so a text file renamed `.png` is
refused at submit rather than by the vendor.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, ConfigDict, Field

from dispatcher.models.base import StrictModel, Text

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "ContentPart",
    "ImagePart",
    "ImageUrl",
    "TextPart",
    "check_image_url",
    "data_url_image",
]

# The image types OpenAI, Azure, Anthropic and Cohere all accept, with the bytes each begins with.
IMAGE_MEDIA_TYPES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


def data_url_image(url: str) -> tuple[str, bytes]:
    """The media type and bytes of a base64 image data URL; ValueError if it is not one."""
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise ValueError("a data URL must read data:image/<type>;base64,<data>")
    media_type = header[len("data:") : -len(";base64")].lower()
    if media_type not in IMAGE_MEDIA_TYPES:
        accepted = ", ".join(sorted(IMAGE_MEDIA_TYPES))
        raise ValueError(f"media type {media_type!r} is not an image type we send ({accepted})")
    try:
        image = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the data URL's data is not valid base64") from None
    if not image.startswith(IMAGE_MEDIA_TYPES[media_type]):
        raise ValueError(f"the data URL's bytes are not a {media_type} image")
    if media_type == "image/webp" and image[8:12] != b"WEBP":
        raise ValueError("the data URL's bytes are not a image/webp image")
    return media_type, image


def check_image_url(url: str) -> str:
    """`url` if it is an `https://` URL with a host or a base64 image data URL."""
    if url[:5].lower() == "data:":
        data_url_image(url)
        return url
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ValueError("an image URL must be https://host/... or data:image/<type>;base64,...")
    if any(char <= " " for char in url):
        raise ValueError("an image URL may not contain spaces or control characters")
    return url


class TextPart(StrictModel):
    """A piece of text in a message's list of parts."""

    model_config = ConfigDict(frozen=True)

    type: Literal["text"]
    text: Text


class ImageUrl(StrictModel):
    """Where an image is: an https URL, or the image itself as a base64 data URL."""

    model_config = ConfigDict(frozen=True)

    url: Annotated[str, AfterValidator(check_image_url)]
    detail: Literal["auto", "low", "high"] | None = Field(
        default=None, description="How closely the model looks (OpenAI, Azure); None: auto."
    )


class ImagePart(StrictModel):
    """An image in a user message's list of parts."""

    model_config = ConfigDict(frozen=True)

    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
