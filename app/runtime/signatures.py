"""The SavedModel's signature definitions, read from `saved_model.pb` as TF Serving reads them."""

from functools import lru_cache
from pathlib import Path

from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2


def signature_defs(version_dir: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """Every signature of the SavedModel in `version_dir` (its serving meta graph), by name."""
    graph_file = version_dir / "saved_model.pb"
    return _read(graph_file, graph_file.stat().st_mtime_ns)


@lru_cache(maxsize=16)
def _read(graph_file: Path, mtime_ns: int) -> dict[str, meta_graph_pb2.SignatureDef]:
    """Parsed once per file (it holds the whole graph); the time keys out a version exported again."""
    saved_model = saved_model_pb2.SavedModel.FromString(graph_file.read_bytes())
    return dict(saved_model.meta_graphs[0].signature_def)
