"""GET /model/report: the served version's training report, and only its listed files."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.conftest import problem
from tests.conftest import TRAINED_NAME
from tests.training.test_report import PNG_SIGNATURE, PageLinks


@pytest.fixture(scope="module")
def trained_client(trained_repository: tuple[Path, str], make_settings) -> Iterator[TestClient]:
    models, _ = trained_repository
    with TestClient(create_app(make_settings(model_base_path=models, model_name=TRAINED_NAME))) as client:
        yield client


def test_model_links_the_report(trained_client):
    assert trained_client.get("/model").json()["report"] == "/model/report"


def test_the_page_and_every_image_it_shows_are_served(trained_client):
    response = trained_client.get("/model/report")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    links = PageLinks()
    links.feed(response.text)
    assert len(links.images) == 3
    for src in links.images:
        image = trained_client.get(
            f"/model/report/{src}"
        )  # relative to /model/report, as a browser resolves it
        assert image.status_code == 200, src
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    "name",
    ["metadata.json", "index.html", "..%2Fmetadata.json", "%2E%2E%2Fsaved_model.pb", ".%2Fevaluation.json"],
)
def test_only_the_files_the_report_lists_are_served(trained_client, name):
    response = trained_client.get(f"/model/report/{name}")

    assert response.status_code == 404
    assert response.json()["type"] in ("urn:inception-v2-service:problem:report-not-found", "about:blank")
    assert PNG_SIGNATURE not in response.content


def test_a_file_not_in_the_report_is_named_in_the_error(trained_client):
    problem(
        trained_client.get("/model/report/metadata.json"),
        404,
        "urn:inception-v2-service:problem:report-not-found",
        "No such report",
        f"The training report of {TRAINED_NAME} version 1 has no file 'metadata.json'; "
        "it has: learning_curves.png, confusion_matrix.png, worst_validation.png",
    )


def test_a_version_without_a_report_says_so(client):
    assert client.get("/model").json()["report"] is None
    for path in ("/model/report", "/model/report/learning_curves.png"):
        problem(
            client.get(path),
            404,
            "urn:inception-v2-service:problem:report-not-found",
            "No such report",
            "inception_v2 version 1 has no training report",
        )
