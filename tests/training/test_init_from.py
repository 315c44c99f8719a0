"""Starting a network from an exported version, and which layers train in each phase."""

import numpy as np
import pytest

from training.config import TrainConfig
from training.export import WEIGHTS_FILE, export_model
from training.inception_v2 import inception_v2, inception_v2_seed
from training.init_from import initialize_from
from training.slim_checkpoint import slim_names
from training.train import Phase, plan_phases, set_trainable


@pytest.fixture(scope="module")
def seed_version(tmp_path_factory):
    """A two-class version of the seed network at 32 x 32, with the weights it was exported with."""
    source = inception_v2_seed((32, 32, 3), 2)
    folder = export_model(source, ["a", "b"], base_path=tmp_path_factory.mktemp("models"), name="source")
    return folder, {layer.name: layer.get_weights() for layer in source.layers if layer.weights}


def test_every_layer_that_fits_is_restored_and_the_classifier_starts_fresh(seed_version):
    folder, weights = seed_version
    model = inception_v2_seed((32, 32, 3), 3)

    result = initialize_from(model, folder)

    assert result.restored == [name for name in weights if name != "logits"]
    assert result.fresh == {"logits": "shape [(6728, 2), (2,)] in the source, [(6728, 3), (3,)] here"}
    for name in result.restored:
        for restored, exported in zip(model.get_layer(name).get_weights(), weights[name], strict=True):
            np.testing.assert_array_equal(restored, exported)
    assert result.summary() == {
        "from": f"source/{folder.name}",  # the model and version, not the trainer's path
        "restored_layers": len(weights) - 1,
        "fresh_layers": result.fresh,
    }


def test_the_same_label_count_restores_the_whole_network(seed_version):
    folder, weights = seed_version
    model = inception_v2_seed((32, 32, 3), 2)
    assert initialize_from(model, folder).fresh == {}
    np.testing.assert_array_equal(model.get_layer("logits").get_weights()[0], weights["logits"][0])


def test_a_network_with_nothing_in_common_is_refused(seed_version):
    folder, _ = seed_version
    with pytest.raises(ValueError, match="no layer of the source fits this network"):
        initialize_from(inception_v2((32, 32, 3), 2), folder)


def test_a_version_without_keras_weights_is_refused_with_the_fix(seed_version, tmp_path):
    folder, _ = seed_version
    old = tmp_path / "1"
    old.mkdir()
    (old / "metadata.json").write_text((folder / "metadata.json").read_text())
    with pytest.raises(ValueError, match=f"has no {WEIGHTS_FILE}: it was exported before"):
        initialize_from(inception_v2_seed((32, 32, 3), 2), old)


def test_a_folder_that_is_no_version_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is not a model version folder .* nor a TF-slim checkpoint"):
        initialize_from(inception_v2_seed((32, 32, 3), 2), tmp_path)


def test_fine_tuning_plans_a_frozen_phase_then_the_rest():
    config = TrainConfig(
        data_dir="d", init_from="models/x/1", epochs=5, freeze_base_epochs=2, fine_tune_from="Mixed_4a"
    )
    assert plan_phases(config) == [
        Phase("classifier", range(0, 2), 1e-3, "Logits_Conv2d_1c_1x1"),
        Phase("fine-tuning", range(2, 5), 1e-4, "Mixed_4a"),
    ]
    assert plan_phases(TrainConfig(data_dir="d", epochs=5)) == [Phase("training", range(0, 5), 1e-3, None)]


def test_fine_tuning_from_a_block_freezes_what_comes_before_it_and_batch_norm():
    model = inception_v2((32, 32, 3), 3)
    set_trainable(model, "Mixed_4a", fresh={"Logits_Conv2d_1c_1x1"}, freeze_batch_norm=True)

    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    later = ("Mixed_4", "Mixed_5", "Logits")
    assert trainable == {
        layer.name
        for layer in model.layers
        if layer.weights and layer.name.startswith(later) and not layer.name.endswith("_BatchNorm")
    }
    assert "Mixed_4a_Branch_0_Conv2d_0a_1x1" in trainable

    set_trainable(model, "Logits_Conv2d_1c_1x1", fresh=set(), freeze_batch_norm=True)
    assert [w.path for w in model.trainable_weights] == [
        "Logits_Conv2d_1c_1x1/kernel",
        "Logits_Conv2d_1c_1x1/bias",
    ]


def test_an_unknown_block_names_the_blocks():
    with pytest.raises(ValueError, match=r"Received: 'Mixed_9z'; blocks: .*Mixed_4a, .*Mixed_5c"):
        set_trainable(inception_v2((32, 32, 3), 3), "Mixed_9z", fresh=set(), freeze_batch_norm=True)


def write_slim_checkpoint(model, prefix) -> None:
    """Save `model`'s weights under TF-slim's variable names, as slim's own training saves them."""
    import tensorflow as tf

    weights = {
        name: value
        for layer in model.layers
        if layer.weights
        for name, value in zip(slim_names(layer), layer.get_weights(), strict=True)
    }
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in weights.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix))


def test_a_slim_checkpoint_restores_all_but_the_imagenet_classifier(tmp_path):
    imagenet = inception_v2((32, 32, 3), 1001)
    write_slim_checkpoint(imagenet, tmp_path / "inception_v2.ckpt")
    model = inception_v2((32, 32, 3), 4)

    result = initialize_from(model, tmp_path / "inception_v2.ckpt")

    assert result.fresh == {
        "Logits_Conv2d_1c_1x1": (
            "shape [(1, 1, 1024, 1001), (1001,)] in the source, [(1, 1, 1024, 4), (4,)] here"
        )
    }
    assert len(result.restored) == len([layer for layer in model.layers if layer.weights]) - 1
    for name in (
        "Conv2d_1a_7x7",
        "Mixed_4a_Branch_1_Conv2d_0b_3x3_BatchNorm",
        "Mixed_5c_Branch_0_Conv2d_0a_1x1",
    ):
        for restored, saved in zip(
            model.get_layer(name).get_weights(), imagenet.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(restored, saved)
