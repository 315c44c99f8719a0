"""The device TensorFlow itself reports for this machine, so that no test pins `/CPU:0`."""


def expected_device() -> str:
    """`/GPU:0` where TensorFlow sees a GPU, else `/CPU:0`: read from TensorFlow, not assumed."""
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return "/" + devices[0].name.rsplit("device:", 1)[1]
