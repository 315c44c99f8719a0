import subprocess
import sys

from fastapi.testclient import TestClient

from app.main import create_app
from tests.support import ROOT
from tests.support.http import problem
from tests.support.images import png


def test_healthz_answers_while_the_process_serves(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz_answers_once_the_model_is_warmed_up(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_readyz_answers_503_before_the_model_is_loaded(make_settings):
    client = TestClient(create_app(make_settings()))  # not entered: the lifespan has not run

    response = client.get("/readyz")

    problem(
        response,
        503,
        "urn:inception-v2-service:problem:model-not-ready",
        "Model not ready",
        "The model is not loaded",
    )
    assert response.headers["retry-after"] == "1"
    assert client.get("/healthz").status_code == 200


def test_readyz_answers_503_once_draining(make_settings):
    with TestClient(create_app(make_settings())) as client:
        client.app.state.dataplane.draining = True  # what a stop signal does first

        response = client.get("/readyz")
        still_serving = client.post("/predict", files=[("file", ("a.png", png()))])

    assert response.status_code == 503
    assert response.json()["detail"] == "The service is shutting down"
    assert still_serving.status_code == 200  # admitted requests are still answered


def test_predict_before_the_model_is_loaded_answers_503(make_settings):
    client = TestClient(create_app(make_settings()))

    response = client.post("/predict", files=[("file", ("a.png", png()))])

    assert response.status_code == 503
    assert response.json()["detail"] == "The model is not loaded"


def test_the_healthcheck_imports_nothing_heavy():
    code = "import sys, app.healthcheck; print(sorted({m.split('.')[0] for m in sys.modules} & HEAVY))"
    heavy = "{'tensorflow', 'numpy', 'fastapi', 'starlette', 'pydantic', 'PIL', 'uvicorn', 'keras'}"

    result = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {heavy}\n{code}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.strip() == "[]"


def test_the_healthcheck_fails_when_nothing_listens():
    result = subprocess.run(
        [sys.executable, "-m", "app.healthcheck"],
        cwd=ROOT,
        env={"PORT": "1"},
        capture_output=True,
        timeout=10,
    )

    assert result.returncode == 1
