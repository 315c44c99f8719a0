import math

import pytest

from training.inception_v2 import MIN_IMAGE_SIZE, inception_v2, inception_v2_seed


def trainable_params(model) -> int:
    return sum(math.prod(w.shape) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def reference_model():
    return inception_v2()


def test_inception_v2_has_the_reference_parameter_count(reference_model):
    assert trainable_params(reference_model) == 11_179_361
    assert reference_model.output_shape == (None, 1001)


@pytest.mark.parametrize(
    ("end_point", "shape"),
    [
        ("Conv2d_1a_7x7", (112, 112, 64)),
        ("MaxPool_2a_3x3", (56, 56, 64)),
        ("Conv2d_2c_3x3_relu", (56, 56, 192)),
        ("MaxPool_3a_3x3", (28, 28, 192)),
        ("Mixed_3b", (28, 28, 256)),
        ("Mixed_3c", (28, 28, 320)),
        ("Mixed_4a", (14, 14, 576)),
        ("Mixed_4b", (14, 14, 576)),
        ("Mixed_4c", (14, 14, 576)),
        ("Mixed_4d", (14, 14, 576)),
        ("Mixed_4e", (14, 14, 576)),
        ("Mixed_5a", (7, 7, 1024)),
        ("Mixed_5b", (7, 7, 1024)),
        ("Mixed_5c", (7, 7, 1024)),
    ],
)
def test_inception_v2_end_points_match_the_reference(reference_model, end_point, shape):
    assert tuple(reference_model.get_layer(end_point).output.shape[1:]) == shape


def test_batch_norm_has_no_scale_and_convolutions_no_bias(reference_model):
    bn = reference_model.get_layer("Mixed_4b_Branch_2_Conv2d_0c_3x3_BatchNorm")
    assert [w.name for w in bn.trainable_weights] == ["beta"]
    assert reference_model.get_layer("Mixed_4b_Branch_2_Conv2d_0c_3x3").use_bias is False


def test_factorized_branch_is_two_stacked_3x3s(reference_model):
    first = reference_model.get_layer("Mixed_3b_Branch_2_Conv2d_0b_3x3")
    second = reference_model.get_layer("Mixed_3b_Branch_2_Conv2d_0c_3x3")
    assert first.kernel_size == second.kernel_size == (3, 3)
    assert not any(getattr(layer, "kernel_size", None) == (5, 5) for layer in reference_model.layers)


@pytest.mark.parametrize("size", [MIN_IMAGE_SIZE, 64, 100])
def test_inception_v2_smaller_inputs_pool_globally(size):
    model = inception_v2((size, size, 3), num_classes=7)
    assert model.output_shape == (None, 7)
    # The classifier's parameters do not depend on the input size.
    assert trainable_params(model) == 11_179_361 - 1001 * 1025 + 7 * 1025


def test_inception_v2_rejects_inputs_below_the_minimum():
    with pytest.raises(ValueError, match=r"at least 32x32 pixels. Received: input_shape=\(31, 64, 3\)"):
        inception_v2((31, 64, 3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": (64, 64, 1)}, "input_shape must be"),
        ({"input_shape": (64, 64, 3), "num_classes": 1}, "num_classes must be at least 2"),
        ({"input_shape": (64, 64, 3), "dropout_rate": 1.0}, "dropout_rate must be in"),
    ],
)
def test_inception_v2_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        inception_v2(**kwargs)


def test_seed_network_shapes_and_parameters():
    model = inception_v2_seed()
    assert model.output_shape == (None, 5)
    assert tuple(model.get_layer("concat_1").output.shape[1:]) == (128, 128, 256)
    assert tuple(model.get_layer("end_pool").output.shape[1:]) == (125, 125, 8)
    towers = 4 * (3 * 64 + 64) + 3 * (64 * 64 * 9 + 64)
    # end_conv has no bias: batch norm follows it (offset, moving mean and variance per filter).
    head = 256 * 8 * 9 + 3 * 8 + (125 * 125 * 8 * 5 + 5)
    assert model.count_params() == towers + head == 755_269


def test_seed_network_concatenates_each_towers_output():
    """The notebook concatenated tower2_1, tower3_1 and tower4_1, dropping the 3x3s and pool projection."""
    model = inception_v2_seed()
    concat_inputs = [t._keras_history.operation.name for t in model.get_layer("concat_1").input]
    assert concat_inputs == ["tower1_1", "tower2_2", "tower3_3", "tower4_2"]
    # Every tower layer ends up in the graph that computes the output.
    for name in ["tower2_2", "tower3_2", "tower3_3", "tower4_1", "tower4_2"]:
        assert model.get_layer(name) is not None
