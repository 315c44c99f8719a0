"""How far to trust an answer: calibrated probabilities and a score for images unlike the training data.

Both are fitted at export on data the network did not train on, and travel in the SavedModel, so
every way of calling it (`serving_default`, `predict_pixels`, the service's three APIs) gives the
same figures:

- **Temperature scaling** (Guo et al., 2017): the logits are divided by one number T, fitted to
  minimise the negative log-likelihood of the validation split. It leaves the ranking of classes
  (and so the accuracy) unchanged and makes a probability of 0.9 right about 9 times in 10.
  The expected calibration error (ECE) is measured before and after on the same split.
- **An out-of-distribution score** per image, higher for images further from the training data:
  the squared Mahalanobis distance of the image's pooled features to the nearest class mean, with
  one covariance shared by the classes (Lee et al., 2018), fitted on the training images'
  features. The features are those of an early Inception block (`FEATURE_LAYERS`), averaged over
  the image: they describe shapes, edges and textures, in which a photo, a blank frame or noise
  differs from the training images however the classifier would label it; the last layer's
  features, made to tell the classes apart, let more of those through, and the stem's, colour and
  grain, too many when the training images' backgrounds vary (docs/confidence.md has the figures,
  and those of the maximum calibrated probability and the energy score, which fared worse still).
  The threshold keeps at least `KEEP` of images like the validation images, with a probability of
  `ASSURANCE` over the draw of those (`threshold_keeping`); an image scoring above it is "not sure".

NumPy fits the statistics; `ConfidenceHead` is the TensorFlow side the exported graph runs.
"""

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

KEEP = 0.95  # the share of in-distribution images the threshold keeps as confident
ASSURANCE = 0.95  # the probability, over the held-back images it is chosen on, that it keeps KEEP
ECE_BINS = 15
METHOD = "mahalanobis"
# The layer whose output is averaged over the image into the features, per network (the first one
# the model has): inception_v2's second Inception block (320 channels), which on a version trained
# with the defaults flagged 95 % of the far kinds where its stem flagged 51 % and its last block 77 %
# (docs/confidence.md); the one Inception block of inception_v2_seed (256).
FEATURE_LAYERS = ("Mixed_3c", "concat_1")
# Ledoit-Wolf-style shrinkage of the shared covariance toward a scaled identity: a network's
# pooled features outnumber a small dataset's images, and the sample covariance is then singular.
# Little of it: the directions in which the training images' features hardly vary are where a photo
# or a texture stands out, and more shrinkage drowns them. 1 % rather than 10 % flagged 93 % of the
# far kinds instead of 88 % on the tests' colour task (4 training seeds), 99.8 % instead of 99.3 %
# on the demo's shapes and 95.4 % instead of 95.3 % on the strokes, held-back images within 5 % on
# all three (docs/confidence.md).
SHRINKAGE = 0.01


def feature_layer(model: keras.Model) -> str | None:
    """The layer whose pooled output the score measures, or None for a network not built here."""
    names = {layer.name for layer in model.layers}
    if "Predictions" not in names:
        return None
    return next((name for name in FEATURE_LAYERS if name in names), None)


def logit_and_feature_model(model: keras.Model) -> keras.Model:
    """The network up to its logits (the input of its softmax) and its pooled features."""
    feature_layer_name = feature_layer(model)
    if feature_layer_name is None:
        raise ValueError(
            f"No feature layer ({', '.join(FEATURE_LAYERS)}) and softmax 'Predictions' "
            f"in model {model.name!r}"
        )
    features = model.get_layer(feature_layer_name).output
    if len(features.shape) == 4:
        features = keras.ops.mean(features, axis=(1, 2))
    logits = model.get_layer("Predictions").input
    return keras.Model(model.input, [logits, features], name=f"{model.name}_logits_features")


def run(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits [images, classes] and features [images, d] of `model` (from `logit_and_feature_model`)
    on `dataset`, and its labels, in order."""
    logits, features, labels = [], [], []
    for images, batch_labels in dataset:
        batch_logits, batch_features = model(images, training=False)
        logits.append(np.asarray(batch_logits, np.float64))
        features.append(np.asarray(batch_features, np.float64))
        labels.append(batch_labels.numpy())
    return np.concatenate(logits), np.concatenate(features), np.concatenate(labels)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    probabilities = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(probabilities, 1e-12)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the negative log-likelihood: golden-section search on log T
    (the likelihood is unimodal in it), to a relative precision of about 1e-4."""
    low, high = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    while high - low > 1e-4:
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if negative_log_likelihood(logits, labels, np.exp(a)) < negative_log_likelihood(
            logits, labels, np.exp(b)
        ):
            high = b
        else:
            low = a
    return float(np.exp((low + high) / 2))


@dataclass(frozen=True)
class Reliability:
    """Per bin of top-class probability: images, mean confidence and accuracy (None when empty)."""

    edges: list[float]
    counts: list[int]
    confidence: list[float | None]
    accuracy: list[float | None]

    @property
    def ece(self) -> float:
        """Expected calibration error: |accuracy - confidence| per bin, weighted by its images."""
        total = sum(self.counts)
        return float(
            sum(
                n * abs(acc - conf)
                for n, acc, conf in zip(self.counts, self.accuracy, self.confidence, strict=True)
                if n
            )
            / total
        )


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """The reliability diagram's figures: equal-width bins of the top-class probability."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts, mean_confidence, accuracy = [], [], []
    for b in range(bins):
        members = which == b
        counts.append(int(members.sum()))
        mean_confidence.append(float(confidence[members].mean()) if members.any() else None)
        accuracy.append(float(correct[members].mean()) if members.any() else None)
    return Reliability(edges.tolist(), counts, mean_confidence, accuracy)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return reliability(probabilities, labels).ece


@dataclass(frozen=True)
class FeatureStatistics:
    """Class means and a whitening matrix W (W Wᵀ = the shared covariance's inverse), so that the
    squared Mahalanobis distance of f to class c is |f W - mean_c W|²."""

    whitened_means: np.ndarray  # [classes, d]
    whitening: np.ndarray  # [d, d]

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The squared Mahalanobis distance of each image's features to the nearest class mean."""
        whitened = features @ self.whitening
        distances = ((whitened[:, None, :] - self.whitened_means[None]) ** 2).sum(axis=-1)
        return distances.min(axis=1)


def fit_feature_statistics(features: np.ndarray, labels: np.ndarray, num_classes: int) -> FeatureStatistics:
    """Class means and the shared covariance (shrunk toward a scaled identity) of training features."""
    means = np.stack(
        [
            features[labels == c].mean(axis=0) if (labels == c).any() else features.mean(axis=0)
            for c in range(num_classes)
        ]
    )
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    scale = np.trace(covariance) / len(covariance) or 1.0
    shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * scale * np.eye(len(covariance))
    # shrunk = L Lᵀ, so its inverse is L⁻ᵀ L⁻¹ and W = L⁻ᵀ.
    whitening = np.linalg.inv(np.linalg.cholesky(shrunk)).T
    return FeatureStatistics(means @ whitening, whitening)


def order_statistic(n: int, keep: float = KEEP, assurance: float = ASSURANCE) -> int:
    """The rank k (lowest first) of the threshold among n held-back scores: the lowest for which a
    threshold chosen so keeps at least `keep` of fresh images like them, with a probability of at
    least `assurance` over the draw of the n (n, the largest, when no rank is enough).

    The share of fresh images scoring at or below the k-th smallest of n is a Beta(k, n + 1 - k)
    draw (for continuous scores), so it falls short of `keep` with the probability that a
    Binomial(n, keep) count reaches k. Split conformal prediction's rank, ⌈(n + 1) · keep⌉, keeps
    `keep` only on average: from a few hundred images, nearly half of its thresholds keep less.
    """
    log_keep, log_miss = math.log(keep), math.log1p(-keep)

    def log_term(i: int) -> float:  # log P(Binomial(n, keep) = i)
        return (
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * log_keep
            + (n - i) * log_miss
        )

    tail = 0.0  # P(Binomial(n, keep) >= k), summed from k = n down
    for k in range(n, 0, -1):
        tail += math.exp(log_term(k))
        if tail > 1 - assurance:
            return min(n, k + 1)
    return 1


def threshold_keeping(scores: np.ndarray, keep: float = KEEP, assurance: float = ASSURANCE) -> float:
    """The score at or below which at least `keep` of images like the held-back ones fall, with
    a probability of `assurance` (`order_statistic`)."""
    ordered = np.sort(scores)
    return float(ordered[order_statistic(len(ordered), keep, assurance) - 1])


def threshold_rule(n: int) -> str:
    """`threshold_keeping`'s rule in words, for n held-back images."""
    rank = order_statistic(n)
    if KEEP**n > 1 - ASSURANCE:  # even the largest keeps less than KEEP too often
        return f"is the highest score of the {n} validation images (too few to promise a share kept)"
    return (
        f"keeps at least {KEEP:.0%} of images like the {n} validation images, with {ASSURANCE:.0%} "
        f"confidence (their score ranked {rank}, lowest first)"
    )


@dataclass(frozen=True)
class Confidence:
    """What the exporter puts in the artifact: the temperature, the feature statistics and the
    threshold, and how they were found (for metadata.json and the report)."""

    temperature: float
    statistics: FeatureStatistics
    threshold: float
    calibration_images: int
    ece_before: float
    ece_after: float
    reliability_before: Reliability
    reliability_after: Reliability
    flagged_held_back: float

    def metadata(self) -> dict[str, Any]:
        return {
            "temperature": round(self.temperature, 6),
            "calibration": {
                "method": "temperature scaling",
                "fitted_on": f"the {self.calibration_images} validation images",
                "bins": len(self.reliability_after.counts),
                "ece_before": round(self.ece_before, 6),
                "ece_after": round(self.ece_after, 6),
            },
            "ood": {
                "method": METHOD,
                "score": "squared Mahalanobis distance of the pooled features to the nearest class mean "
                "(shared covariance, fitted on the training images); higher is further from the "
                "training data",
                "threshold": self.threshold,
                "threshold_rule": threshold_rule(self.calibration_images),
                "keep": KEEP,
                "assurance": ASSURANCE,
                "flagged_validation": round(self.flagged_held_back, 6),
            },
        }


def fit(
    model: keras.Model, train: tf.data.Dataset, held_back: tf.data.Dataset, num_classes: int
) -> Confidence:
    """Fit the feature statistics on `train` (not augmented), the temperature and the threshold on
    `held_back` (the validation split)."""
    heads = logit_and_feature_model(model)
    _, train_features, train_labels = run(heads, train)
    logits, features, labels = run(heads, held_back)
    statistics = fit_feature_statistics(train_features, train_labels, num_classes)
    temperature = fit_temperature(logits, labels)
    scores = statistics.scores(features)
    threshold = threshold_keeping(scores)
    before = reliability(softmax(logits), labels)
    after = reliability(softmax(logits, temperature), labels)
    return Confidence(
        temperature=temperature,
        statistics=statistics,
        threshold=threshold,
        calibration_images=len(labels),
        ece_before=before.ece,
        ece_after=after.ece,
        reliability_before=before,
        reliability_after=after,
        flagged_held_back=float((scores > threshold).mean()),
    )


class ConfidenceHead(tf.Module):
    """The exported graph's side: calibrated probabilities and the out-of-distribution score."""

    def __init__(self, model: keras.Model, confidence: Confidence):
        super().__init__(name="confidence")
        self.heads = logit_and_feature_model(model)
        self.temperature = tf.Variable(confidence.temperature, dtype=tf.float32, trainable=False)
        self.whitening = tf.Variable(confidence.statistics.whitening, dtype=tf.float32, trainable=False)
        self.whitened_means = tf.Variable(
            confidence.statistics.whitened_means, dtype=tf.float32, trainable=False
        )

    def __call__(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        logits, features = self.heads(pixels, training=False)
        logits, features = tf.cast(logits, tf.float32), tf.cast(features, tf.float32)
        whitened = tf.matmul(features, self.whitening)
        distances = tf.reduce_sum(tf.square(whitened[:, None, :] - self.whitened_means[None, :, :]), axis=-1)
        return {
            "probabilities": tf.nn.softmax(logits / self.temperature),
            "ood_score": tf.reduce_min(distances, axis=1),
        }
