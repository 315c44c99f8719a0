"""Inception V2 networks in Keras.

`inception_v2` is the BN-Inception network of Ioffe & Szegedy (2015) exactly as TensorFlow's
model zoo ships it (TF-slim `research/slim/nets/inception_v2.py`): every 5x5 convolution of
Inception V1 is factorized into two stacked 3x3 convolutions. Layer names follow the slim end
points (`Mixed_3b`, `Mixed_3b_Branch_2_Conv2d_0c_3x3`, ...) so the code can be read beside it.

`inception_v2_seed` is the one-block network of the notebook this project started from, with
its wiring bug fixed.

Both take RGB pixel values in [0, 255] and scale them themselves, so the exported SavedModel
carries the scaling and no caller re-implements it.
"""

import keras
from keras import layers

# Slim's inception_arg_scope: batch norm with a learned offset and no scale, epsilon 1e-3.
# Slim's decay of 0.9997 suits millions of steps. A demo run takes a few hundred, during which
# the weights move fast: with 0.99 the moving statistics lagged the weights so far that
# validation accuracy sat near chance while training accuracy passed 90%. 0.9 tracks them.
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.9

# The five stride-2 stages leave a 1x1 map at 32x32; slim documents the same lower bound.
MIN_IMAGE_SIZE = 32


def conv_bn(x, filters: int, kernel_size: int, *, strides: int = 1, name: str) -> keras.KerasTensor:
    """Convolution without bias, batch norm without scale, ReLU: slim's `conv2d` in Inception."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(
        scale=False,
        epsilon=BATCH_NORM_EPSILON,
        momentum=BATCH_NORM_MOMENTUM,
        name=f"{name}_BatchNorm",
    )(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _validate(input_shape: tuple[int, int, int], num_classes: int, min_size: int) -> None:
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ValueError(
            f"input_shape must be (height, width, 3) for RGB images. Received: input_shape={input_shape}"
        )
    if min(input_shape[:2]) < min_size:
        raise ValueError(
            f"Images must be at least {min_size}x{min_size} pixels. Received: input_shape={input_shape}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2. Received: num_classes={num_classes}")


def _mixed(x, name: str, b0: int, b1: tuple[int, int], b2: tuple[int, int, int], b3: tuple[str, int]):
    """A stride-1 Inception block: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 (the factorized 5x5) | pool-1x1."""
    branch_0 = conv_bn(x, b0, 1, name=f"{name}_Branch_0_Conv2d_0a_1x1")

    branch_1 = conv_bn(x, b1[0], 1, name=f"{name}_Branch_1_Conv2d_0a_1x1")
    branch_1 = conv_bn(branch_1, b1[1], 3, name=f"{name}_Branch_1_Conv2d_0b_3x3")

    branch_2 = conv_bn(x, b2[0], 1, name=f"{name}_Branch_2_Conv2d_0a_1x1")
    branch_2 = conv_bn(branch_2, b2[1], 3, name=f"{name}_Branch_2_Conv2d_0b_3x3")
    branch_2 = conv_bn(branch_2, b2[2], 3, name=f"{name}_Branch_2_Conv2d_0c_3x3")

    pool, pool_filters = b3
    if pool == "avg":
        branch_3 = layers.AveragePooling2D(
            3, strides=1, padding="same", name=f"{name}_Branch_3_AvgPool_0a_3x3"
        )(x)
    else:
        branch_3 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_Branch_3_MaxPool_0a_3x3")(
            x
        )
    branch_3 = conv_bn(branch_3, pool_filters, 1, name=f"{name}_Branch_3_Conv2d_0b_1x1")

    return layers.concatenate([branch_0, branch_1, branch_2, branch_3], name=name)


def _reduction(x, name: str, b0: tuple[int, int], b1: tuple[int, int, int]):
    """A stride-2 Inception block: 1x1-3x3/2 | 1x1-3x3-3x3/2 | 3x3 max-pool/2."""
    branch_0 = conv_bn(x, b0[0], 1, name=f"{name}_Branch_0_Conv2d_0a_1x1")
    branch_0 = conv_bn(branch_0, b0[1], 3, strides=2, name=f"{name}_Branch_0_Conv2d_1a_3x3")

    branch_1 = conv_bn(x, b1[0], 1, name=f"{name}_Branch_1_Conv2d_0a_1x1")
    branch_1 = conv_bn(branch_1, b1[1], 3, name=f"{name}_Branch_1_Conv2d_0b_3x3")
    branch_1 = conv_bn(branch_1, b1[2], 3, strides=2, name=f"{name}_Branch_1_Conv2d_1a_3x3")

    branch_2 = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_Branch_2_MaxPool_1a_3x3")(x)

    return layers.concatenate([branch_0, branch_1, branch_2], name=name)


def inception_v2(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 1001,
    dropout_rate: float = 0.2,
    name: str = "inception_v2",
) -> keras.Model:
    """Build Inception V2 (BN-Inception) as TF-slim defines it; 11,179,361 trainable parameters
    at 1001 classes. Shapes in the comments are for a 224x224 input; any size from 32x32 up
    works, and the head pools globally so the classifier sees a 1x1x1024 map at every size.
    """
    _validate(input_shape, num_classes, MIN_IMAGE_SIZE)
    if not 0 <= dropout_rate < 1:
        raise ValueError(f"dropout_rate must be in [0, 1). Received: dropout_rate={dropout_rate}")

    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_to_unit_range")(inputs)

    # Conv2d_1a_7x7: 112 x 112 x 64. Slim applies batch norm to `conv2d` only, so this separable
    # convolution keeps its bias and ReLU, with a depthwise multiplier of min(64 // 3, 8) = 8.
    x = layers.SeparableConv2D(
        64, 7, strides=2, padding="same", depth_multiplier=8, activation="relu", name="Conv2d_1a_7x7"
    )(x)
    # MaxPool_2a_3x3: 56 x 56 x 64
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="MaxPool_2a_3x3")(x)
    # Conv2d_2b_1x1: 56 x 56 x 64
    x = conv_bn(x, 64, 1, name="Conv2d_2b_1x1")
    # Conv2d_2c_3x3: 56 x 56 x 192
    x = conv_bn(x, 192, 3, name="Conv2d_2c_3x3")
    # MaxPool_3a_3x3: 28 x 28 x 192
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="MaxPool_3a_3x3")(x)

    # Mixed_3b: 28 x 28 x 256
    x = _mixed(x, "Mixed_3b", 64, (64, 64), (64, 96, 96), ("avg", 32))
    # Mixed_3c: 28 x 28 x 320
    x = _mixed(x, "Mixed_3c", 64, (64, 96), (64, 96, 96), ("avg", 64))
    # Mixed_4a: 14 x 14 x 576
    x = _reduction(x, "Mixed_4a", (128, 160), (64, 96, 96))
    # Mixed_4b: 14 x 14 x 576
    x = _mixed(x, "Mixed_4b", 224, (64, 96), (96, 128, 128), ("avg", 128))
    # Mixed_4c: 14 x 14 x 576
    x = _mixed(x, "Mixed_4c", 192, (96, 128), (96, 128, 128), ("avg", 128))
    # Mixed_4d: 14 x 14 x 576
    x = _mixed(x, "Mixed_4d", 160, (128, 160), (128, 160, 160), ("avg", 96))
    # Mixed_4e: 14 x 14 x 576
    x = _mixed(x, "Mixed_4e", 96, (128, 192), (160, 192, 192), ("avg", 96))
    # Mixed_5a: 7 x 7 x 1024
    x = _reduction(x, "Mixed_5a", (128, 192), (192, 256, 256))
    # Mixed_5b: 7 x 7 x 1024
    x = _mixed(x, "Mixed_5b", 352, (192, 320), (160, 224, 224), ("avg", 128))
    # Mixed_5c: 7 x 7 x 1024 (max pooling in its pool branch, as in the reference)
    x = _mixed(x, "Mixed_5c", 352, (192, 320), (192, 224, 224), ("max", 128))

    # Logits: slim's 7x7 average pool (shrunk for small inputs) is a global pool whenever the
    # map is 7x7 or smaller; pooling globally keeps the head valid at every input size.
    x = layers.GlobalAveragePooling2D(keepdims=True, name="Logits_AvgPool_1a")(x)  # 1 x 1 x 1024
    x = layers.Dropout(dropout_rate, name="Logits_Dropout_1b")(x)
    x = layers.Conv2D(num_classes, 1, name="Logits_Conv2d_1c_1x1")(x)  # 1 x 1 x num_classes
    x = layers.Flatten(name="Logits_SpatialSqueeze")(x)
    # float32 softmax so probabilities stay well formed under mixed precision.
    outputs = layers.Activation("softmax", dtype="float32", name="Predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def inception_v2_seed(
    input_shape: tuple[int, int, int] = (128, 128, 3), num_classes: int = 5, name: str = "inception_v2_seed"
) -> keras.Model:
    """Build the notebook's one-block Inception V2 network, with its wiring bug fixed.

    One factorized Inception block of four 64-filter towers (1x1; 1x1 then 3x3; 1x1 then two
    3x3s, the factorized 5x5; 3x3 max-pool then 1x1), concatenated, then a 3x3 convolution of 8
    filters, a 2x2 max-pool with stride 1, flatten, dense and softmax.

    The notebook concatenated the *first* layer of each tower (`tower2_1`, `tower3_1`,
    `tower4_1`), which silently dropped the 3x3 convolutions and the pool projection from the
    model. Here each tower's *output* is concatenated, as the notebook's text describes.

    One deviation: the end convolution is batch-normalized before its ReLU (`end_conv_BatchNorm`,
    without bias or scale, as in Inception). In the notebook's form the dense layer reads every
    pixel of the raw ReLU map (29,768 inputs at 64x64); Adam's first steps at 0.001 swing its
    logits so far that the gradient sent back turns all 8 end filters off for good, and the
    network outputs a constant (docs/training.md has the figures). Batch norm keeps them firing.
    """
    _validate(input_shape, num_classes, min_size=4)

    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(1 / 255.0, name="scale_to_unit_range")(inputs)

    def conv(t, filters: int, kernel_size: int, tower_name: str):
        return layers.Conv2D(filters, kernel_size, padding="same", activation="relu", name=tower_name)(t)

    # Block: H x W x 256
    tower_1 = conv(x, 64, 1, "tower1_1")
    tower_2 = conv(conv(x, 64, 1, "tower2_1"), 64, 3, "tower2_2")
    tower_3 = conv(conv(conv(x, 64, 1, "tower3_1"), 64, 3, "tower3_2"), 64, 3, "tower3_3")
    tower_4 = layers.MaxPooling2D(3, strides=1, padding="same", name="tower4_1")(x)
    tower_4 = conv(tower_4, 64, 1, "tower4_2")
    x = layers.concatenate([tower_1, tower_2, tower_3, tower_4], name="concat_1")

    # End block: (H-2) x (W-2) x 8, then (H-3) x (W-3) x 8 after the stride-1 pool.
    x = layers.Conv2D(8, 3, use_bias=False, name="end_conv")(x)
    x = layers.BatchNormalization(
        scale=False, epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name="end_conv_BatchNorm"
    )(x)
    x = layers.Activation("relu", name="end_conv_relu")(x)
    x = layers.MaxPooling2D(2, strides=1, name="end_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="Predictions")(x)
    return keras.Model(inputs, outputs, name=name)


ARCHITECTURES = {"inception_v2": inception_v2, "inception_v2_seed": inception_v2_seed}
# The layer each network classifies with: what trains while the rest is frozen in a fine-tune.
CLASSIFIERS = {"inception_v2": "Logits_Conv2d_1c_1x1", "inception_v2_seed": "logits"}
