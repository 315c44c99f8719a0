"""The in-process limit: decode + resize + the model, with no server in the way.

Decoding is the service's own (`imaging.decode`, at reduced DCT scale for versions trained that
way), resizing and the model are the SavedModel's own `resize_image` and `predict_pixels`
signatures: the work the service cannot avoid doing per image.
"""

import statistics
import time
from dataclasses import dataclass

from benchmarks.peers.model import PeerModel


@dataclass
class InProcessResult:
    batch1_ms: float  # median time for one image, decode to probabilities
    images_per_second: dict[int, float]  # by batch size
    # The process's CPU per image at batch 1 (every thread's, TensorFlow's too): what one image
    # costs with no server, to take from a server's CPU per request to find its serving tax.
    batch1_cpu_ms: float

    @property
    def best_batch_size(self) -> int:
        return max(self.images_per_second, key=self.images_per_second.get)

    @property
    def best_images_per_second(self) -> float:
        return self.images_per_second[self.best_batch_size]

    def as_dict(self) -> dict:
        return {
            "batch1_ms": round(self.batch1_ms, 3),
            "batch1_images_per_second": round(1000 / self.batch1_ms, 2),
            "batch1_cpu_ms": round(self.batch1_cpu_ms, 3),
            "images_per_second_by_batch": {str(k): round(v, 2) for k, v in self.images_per_second.items()},
            "best_batch_size": self.best_batch_size,
            "best_images_per_second": round(self.best_images_per_second, 2),
        }


def measure_in_process(
    version_dir: str, image_bytes: bytes, batch_sizes: list[int], seconds_per_size: float
) -> InProcessResult:
    model = PeerModel(version_dir)

    def run(batch_size: int) -> None:
        model.predict([model.prepare(image_bytes) for _ in range(batch_size)])

    throughput = {}
    for batch_size in batch_sizes:
        for _ in range(3):  # warm up this shape
            run(batch_size)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds_per_size:
            run(batch_size)
            count += batch_size
        throughput[batch_size] = count / (time.perf_counter() - started)

    single = []
    deadline = time.perf_counter() + seconds_per_size
    cpu = time.process_time()
    while time.perf_counter() < deadline or len(single) < 20:
        started = time.perf_counter()
        run(1)
        single.append((time.perf_counter() - started) * 1000)
    cpu_ms = (time.process_time() - cpu) * 1000 / len(single)
    return InProcessResult(statistics.median(single), throughput, cpu_ms)
