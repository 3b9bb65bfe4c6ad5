"""decode_image: every kind of bad or unusual image gives an RGB picture or an ImageDecodeError with a reason."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from grit_pipeline import status
from grit_pipeline.grounding import ground_batch
from grit_pipeline.images import ImageDecodeError, decode_image, letterbox_reason


def encode(image: Image.Image, fmt: str, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def gradient(width=40, height=30) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1), "RGB")


def test_plain_jpeg_and_png_decode_to_rgb():
    for fmt in ("JPEG", "PNG", "WEBP"):
        image = decode_image(encode(gradient(), fmt))
        assert image.mode == "RGB" and image.size == (40, 30)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    data = encode(gradient(40, 30), "JPEG", exif=exif.tobytes())
    image = decode_image(data)
    assert image.size == (30, 40)  # width and height swapped: the size a user sees


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (20, 10), (0, 255, 255, 0))  # pure red in CMYK
    image = decode_image(encode(cmyk, "JPEG", quality=95))
    assert image.mode == "RGB"
    r, g, b = image.getpixel((10, 5))
    assert r > 200 and g < 60 and b < 60


def test_16bit_greyscale_png_is_scaled_not_clipped():
    values = np.full((8, 8), 32768, dtype=np.uint16)  # mid grey in 16 bits
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    image = decode_image(data)
    assert image.mode == "RGB"
    assert 120 <= image.getpixel((3, 3))[0] <= 135  # not 255 (clipped) nor 0


def test_16bit_rgb_png():
    # Hand-written 16-bit RGB PNG (Pillow cannot write one): two pixels, one red, one mid-grey.
    width, height = 2, 1
    row = b"\x00" + struct.pack(">HHHHHH", 65535, 0, 0, 32768, 32768, 32768)
    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row)) + chunk(b"IEND", b""))
    image = decode_image(data)
    assert image.mode == "RGB" and image.size == (2, 1)
    assert image.getpixel((0, 0))[0] > 250 and 120 <= image.getpixel((1, 0))[0] <= 135


def test_palette_with_alpha_goes_on_white():
    palette_image = Image.new("P", (10, 10), 0)
    palette_image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette_image.paste(1, (0, 0, 5, 10))  # left half red, right half transparent (index 0)
    data = encode(palette_image, "PNG", transparency=0)
    image = decode_image(data)
    assert image.mode == "RGB"
    assert image.getpixel((2, 5)) == (255, 0, 0)
    assert image.getpixel((8, 5)) == (255, 255, 255)


def test_rgba_and_la():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 0))
    assert decode_image(encode(rgba, "PNG")).getpixel((1, 1)) == (255, 255, 255)
    la = Image.new("LA", (4, 4), (0, 255))
    assert decode_image(encode(la, "PNG")).getpixel((1, 1)) == (0, 0, 0)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (12, 12), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    image = decode_image(data)
    assert image.mode == "RGB"
    r, g, b = image.getpixel((5, 5))
    assert r > 200 and g < 50 and b < 50


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (None, "no image data"),
        (b"this is not an image at all", "not a recognised image format"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "not a recognised image format"),  # JPEG magic, garbage after
    ],
)
def test_bad_bytes_raise_with_reason(data, words):
    with pytest.raises(ImageDecodeError) as error:
        decode_image(data)
    assert words in str(error.value)


def test_corrupt_pixel_data():
    data = bytearray(encode(gradient(64, 64), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start:start + 40] = b"\x13" * 40  # garbage where the compressed pixels are
    with pytest.raises(ImageDecodeError) as error:
        decode_image(bytes(data))
    assert "corrupt" in str(error.value) or "truncated" in str(error.value)


def test_truncated_jpeg_and_png():
    for fmt in ("JPEG", "PNG"):
        data = encode(gradient(200, 200), fmt)
        with pytest.raises(ImageDecodeError) as error:
            decode_image(data[: len(data) // 2])
        assert "truncated" in str(error.value) or "corrupt" in str(error.value)


def test_huge_image_rejected_from_header_before_decoding():
    # A PNG header claiming 30000 x 30000 pixels: rejected on the header, no pixel is decoded.
    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    with pytest.raises(ImageDecodeError) as error:
        decode_image(data)
    assert "too large" in str(error.value) and "900000000" in str(error.value)
    # and an ordinary image over a small custom limit
    with pytest.raises(ImageDecodeError):
        decode_image(encode(gradient(40, 30), "PNG"), max_pixels=1000)
    assert decode_image(encode(gradient(40, 30), "PNG"), max_pixels=1200).size == (40, 30)


class _NeverCalled:
    def detect(self, images, phrases):  # pragma: no cover - the point is that it is never reached
        raise AssertionError("bad images must not reach the detector")


def test_every_bad_image_becomes_a_status_row_in_ground_batch():
    cases = {
        "zero_byte": b"",
        "corrupt": b"GIF89a-not-really",
        "truncated": encode(gradient(100, 100), "JPEG")[:300],
        "huge": encode(gradient(300, 300), "PNG"),  # over the limit below
        "missing": None,
    }
    results = ground_batch(list(cases.values()), [["a dog"]] * len(cases), _NeverCalled(), max_pixels=50_000)
    assert [r.status for r in results] == [status.DECODE_ERROR] * len(cases)
    assert all(r.reason for r in results)


def test_letterbox_reason():
    # img2dataset border: 640x480 -> 256x256 with white bands
    meta = {"width": 256, "height": 256, "original_width": 640, "original_height": 480}
    reason = letterbox_reason(meta)
    assert reason and "640x480" in reason and "keep_ratio" in reason
    # center_crop also changes the aspect ratio
    assert letterbox_reason({"width": 256, "height": 256, "original_width": 300, "original_height": 500})
    # keep_ratio (with rounding), keep_ratio_largest and no resize keep it
    assert letterbox_reason({"width": 341, "height": 256, "original_width": 640, "original_height": 480}) is None
    assert letterbox_reason({"width": 256, "height": 455, "original_width": 1080, "original_height": 1920}) is None
    assert letterbox_reason({"width": 640, "height": 480, "original_width": 640, "original_height": 480}) is None
    # border on an image that is already square pads nothing
    assert letterbox_reason({"width": 256, "height": 256, "original_width": 512, "original_height": 512}) is None
    # nothing to check
    assert letterbox_reason({}) is None
    assert letterbox_reason(None) is None
    assert letterbox_reason({"width": 256, "height": 256, "original_width": None, "original_height": None}) is None
