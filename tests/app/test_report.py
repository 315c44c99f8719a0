"""GET /model/report: a version's training report, and only its listed files."""

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.support.http import problem
from tests.support.models import TRAINED_NAME
from tests.training.test_report import PNG_SIGNATURE, PageLinks

# Whatever a version's metadata lists is served sandboxed: no script runs on the API's origin.
REPORT_HEADERS = {
    "content-security-policy": "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
}
FIGURES = ["learning_curves.png", "confusion_matrix.png", "calibration.png", "worst_validation.png"]


@pytest.fixture(scope="module")
def trained_client(trained_repository: tuple[Path, str], make_settings) -> Iterator[TestClient]:
    models, _ = trained_repository
    with TestClient(create_app(make_settings(model_base_path=models, model_name=TRAINED_NAME))) as client:
        yield client


def test_model_links_the_report_of_the_version_it_describes(trained_client):
    assert trained_client.get("/model").json()["report"] == "/model/report/1/"
    assert trained_client.get("/model", params={"version": 1}).json()["report"] == "/model/report/1/"


def test_the_page_and_every_image_it_shows_are_served_where_a_browser_looks(trained_client):
    redirect = trained_client.get("/model/report", follow_redirects=False)
    assert redirect.status_code == 307
    assert redirect.headers["location"] == "/model/report/1/"

    page = trained_client.get("/model/report")  # follows the redirect, as a browser does

    assert page.status_code == 200
    assert str(page.url).endswith("/model/report/1/")
    assert {name: page.headers[name] for name in REPORT_HEADERS} == REPORT_HEADERS
    assert page.headers["content-type"].startswith("text/html")
    links = PageLinks()
    links.feed(page.text)
    assert links.images == FIGURES
    for src in links.images:
        image = trained_client.get(urljoin(str(page.url), src))  # a relative link, resolved as a browser does
        assert image.status_code == 200, src
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(PNG_SIGNATURE)
        assert {name: image.headers[name] for name in REPORT_HEADERS} == REPORT_HEADERS


@pytest.mark.parametrize(
    "name",
    ["metadata.json", "index.html", "..%2Fmetadata.json", "%2E%2E%2Fsaved_model.pb", ".%2Fevaluation.json"],
)
def test_only_the_files_the_report_lists_are_served(trained_client, name):
    response = trained_client.get(f"/model/report/1/{name}")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert PNG_SIGNATURE not in response.content


def test_a_file_not_in_the_report_is_named_in_the_error(trained_client):
    problem(
        trained_client.get("/model/report/1/metadata.json"),
        404,
        "urn:inception-v2-service:problem:report-not-found",
        "No such report",
        f"The training report of {TRAINED_NAME} version 1 has no file 'metadata.json'; "
        f"it has: {', '.join(FIGURES)}",
    )


def test_a_version_that_is_not_served_has_no_report(trained_client):
    response = trained_client.get("/model/report/7/")

    assert response.status_code == 404
    assert response.json()["type"] == "urn:inception-v2-service:problem:version-not-found"


def test_a_version_without_a_report_says_so(client):
    assert client.get("/model").json()["report"] is None
    for path in ("/model/report", "/model/report/1/", "/model/report/1/learning_curves.png"):
        problem(
            client.get(path),
            404,
            "urn:inception-v2-service:problem:report-not-found",
            "No such report",
            "inception_v2 version 1 has no training report",
        )
