"""BentoML with adaptive batching, one worker: `bentoml serve benchmarks.peers.bento:Classifier`.

BentoML's batchable API takes a list per request and merges the lists of concurrent requests
into one call (up to `max_batch_size`, waiting at most `max_latency_ms`); a multipart request's
`file` field arrives as a one-element list of uploaded files.
"""

from pathlib import Path

import bentoml

from benchmarks.peers.model import PeerModel


@bentoml.service(workers=1, traffic={"timeout": 60})
class Classifier:
    def __init__(self) -> None:
        self.model = PeerModel()

    # The service's own batch limits: at most 32 images a call, no image held back longer than 10 s.
    @bentoml.api(route="/predict", batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def predict(self, file: list[Path]) -> list[list[dict]]:
        return self.model.classify([self.model.prepare(path) for path in file])
