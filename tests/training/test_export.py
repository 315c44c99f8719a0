import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from training.export import METADATA_FILE, WEIGHTS_FILE, existing_versions, export_model, load_layer_weights
from training.inception_v2 import inception_v2_seed
from training.preprocessing import decode_and_resize

RELOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    data = open(sys.argv[2], "rb").read()
    by_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant([data]))["probabilities"]
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    pixels = loaded.signatures["resize_image"](image=image)["pixels"]
    by_pixels = loaded.signatures["predict_pixels"](pixels=pixels[None])["probabilities"]
    print(json.dumps({"bytes": by_bytes.numpy().tolist(), "pixels": by_pixels.numpy().tolist()}))
    """
)


@pytest.fixture(scope="module")
def small_model():
    return inception_v2_seed(input_shape=(32, 32, 3), num_classes=3)


def test_reloaded_savedmodel_matches_keras_in_a_fresh_process(tmp_path, small_model, png_bytes):
    version_dir = export_model(small_model, ["a", "b", "c"], base_path=tmp_path, name="m")
    image_path = tmp_path / "image.png"
    image_path.write_bytes(png_bytes)

    result = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(version_dir), str(image_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    served = json.loads(result.stdout.strip().splitlines()[-1])
    expected = small_model(decode_and_resize(tf.constant(png_bytes), (32, 32))[None], training=False).numpy()

    assert np.max(np.abs(np.array(served["bytes"]) - expected)) <= 1e-5
    assert np.max(np.abs(np.array(served["pixels"]) - expected)) <= 1e-5


def test_export_writes_tf_serving_layout_and_metadata(tmp_path, small_model):
    version_dir = export_model(
        small_model,
        ["a", "b", "c"],
        base_path=tmp_path,
        name="m",
        architecture="inception_v2_seed",
        training={"metrics": {"val_accuracy": 0.5}},
    )
    assert version_dir == tmp_path / "m" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables").is_dir()
    metadata = json.loads((version_dir / METADATA_FILE).read_text())
    assert metadata["version"] == 1
    assert metadata["labels"] == ["a", "b", "c"]
    assert metadata["input"] == {
        "height": 32,
        "width": 32,
        "channels": 3,
        "range": [0, 255],
        "central_crop": None,
        "resize": "bilinear",
        "jpeg_scaling": "dct",
    }
    architecture = metadata["architecture"]
    assert architecture["name"] == "inception_v2_seed"
    assert architecture["num_classes"] == 3
    assert architecture["total_params"] == small_model.count_params()
    # The seed network's batch norm keeps 16 moving statistics, which are not trained.
    trainable = sum(int(np.prod(weight.shape)) for weight in small_model.trainable_weights)
    assert (architecture["trainable_params"], small_model.count_params() - trainable) == (trainable, 16)
    layers = {layer["name"]: layer for layer in architecture["layers"]}
    assert layers["concat_1"] == {
        "name": "concat_1",
        "type": "Concatenate",
        "output_shape": [32, 32, 256],
        "params": 0,
    }
    assert layers["tower2_2"]["params"] == 64 * 64 * 9 + 64
    assert sorted(metadata["signatures"]) == ["features", "predict_pixels", "resize_image", "serving_default"]
    assert metadata["training"] == {"metrics": {"val_accuracy": 0.5}}


def test_each_export_is_the_next_version(tmp_path, small_model):
    for _ in range(2):
        export_model(small_model, ["a", "b", "c"], base_path=tmp_path, name="m")
    (tmp_path / "m" / "7").mkdir()
    assert export_model(small_model, ["a", "b", "c"], base_path=tmp_path, name="m").name == "8"
    assert existing_versions(tmp_path / "m") == [1, 2, 7, 8]


def test_a_failed_export_leaves_no_version_behind(tmp_path, small_model):
    with pytest.raises(TypeError, match="not JSON serializable"):
        export_model(small_model, ["a", "b", "c"], base_path=tmp_path, name="m", training={"bad": object()})
    assert list((tmp_path / "m").iterdir()) == []


def test_export_rejects_a_label_count_that_differs_from_the_outputs(tmp_path, small_model):
    with pytest.raises(ValueError, match="one label per output class \\(3\\). Received: 2 labels"):
        export_model(small_model, ["a", "b"], base_path=tmp_path, name="m")


def test_a_version_carries_its_weights_by_layer_name(tmp_path, small_model):
    version_dir = export_model(small_model, ["a", "b", "c"], base_path=tmp_path, name="m")

    saved = load_layer_weights(version_dir / WEIGHTS_FILE)

    assert list(saved) == [layer.name for layer in small_model.layers if layer.weights]
    for layer in small_model.layers:
        for restored, original in zip(saved.get(layer.name, []), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(restored, original)
