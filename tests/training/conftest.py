from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.datasets import write_image_folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "data", {"a": 12, "b": 12})


@pytest.fixture
def png_bytes() -> bytes:
    import io

    pixels = (np.random.default_rng(1).random((45, 37, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
