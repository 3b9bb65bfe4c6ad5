"""Image decoding for the grounding stage, and the img2dataset letterbox check.

``decode_image`` turns raw bytes into the RGB picture the detector sees, with the EXIF orientation applied
(the way a browser shows the photo), so boxes are normalised by the size a user sees. Every failure is an
``ImageDecodeError`` whose message is the human reason stored with status ``decode_error``.
"""
from __future__ import annotations

import io
import math
import warnings
from typing import Any, Mapping

# Pillow's own decompression-bomb warning limit (about 9459 x 9459 pixels): large enough for any photo
# img2dataset keeps, small enough that one sample cannot take gigabytes of memory.
DEFAULT_MAX_PIXELS = 89_478_485
# Stored and original aspect ratios may differ by this many pixels (rounding in the resize) before the
# sample counts as letterboxed / cropped.
ASPECT_TOLERANCE_PX = 1.5
# Background for transparent pixels; img2dataset mattes alpha on white too.
ALPHA_BACKGROUND = (255, 255, 255)


class ImageDecodeError(ValueError):
    """The bytes are not a usable image; ``str(error)`` is the reason (status ``decode_error``)."""


def decode_image(data: bytes | bytearray | memoryview | None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Decode image bytes to an RGB ``PIL.Image`` with EXIF orientation applied.

    Handles CMYK, 16-bit, palette and alpha images (transparent pixels on white) and animations (first frame).
    Raises ``ImageDecodeError`` for missing, empty, corrupt, truncated or unsupported data, and for images
    with more than ``max_pixels`` pixels (checked from the header, before any pixel is decoded).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if data is None:
        raise ImageDecodeError("no image data")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageDecodeError(f"image data must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageDecodeError("empty image data (0 bytes)")
    try:
        with warnings.catch_warnings():
            # We apply our own limit below; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(bytes(data)))
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageDecodeError(f"image has no pixels ({width}x{height})")
            if max_pixels is not None and width * height > max_pixels:
                raise ImageDecodeError(
                    f"image too large: {width}x{height} = {width * height} pixels > max_pixels={max_pixels}"
                )
            if getattr(image, "is_animated", False):
                image.seek(0)  # animated GIF/PNG/WebP: the first frame
            image.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as error:
        # Pillow refuses in open() itself beyond twice its own limit (~179 Mpixels), before our check.
        raise ImageDecodeError(f"image too large (Pillow decompression-bomb guard): {error}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not a recognised image format ({len(data)} bytes)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        message = str(error) or type(error).__name__
        if "truncated" in message:
            raise ImageDecodeError(f"truncated image data: {message}") from None
        raise ImageDecodeError(f"corrupt image data: {message}") from None
    except Exception as error:  # a Pillow plugin bug must still become a status row, not a crash
        raise ImageDecodeError(f"image decoder failed: {type(error).__name__}: {error}") from None

    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF: keep the pixels as stored
        pass
    try:
        return to_rgb(image)
    except Exception as error:
        raise ImageDecodeError(f"cannot convert {image.mode} image to RGB: {error}") from None


def to_rgb(image):
    """Any Pillow mode -> 8-bit RGB: 16/32-bit and float scaled down (not clipped), alpha on white."""
    import numpy as np
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        # 16-bit greyscale (I;16*, or I holding 16-bit values) and float images: scale into 0..255;
        # Pillow's own convert() would clip everything above 255 to white.
        array = np.asarray(image, dtype=np.float64)
        if mode == "F":
            low, high = float(np.nanmin(array)), float(np.nanmax(array))
            scale_max = high if high > 1.0 else 1.0
            array = np.clip(array, min(low, 0.0), scale_max) / (scale_max or 1.0) * 255.0
        else:
            array = array / 257.0 if array.max(initial=0) > 255 else array
        grey = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")
        return grey.convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, I;16 handled above


def letterbox_reason(meta: Mapping[str, Any] | None) -> str | None:
    """Why an img2dataset sample's boxes would not map back to the original image, or None when they would.

    img2dataset records ``width``/``height`` (stored image) and ``original_width``/``original_height`` in each
    sample's json. ``resize_mode=border`` pads the image to a square (letterbox) and ``center_crop`` cuts it:
    either way the stored aspect ratio differs from the original one, and boxes normalised to the stored image
    are shifted on the image at ``url``. (img2dataset does not record the mode; a ``resize_mode`` key
    is used in the reason when present.) ``no``, ``keep_ratio`` and ``keep_ratio_largest`` keep the aspect
    ratio and pass. Metadata without the four sizes passes (nothing to check). Status: ``letterboxed``.
    """
    if not meta:
        return None
    try:
        width, height = _positive(meta.get("width")), _positive(meta.get("height"))
        original_width = _positive(meta.get("original_width"))
        original_height = _positive(meta.get("original_height"))
    except (TypeError, ValueError, OverflowError):
        return None  # unusable sizes are the ingest's bad_metadata; nothing to check here
    if None in (width, height, original_width, original_height):
        return None
    # Expected stored width for the stored height if the aspect ratio was kept, and vice versa.
    width_error = abs(width - original_width * height / original_height)
    height_error = abs(height - original_height * width / original_width)
    if min(width_error, height_error) <= ASPECT_TOLERANCE_PX:
        return None
    mode = meta.get("resize_mode") or "border (letterbox) or center_crop"
    return (
        f"stored image {width}x{height} does not keep the aspect ratio of the original "
        f"{original_width}x{original_height} (img2dataset resize_mode {mode}); boxes normalised to it would be "
        f"shifted on the original image. Re-download with --resize_mode keep_ratio"
    )


def _positive(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"not finite: {value!r}")
    number = int(value)
    return number if number > 0 else None
