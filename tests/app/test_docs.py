"""The OpenAPI page, and the examples docs/api.md gives for the three APIs, run as a user runs them."""

import json
import re
import subprocess
import sys

import pytest

from tests.support import ROOT
from tests.support.images import jpeg


def test_the_docs_page_is_served(client):
    response = client.get("/docs")

    assert response.status_code == 200
    assert "swagger-ui" in response.text


def test_every_endpoint_is_documented_with_a_description_and_an_example(client):
    spec = client.get("/openapi.json").json()

    operations = {
        (method.upper(), path): operation
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }
    assert set(operations) == {
        ("POST", "/predict"),
        ("GET", "/model"),
        ("GET", "/model/report"),
        ("GET", "/model/report/{version}/"),
        ("GET", "/model/report/{version}/{name}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        *(
            (method, f"/v1/models/{{name}}{version}{suffix}")
            for version in ("", "/versions/{version}", "/labels/{label}")
            for method, suffix in (("GET", ""), ("GET", "/metadata"), ("POST", ":{method}"))
        ),
        ("GET", "/v2"),
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
        *(
            (method, f"/v2/models/{{name}}{version}{suffix}")
            for version in ("", "/versions/{version}")
            for method, suffix in (("GET", ""), ("GET", "/ready"), ("POST", "/infer"))
        ),
    }
    for key, operation in operations.items():
        assert operation["description"], key
        success = min(status for status in operation["responses"] if status[0] in "23")  # 307: a redirect
        assert _has_example(operation["responses"][success], spec), key


def test_predict_documents_its_upload_field_and_errors(client):
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]

    assert set(operation["responses"]) == {"200", "400", "404", "408", "413", "415", "422", "503"}
    assert set(operation["responses"]["415"]["content"]) == {"application/problem+json"}
    assert [parameter["name"] for parameter in operation["parameters"]] == ["top_k", "version", "label"]
    assert "multipart/form-data" in operation["requestBody"]["content"]


def _has_example(response: dict, spec: dict) -> bool:
    """Whether a response, a header of it, or the schema it refers to, carries an example."""
    if any("example" in header for header in response.get("headers", {}).values()):
        return True
    for content in response.get("content", {}).values():
        if "example" in content or "examples" in content:
            return True
        ref = content.get("schema", {}).get("$ref", "")
        schema = spec["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
        if "examples" in schema or any(
            "examples" in field for field in schema.get("properties", {}).values()
        ):
            return True
    return False


PROTOCOL_SECTIONS = (
    "## Three APIs, one model",
    "## TF Serving's REST API (/v1)",
    "## The Open Inference Protocol (v2)",
)


def documented_examples(language: str) -> list[str]:
    """The `language` code blocks of docs/api.md's sections on the three APIs."""
    text = (ROOT / "docs" / "api.md").read_text()
    sections = re.split(r"^(?=## )", text, flags=re.MULTILINE)
    chosen = [section for section in sections if section.startswith(PROTOCOL_SECTIONS)]
    assert len(chosen) == len(PROTOCOL_SECTIONS)
    return [
        block for section in chosen for block in re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)
    ]


@pytest.fixture
def in_folder_with_cat_jpg(tmp_path, monkeypatch):
    (tmp_path / "cat.jpg").write_bytes(jpeg(seed=12))
    monkeypatch.chdir(tmp_path)


def test_the_documented_curl_examples_answer_as_documented(live_server, in_folder_with_cat_jpg):
    commands = documented_examples("sh")
    assert len(commands) == 6

    for command in commands:
        script = "set -euo pipefail\n" + command.replace("127.0.0.1:8000", f"127.0.0.1:{live_server.port}")
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)

        assert result.returncode == 0, (command, result.stderr)
        answer = json.loads(result.stdout)
        assert "error" not in answer and "status" not in answer, (command, answer)


def test_the_documented_tritonclient_example_runs(live_server, in_folder_with_cat_jpg):
    [program] = documented_examples("python")
    program = program.replace("127.0.0.1:8000", f"127.0.0.1:{live_server.port}")

    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    probabilities, top = result.stdout.splitlines()
    assert probabilities.startswith("[[") and top.startswith("[[b'")
