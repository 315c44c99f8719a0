"""One error shape everywhere: the problem handlers of app/api/problems.py."""

import pytest
from fastapi.testclient import TestClient

from app import errors
from app.api.problems import STATUS, problem_type
from app.main import create_app
from tests.support.http import problem


def test_an_unknown_path_is_a_problem(client):
    response = client.get("/predictions")

    problem(response, 404, "about:blank", "Not Found", "Nothing at /predictions; see /docs for the endpoints")


def test_a_wrong_method_is_a_problem_naming_the_allowed_ones(client):
    response = client.get("/predict")

    problem(response, 405, "about:blank", "Method Not Allowed", "GET is not allowed on /predict")
    assert response.headers["allow"] == "POST"


def test_a_malformed_multipart_body_is_a_problem(client):
    response = client.post(
        "/predict", content=b"no boundary here", headers={"content-type": "multipart/form-data; boundary=x"}
    )

    problem(response, 400, "about:blank", "Bad Request", "Invalid multipart data.")


def test_an_unexpected_failure_is_a_500_problem_without_internals(make_settings):
    app = create_app(make_settings())

    @app.get("/fail")
    async def fail() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/fail")

    problem(
        response,
        500,
        "about:blank",
        "Internal Server Error",
        "The server failed on this request; its log has the details",
    )


def test_every_error_a_client_can_cause_has_a_status_and_its_own_type():
    reportable = {
        cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, Exception)
    }
    reportable -= {errors.ServiceError, errors.ModelLoadError}  # the base, and a start-up failure

    assert set(STATUS) == reportable
    assert len({problem_type(cls) for cls in STATUS}) == len(STATUS)


@pytest.mark.parametrize(
    "error_class, expected",
    [
        (errors.UnsupportedImage, "urn:inception-v2-service:problem:unsupported-image"),
        (errors.RequestTimedOut, "urn:inception-v2-service:problem:request-timed-out"),
    ],
)
def test_problem_types_are_named_after_the_errors(error_class, expected):
    assert problem_type(error_class) == expected
