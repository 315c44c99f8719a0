from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.http import files, problem
from tests.support.images import encode, noise, png
from tests.support.models import LABELS

URN = "urn:inception-v2-service:problem:"


def scores(result: dict) -> np.ndarray:
    """A result's probabilities in class order."""
    by_index = {p["index"]: p["score"] for p in result["predictions"]}
    return np.array([by_index[i] for i in range(len(by_index))])


def test_predict_answers_every_label_by_score_for_one_image(client):
    response = client.post("/predict", files=files(("shape.png", png())))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["model"] == {"name": "inception_v2", "version": 1}
    [result] = body["results"]
    assert result["filename"] == "shape.png"
    predictions = result["predictions"]
    assert len(predictions) == len(LABELS)  # the default of 5 capped at the number of classes
    assert {p["label"] for p in predictions} == set(LABELS)
    assert all(LABELS[p["index"]] == p["label"] for p in predictions)
    assert [p["score"] for p in predictions] == sorted((p["score"] for p in predictions), reverse=True)
    assert sum(p["score"] for p in predictions) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize(
    "image, fmt",
    [
        (noise(40, 30), "PNG"),
        (noise(40, 30).convert("L"), "PNG"),
        (noise(40, 30).convert("LA"), "PNG"),
        (noise(40, 30).convert("RGBA"), "PNG"),
        (noise(40, 30).convert("P"), "PNG"),
        (Image.fromarray(np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50), "PNG"),
        (noise(40, 30).convert("P"), "GIF"),
        (noise(40, 30), "BMP"),
    ],
    ids=["rgb", "grayscale", "grayscale-alpha", "rgba", "palette", "16-bit", "gif", "bmp"],
)
def test_probabilities_equal_the_saved_models_own_serving_signature(client, serving_default, image, fmt):
    data = encode(image, fmt)

    response = client.post("/predict", files=files(("image", data)))

    assert response.status_code == 200
    np.testing.assert_allclose(scores(response.json()["results"][0]), serving_default(data), atol=1e-5)


@pytest.mark.parametrize(
    "name, data",
    [
        ("cmyk.jpg", encode(noise(40, 30).convert("CMYK"), "JPEG")),
        ("gray.jpg", encode(noise(40, 30).convert("L"), "JPEG")),
        ("photo.webp", encode(noise(40, 30), "WEBP")),
        ("alpha.webp", encode(noise(40, 30).convert("RGBA"), "WEBP", lossless=True)),
        ("icon.bmp", encode(noise(40, 30).convert("1"), "BMP")),
    ],
)
def test_every_supported_kind_of_image_is_classified(client, name, data):
    response = client.post("/predict", files=files((name, data)))

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["filename"] == name
    assert sum(p["score"] for p in result["predictions"]) == pytest.approx(1, abs=1e-5)


def test_exif_orientation_is_applied_before_classifying(client):
    upright = noise(40, 24)
    exif = Image.Exif()
    exif[0x0112] = 8  # "turn a quarter counter-clockwise to view"
    stored = encode(upright.transpose(Image.Transpose.ROTATE_270), "PNG", exif=exif)

    response = client.post("/predict", files=files(("upright.png", encode(upright)), ("stored.png", stored)))

    upright_result, stored_result = response.json()["results"]
    np.testing.assert_allclose(scores(stored_result), scores(upright_result), atol=1e-6)


def test_several_files_get_one_result_each_in_upload_order(client, serving_default):
    uploads = [(f"image-{i}.png", png(seed=i)) for i in range(5)]

    response = client.post("/predict", files=files(*uploads))

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [name for name, _ in uploads]
    for result, (_, data) in zip(results, uploads, strict=True):
        np.testing.assert_allclose(scores(result), serving_default(data), atol=1e-5)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_top_k_keeps_the_most_likely_labels(client, serving_default, top_k):
    data = png(seed=3)

    response = client.post("/predict", params={"top_k": top_k}, files=files(("a.png", data)))

    predictions = response.json()["results"][0]["predictions"]
    expected = np.argsort(-serving_default(data))[:top_k]
    assert [p["index"] for p in predictions] == expected.tolist()


def test_top_k_above_the_number_of_classes_is_refused(client):
    response = client.post("/predict", params={"top_k": 4}, files=files(("a.png", png())))

    message = "Input should be less than or equal to 3, the number of classes"
    problem(
        response,
        422,
        URN + "invalid-request",
        "Invalid request",
        f"query.top_k: {message}",
        errors=[{"loc": ["query", "top_k"], "msg": message, "type": "less_than_equal"}],
    )


@pytest.mark.parametrize(
    "value, message, kind",
    [
        ("0", "Input should be greater than or equal to 1", "greater_than_equal"),
        ("two", "Input should be a valid integer, unable to parse string as an integer", "int_parsing"),
    ],
)
def test_top_k_must_be_a_positive_integer(client, value, message, kind):
    response = client.post("/predict", params={"top_k": value}, files=files(("a.png", png())))

    problem(
        response,
        422,
        URN + "invalid-request",
        "Invalid request",
        f"query.top_k: {message}",
        errors=[{"loc": ["query", "top_k"], "msg": message, "type": kind}],
    )


def test_a_request_without_a_file_is_refused(client):
    response = client.post("/predict", files=[("image", ("a.png", png()))])  # a part not named `file`

    problem(
        response,
        422,
        URN + "invalid-request",
        "Invalid request",
        "body.file: Field required",
        errors=[{"loc": ["body", "file"], "msg": "Field required", "type": "missing"}],
    )


def test_a_request_with_no_body_at_all_is_refused(client):
    response = client.post("/predict")

    assert response.status_code == 422
    assert response.json()["detail"] == "body.file: Field required"


def test_a_text_field_in_place_of_a_file_is_named(client):
    response = client.post("/predict", files=[("file", (None, "cat.jpg")), ("other", ("a.png", png()))])

    message = "Expected a file (a part with a filename), received a text field"
    problem(
        response,
        422,
        URN + "invalid-request",
        "Invalid request",
        f"body.file.0: {message}",
        errors=[{"loc": ["body", "file", 0], "msg": message, "type": "value_error"}],
    )


@pytest.mark.parametrize(
    "content_type, body, detail",
    [
        ("multipart/form-data", b"--x\r\n", "Missing boundary in multipart."),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\nabc\r\n--x--\r\n',
            'The Content-Disposition header field "name" must be provided.',
        ),
        ("multipart/form-data; boundary=x", b"preamble\r\n--x\r\n", "Invalid multipart data."),
    ],
)
def test_a_malformed_multipart_body_is_named(client, content_type, body, detail):
    response = client.post("/predict", content=body, headers={"content-type": content_type})

    problem(response, 400, "about:blank", "Bad Request", detail)


def test_non_file_parts_and_a_utf8_filename_are_taken_as_sent(client):
    response = client.post("/predict", files=[("note", (None, "hello")), ("file", ("über ✓.png", png()))])

    assert response.status_code == 200
    assert [r["filename"] for r in response.json()["results"]] == ["über ✓.png"]


def test_a_file_that_is_not_an_image_is_named(client):
    response = client.post("/predict", files=files(("notes.txt", b"remember the milk")))

    problem(
        response,
        415,
        URN + "unsupported-image",
        "Unsupported image format",
        "'notes.txt': not a JPEG, PNG, GIF, BMP or WebP image",
        filename="notes.txt",
    )


def test_an_unsupported_image_format_is_named(client):
    response = client.post("/predict", files=files(("scan.tiff", encode(noise(8, 8), "TIFF"))))

    assert response.status_code == 415
    assert response.json()["filename"] == "scan.tiff"


def test_a_truncated_image_is_named(client):
    data = encode(noise(64, 64), "JPEG")

    response = client.post("/predict", files=files(("good.png", png()), ("cut.jpg", data[:1000])))

    assert response.status_code == 422
    body = response.json()
    assert body["type"] == URN + "invalid-image"
    assert body["title"] == "Invalid image"
    assert body["filename"] == "cut.jpg"
    assert body["detail"].startswith("'cut.jpg': truncated or corrupt JPEG image")


def test_the_first_bad_file_in_upload_order_is_reported(client):
    response = client.post(
        "/predict", files=files(("a.png", png()), ("b.txt", b"not an image"), ("c.txt", b"nor this"))
    )

    assert response.json()["filename"] == "b.txt"


def test_a_bad_image_fails_only_its_own_request_among_concurrent_ones(client):
    def post(i: int):
        upload = ("bad.png", png()[:200]) if i == 3 else (f"{i}.png", png(seed=i))
        return client.post("/predict", files=files(upload))

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))

    assert [r.status_code for r in responses] == [200, 200, 200, 422, 200, 200, 200, 200]
    assert responses[3].json()["filename"] == "bad.png"


INT_PARSING = "Input should be a valid integer, unable to parse string as an integer"


@pytest.mark.parametrize(
    "query, loc, message, kind",
    [
        ("version=%C2%B2", "version", INT_PARSING, "int_parsing"),  # "²".isdigit(), but not a number
        ("version=%FF", "version", INT_PARSING, "int_parsing"),  # not UTF-8
        ("version=0", "version", "Input should be greater than or equal to 1", "greater_than_equal"),
        ("top_k=%C2%B2", "top_k", INT_PARSING, "int_parsing"),
    ],
)
def test_a_malformed_query_gets_the_apis_own_problem_through_the_port(live_server, query, loc, message, kind):
    """The door reads ?version= before the app runs: what it cannot read is left to the app to name."""
    response = httpx.post(f"{live_server.url}/predict?{query}", files=files(("a.png", png())), timeout=60)

    problem(
        response,
        422,
        URN + "invalid-request",
        "Invalid request",
        f"query.{loc}: {message}",
        errors=[{"loc": ["query", loc], "msg": message, "type": kind}],
    )


def test_a_malformed_version_gets_the_apis_own_problem_from_the_middleware_too(client):
    response = client.post("/predict?version=%C2%B2", files=files(("a.png", png())))

    assert (response.status_code, response.json()["detail"]) == (422, f"query.version: {INT_PARSING}")
