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
    }
    for key, operation in operations.items():
        assert operation["description"], key
        success = min(status for status in operation["responses"] if status[0] in "23")  # 307: a redirect
        assert _has_example(operation["responses"][success], spec), key


def test_predict_documents_its_upload_field_and_errors(client):
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]

    assert set(operation["responses"]) == {"200", "404", "413", "415", "422", "503"}
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
