"""The shared decoder's own interface: what it accepts and the errors it raises.

What it decodes each format to is tested through the service (tests/app/test_images.py) and against
the other paths (tests/app/test_parity.py).
"""

import io

import numpy as np
import pytest

from imaging.decode import CorruptImage, TooManyPixels, UnsupportedFormat, decode
from tests.image_corpus import encode, photo, with_orientation


def test_bytes_files_and_paths_decode_alike(tmp_path):
    data = encode(photo(), "JPEG", quality=90)
    (tmp_path / "photo.jpg").write_bytes(data)

    from_bytes = decode(data)

    assert from_bytes.dtype == np.uint8 and from_bytes.shape == (53, 75, 3)
    np.testing.assert_array_equal(decode(io.BytesIO(data)), from_bytes)
    np.testing.assert_array_equal(decode(tmp_path / "photo.jpg"), from_bytes)
    np.testing.assert_array_equal(decode(str(tmp_path / "photo.jpg")), from_bytes)


@pytest.mark.parametrize(
    ("data", "error", "detail"),
    [
        (b"hello", UnsupportedFormat, "not a JPEG, PNG, GIF, BMP or WebP image"),
        (encode(photo(), "PNG")[:200], CorruptImage, "truncated or corrupt PNG image"),
    ],
)
def test_errors_say_what_is_wrong_without_naming_a_file(data, error, detail):
    with pytest.raises(error) as caught:
        decode(data)

    assert caught.value.detail.startswith(detail)
    assert isinstance(caught.value, ValueError)  # training's command reports ValueErrors as exit 2


def test_the_pixel_limit_is_optional():
    data = encode(photo(), "PNG")

    assert decode(data).shape == (53, 75, 3)
    with pytest.raises(TooManyPixels, match=r"^75x53 is 3975 pixels, over MAX_IMAGE_PIXELS \(3974\)$"):
        decode(data, max_pixels=3974)


def test_a_size_scales_jpegs_only():
    image = photo(301, 263)

    assert decode(encode(image, "JPEG", quality=90), size=(32, 32)).shape == (33, 38, 3)
    assert decode(encode(image, "PNG"), size=(32, 32)).shape == (263, 301, 3)


def test_a_photo_stored_sideways_is_scaled_to_cover_the_size_once_upright():
    """Stored 400 x 100 with orientation 6: upright 100 wide, 400 high. For 50 high x 100 wide it can
    only be decoded at full size; the stored orientation alone would allow 1/2, 50 wide once upright."""
    image = photo(400, 100)

    assert decode(encode(image, "JPEG", quality=90), size=(50, 100)).shape == (50, 200, 3)
    assert decode(encode(image, "JPEG", quality=90, exif=with_orientation(6)), size=(50, 100)).shape == (
        400,
        100,
        3,
    )
