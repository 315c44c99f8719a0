"""Requests as clients send them, and answers asserted exactly: multipart uploads, problems, metrics."""

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def files(*uploads: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    """Multipart parts named `file`, as `curl -F file=@a.png -F file=@b.png` sends them."""
    return [("file", (name, data)) for name, data in uploads]


def problem(response, status: int, type_: str, title: str, detail: str, **extra) -> None:
    """Assert an RFC 9457 problem body, exactly."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {"type": type_, "title": title, "status": status, "detail": detail, **extra}


def samples(client: TestClient) -> dict[tuple, float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
