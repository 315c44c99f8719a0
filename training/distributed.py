"""Training as one worker of several: the same `python -m training train` on every machine.

When `TF_CONFIG` names a cluster, the trainer joins it with `tf.distribute.MultiWorkerMirroredStrategy`
(TensorFlow's multi-worker tutorial, followed here):

- every worker reads its own shard of the training images, `--batch-size` of them per step across
  all workers together (each takes its share), so the same settings train the same way on any
  number of workers;
- every worker saves its epoch checkpoints, as TensorFlow asks, but only the chief keeps them: the
  others write into temporary folders they delete; the chief alone writes the report and exports
  the version, from a copy of the model outside the strategy;
- when a peer dies, TensorFlow's coordination service misses its heartbeats and aborts the
  collectives on the survivors; `LostPeer` then names it, and nothing is exported. The chief's last
  epoch checkpoint, in a folder every worker reads (`--checkpoint-dir` on shared storage), is where
  the same commands resume from.

Keras 3 (3.15) cannot run `fit` under this strategy with more than one worker by itself: it reduces
each step's scalar metric values across workers with `strategy.reduce("MEAN", value, axis=0)`, which
fails for a scalar ("Invalid reduction dimension 0 for input with 0 dimensions"; TensorFlow issue
72388, Keras issue 20585), and before the first step it averages a whole batch over the workers to
learn its shapes, which fails for an (images, labels) pair. `PerWorkerSteps` overrides the two:
steps return one-element vectors, which that same reduction averages, and the shapes come from the
worker's own batch. The epoch's figures, which callbacks, early stopping and the history see, Keras
reads from the metrics' variables, summed over all workers: they are exact, and the same on each.
"""

import contextlib
import hashlib
import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from training.cluster import Worker
from training.data import Split

log = logging.getLogger(__name__)


def multi_worker_strategy(worker: Worker) -> tf.distribute.MultiWorkerMirroredStrategy:
    """Join the cluster (blocks until every worker has started; create it before any other TF op)."""
    log.info("Joining the cluster as %s; waiting for all %d workers", worker.name, worker.count)
    return tf.distribute.MultiWorkerMirroredStrategy()


def shard(split: Split, index: int, count: int) -> Split:
    """Every `count`-th image from the `index`-th: the same number on each of `count` workers.

    All workers must take the same number of steps per epoch (each step is a collective), so the
    split is cut to a multiple of `count`: at most `count - 1` images sit out, always the same ones
    for the same seed.
    """
    usable = len(split) - len(split) % count
    return Split(split.paths[index:usable:count], split.labels[index:usable:count])


def steps_per_epoch(images: int, global_batch: int, workers: int) -> int:
    """The steps of an epoch over `images` training images, as `shard` cuts them for `workers`."""
    return math.ceil((images - images % workers) / global_batch)


def distribute(
    strategy: tf.distribute.Strategy,
    split: Split,
    global_batch: int,
    make: Callable[[Split, int, bool], tf.data.Dataset],
    *,
    training: bool,
) -> tf.distribute.DistributedDataset:
    """`split` as the workers read it: for training, each its own shard, decoded by itself only; for
    validation, each all of it (a few images more to decode, and figures that count each image
    once per worker: the same averages, with no worker short of a batch).

    `make(split, batch_size, shuffle)` builds one worker's pipeline; its batches are the replica's
    share of `global_batch`.
    """

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(global_batch)
        if not training:
            return make(split, batch, False)
        part = shard(split, context.input_pipeline_id, context.num_input_pipelines)
        log.info("This worker reads %d of the %d training images, %d a step", len(part), len(split), batch)
        return make(part, batch, True)

    return strategy.distribute_datasets_from_function(per_worker)


def require_same_start(
    strategy: tf.distribute.Strategy, worker: Worker, epoch: int, checkpoints: Path
) -> None:
    """Raise a ValueError unless every worker would resume after the same `epoch`.

    Each worker restores from the chief's checkpoints; a worker that cannot see them (another
    machine's disk) would start over while the others resume, and the cluster would train apart.
    """

    def gather() -> tf.Tensor:
        return tf.distribute.get_replica_context().all_gather(tf.constant([epoch], tf.int64), axis=0)

    epochs = sorted({int(e) for e in strategy.experimental_local_results(strategy.run(gather))[0]})
    if len(epochs) > 1:
        raise ValueError(
            f"The workers would resume from different epochs ({', '.join(map(str, epochs))}; {worker.name} "
            f"from {epoch}): --checkpoint-dir {checkpoints} must be one folder all workers read, on "
            "shared storage."
        )


class LostPeer(RuntimeError):
    """A worker of the cluster stopped answering; the message names it."""

    @staticmethod
    @contextlib.contextmanager
    def raised_for(worker: Worker | None) -> Iterator[None]:
        """Turn the error TensorFlow aborts the collectives with, when a peer is lost, into a LostPeer
        naming the peer (with TensorFlow's own message as its cause)."""
        if worker is None:
            yield
            return
        try:
            yield
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError) as error:
            peer = worker.peer_named_in(error.message) or "a peer"
            raise LostPeer(
                f"{worker.name} lost {peer}: it stopped answering, and the collectives were aborted. "
                "Nothing was exported. Run the same command on every worker again to resume from the "
                "last finished epoch."
            ) from error


class PerWorkerSteps(keras.Model):
    """A functional model whose `fit` and `evaluate` run on several workers in Keras 3.

    Built with `PerWorkerSteps(model.inputs, model.outputs)`: the same layers and weights. Two
    overrides, each where Keras 3.15 breaks with more than one worker:
    - a step's metric values come back as one-element vectors: Keras reduces them over the workers
      with `axis=0`, and a scalar has no axis 0;
    - the first batch, which Keras reads only for its shapes, is this worker's own: Keras averages
      it over the workers first, with a reduction that takes no (images, labels) pair.
    """

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        return _as_vectors(super().train_step(data))

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        return _as_vectors(super().test_step(data))

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(
                    lambda value: self.distribute_strategy.experimental_local_results(value)[0], next(batches)
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)


def _as_vectors(logs: dict[str, Any]) -> dict[str, Any]:
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def scratch_dir(worker: Worker, checkpoints: Path) -> Path:
    """An empty temporary folder for what a non-chief writes only because every worker must write it.

    Named after the worker and the run's checkpoint folder, so a rerun after a crash clears what
    the crashed worker could not.
    """
    run = hashlib.sha256(str(checkpoints.resolve()).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"training-{worker.task_type}{worker.task_id}-{run}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    return path
