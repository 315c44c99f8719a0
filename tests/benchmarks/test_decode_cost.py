"""The decode-cost figures the benchmark reports: each step of one large JPEG, timed on its own."""

import io

import pytest
from PIL import Image

from benchmarks.decode_cost import compare_with_djpeg, measure_decode_cost, photo_jpeg
from tests.support.models import IMAGE_SIZE, MODEL_NAME


def test_a_photo_is_timed_at_full_size_and_at_the_dct_scale_the_model_allows(model_repository):
    data = photo_jpeg(width=801, height=601)
    assert Image.open(io.BytesIO(data)).size == (801, 601)

    cost = measure_decode_cost(model_repository / MODEL_NAME / "1", data, repeats=2, batch_size=4)

    assert cost["image"] == {"width": 801, "height": 601, "bytes": len(data)}
    assert cost["model_input"] == [IMAGE_SIZE, IMAGE_SIZE]
    assert cost["drafted_to"] == [76, 101]  # 1/8: 601 // 32 and 801 // 32 are both 8 or more
    steps = [key for key in cost if key.endswith("_ms") or key.endswith("_ms_per_image")]
    assert steps == [
        "decode_full_ms",
        "decode_drafted_ms",
        "resize_full_ms",
        "resize_drafted_ms",
        "model_batch1_ms",
        "model_batch4_ms_per_image",
    ]
    assert all(cost[step] > 0 for step in steps)


def test_the_decoder_is_timed_against_djpeg_at_the_same_scale_on_the_same_file():
    data = photo_jpeg(width=801, height=601)

    cost = compare_with_djpeg(data, repeats=2)

    assert cost["image"] == {"width": 801, "height": 601, "bytes": len(data)}
    assert cost["decoded_to"] == [76, 101]  # 1/8 scale, as djpeg -scale 1/8 decodes it
    assert cost["decode_cpu_ms_per_megapixel"] > 0
    assert cost["djpeg_start_up_cpu_ms"] > 0
    speed = cost["djpeg_cpu_ms_per_megapixel"] / cost["decode_cpu_ms_per_megapixel"]
    assert cost["speed_ratio"] == pytest.approx(speed, rel=0.01)  # of the unrounded figures
