"""The page at GET /, in a real browser (Debian's chromium) against a real `python -m app` process."""

import asyncio
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urljoin

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from starlette.requests import Request

from app.api.problems import service_error
from app.errors import Overloaded
from tests.app.servers import Server, running_server
from tests.browser import launch
from tests.support.images import encode, noise
from tests.support.models import IMAGE_SIZE, LABELS, TRAINED_NAME
from tests.training.test_report import PageLinks

MAX_IMAGE_PIXELS = 500 * 500
MAX_UPLOAD_BYTES = 1_000_000
TIMEOUT_MS = 60_000  # every wait on the page has this deadline


@pytest.fixture(scope="module")
def server(model_repository, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("page-server") / "server.log"
    limits = {"MAX_IMAGE_PIXELS": str(MAX_IMAGE_PIXELS), "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)}
    with running_server(model_repository, log, **limits) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors = watch_errors(page)
    page.goto(server.url + "/")
    expect(page.locator("#model-line")).to_have_text("Serving inception_v2 version 1")
    yield page
    page.close()
    assert errors == [], "the page's script raised or logged an error"


def watch_errors(page: Page) -> list[str]:
    """What the page's script raises and every error on its console (a Content-Security-Policy
    violation, a failed load), except the answers the tests ask for on purpose (4xx, 5xx)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            message.type == "error"
            and "the server responded with a status of" not in message.text
            and errors.append(message.text)
        ),
    )
    return errors


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """A JPEG and a PNG as people send them, a text file, an image over MAX_IMAGE_PIXELS and one
    over MAX_UPLOAD_BYTES."""
    folder = tmp_path_factory.mktemp("uploads")
    files = {
        "photo.jpg": encode(noise(120, 90, seed=1), "JPEG", quality=90),
        "drawing.png": encode(noise(64, 64, seed=2)),
        "notes.txt": b"shopping list: eggs, milk\n",
        "huge.png": encode(noise(600, 500, seed=3)),
        "heavy.png": encode(noise(1000, 1000, seed=4)),  # 3 MB: noise does not compress
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def predict(server: Server, path: Path) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", files={"file": (path.name, path.read_bytes())}, timeout=60)


def result(page: Page, filename: str):
    """The finished result of `filename` on the page."""
    item = page.locator(".result", has=page.locator(".filename", has_text=filename))
    expect(item).to_have_attribute("aria-busy", "false")
    return item


def shown_predictions(item) -> list[tuple[str, float, str]]:
    """(label shown, its score, the score shown) for each bar of a result."""
    rows = item.locator(".prediction")
    return [
        (
            row.locator(".label").inner_text(),
            float(row.get_attribute("data-score")),
            row.locator(".score").inner_text(),
        )
        for row in rows.all()
    ]


def test_the_page_is_served_with_its_own_files_only(server, page):
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.reload()
    expect(page.locator("#model-line")).to_have_text("Serving inception_v2 version 1")

    assert sorted(requested) == sorted(
        f"{server.url}{path}" for path in ("/", "/static/page.css", "/static/page.js", "/model")
    )
    assert httpx.get(server.url + "/").headers["content-security-policy"] == (
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )
    assert httpx.get(server.url + "/static/secrets.txt").status_code == 404


def test_a_jpeg_and_a_png_show_the_labels_predict_answers(server, page, images):
    uploads = [images["photo.jpg"], images["drawing.png"]]

    page.set_input_files("#files", uploads)

    for path in uploads:
        answer = predict(server, path).json()["results"][0]["predictions"]
        shown = shown_predictions(result(page, path.name))
        assert [label for label, _, _ in shown] == [p["label"] for p in answer]
        np.testing.assert_allclose([score for _, score, _ in shown], [p["score"] for p in answer], atol=1e-5)
        assert [text for _, _, text in shown] == [f"{score * 100:.1f} %" for _, score, _ in shown]
        thumbnail = result(page, path.name).locator("img.thumbnail")
        assert thumbnail.evaluate("image => image.naturalWidth") == (120 if path.suffix == ".jpg" else 64)


def test_a_file_that_is_not_an_image_shows_the_problem_in_words(server, page, images):
    problem = predict(server, images["notes.txt"]).json()

    page.set_input_files("#files", images["notes.txt"])

    item = result(page, "notes.txt")
    expect(item.locator(".problem-title")).to_have_text("Unsupported image format (415)")
    expect(item.locator(".problem-detail")).to_have_text(problem["detail"])
    assert problem["detail"] == "'notes.txt': not a JPEG, PNG, GIF, BMP or WebP image"
    expect(item.locator(".no-preview")).to_have_text("No preview")


def test_an_image_over_the_pixel_limit_shows_413(server, page, images):
    page.set_input_files("#files", images["huge.png"])

    item = result(page, "huge.png")
    expect(item.locator(".problem-title")).to_have_text("Image too large (413)")
    expect(item.locator(".problem-detail")).to_have_text(predict(server, images["huge.png"]).json()["detail"])


def test_a_file_over_the_upload_limit_shows_413(server, page, images):
    assert images["heavy.png"].stat().st_size > MAX_UPLOAD_BYTES

    page.set_input_files("#files", images["heavy.png"])

    item = result(page, "heavy.png")
    expect(item.locator(".problem-title")).to_have_text("Request body too large (413)")
    expect(item.locator(".problem-detail")).to_have_text(
        f"The request body is over MAX_UPLOAD_BYTES ({MAX_UPLOAD_BYTES} bytes)"
    )


PREDICT_REQUEST = Request(
    {"type": "http", "method": "POST", "path": "/predict", "headers": [], "query_string": b""}
)


def test_a_full_queue_is_shown_with_when_to_retry(page):
    # A full queue cannot be produced on demand without racing the model, so the page reads the
    # service's own 503 answer (problem body and Retry-After) as the browser would receive it.
    overloaded = Overloaded("256 images are waiting for the model; MAX_QUEUE_SIZE is 256")
    with ThreadPoolExecutor(1) as thread:  # this thread runs Playwright's event loop
        answer = thread.submit(asyncio.run, service_error(PREDICT_REQUEST, overloaded)).result()

    shown = page.evaluate(
        """async ([status, headers, body]) => {
            const box = document.createElement("div");
            showProblem(box, await readProblem(new Response(body, {status, headers})));
            return [...box.querySelectorAll("p")].map(p => p.textContent);
        }""",
        [answer.status_code, dict(answer.headers), answer.body.decode()],
    )

    assert shown == [
        "Overloaded (503)",
        "256 images are waiting for the model; MAX_QUEUE_SIZE is 256",
        "Try again in 1 s.",
    ]


def test_the_drop_zone_is_reached_and_used_with_the_keyboard(page, images):
    # A listener makes Playwright intercept file choosers; it asks the browser without waiting for an
    # answer, so ask first: the key presses below are sent after it.
    page.on("filechooser", lambda chooser: None)
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "files"
    assert page.locator("#files").evaluate("input => input.labels[0].id") == "drop-zone"

    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files(images["drawing.png"])

    assert len(shown_predictions(result(page, "drawing.png"))) == len(LABELS)
    # Exported before confidence scores: no verdict either way.
    assert result(page, "drawing.png").locator(".outcome").get_attribute("data-confident") == "unknown"
    expect(result(page, "drawing.png").locator(".not-sure")).to_have_count(0)


def test_the_model_card_shows_the_models_metadata(server, page):
    info = httpx.get(server.url + "/model").json()
    card = page.locator("#card-body")

    facts = dict(
        zip(
            card.locator(".facts dt").all_inner_texts(),
            card.locator(".facts dd").all_inner_texts(),
            strict=True,
        )
    )
    assert facts["Name"] == "inception_v2"
    assert facts["Version"] == "1"
    assert facts["Input size"] == f"{IMAGE_SIZE} × {IMAGE_SIZE} pixels"
    assert facts["JPEG decoding"] == "reduced DCT scale"
    assert facts["Network"] == "inception_v2_seed"
    assert facts["Parameters"].startswith(f"{info['architecture']['total_params']:,} (")
    assert card.locator(".labels li").all_inner_texts() == LABELS
    # The seed network has no Inception V2 end points: each layer is its own row.
    rows = card.locator("table.blocks tbody tr")
    assert rows.locator("th").all_inner_texts() == [layer["name"] for layer in info["architecture"]["layers"]]
    # Training settings as exported by the fixture, {"params": {"epochs": 0}}, none put in words.
    assert facts["epochs"] == "0"
    # Exported before confidence scores: the card says what that means.
    expect(card.locator(".confidence p")).to_have_text(
        "This version was exported before confidence scores: its probabilities are not calibrated, "
        "and it cannot say when it is not sure."
    )


def test_the_model_card_lists_every_version_with_its_state(server, page):
    versions = httpx.get(server.url + "/model").json()["versions"]
    assert versions == [{"version": 1, "state": "AVAILABLE", "version_labels": [], "error": None}]

    rows = page.locator("#card-body .versions tbody tr")

    assert [row.locator("th, td").all_inner_texts() for row in rows.all()] == [
        ["1 (shown)", "AVAILABLE", "–", "–"]
    ]


def test_blocks_group_inception_v2_layers_by_the_reference_end_points(page):
    from training.export import describe_architecture
    from training.inception_v2 import inception_v2

    architecture = describe_architecture(inception_v2(input_shape=(32, 32, 3), num_classes=3), "inception_v2")

    blocks = page.evaluate("layers => blocks(layers)", architecture["layers"])

    mixed = ["3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b", "5c"]
    assert [block["name"] for block in blocks] == [
        "pixels",
        "scale_to_unit_range",
        "Conv2d_1a_7x7",
        "MaxPool_2a_3x3",
        "Conv2d_2b_1x1",
        "Conv2d_2c_3x3",
        "MaxPool_3a_3x3",
        *(f"Mixed_{name}" for name in mixed),
        "Logits",
        "Predictions",
    ]
    assert sum(block["params"] for block in blocks) == architecture["total_params"]
    by_name = {block["name"]: block for block in blocks}
    assert by_name["Mixed_5c"]["output_shape"] == [1, 1, 1024]
    assert by_name["Logits"]["output_shape"] == [3]


CONTRAST = """element => {
    const luminance = colour => {
        const [r, g, b] = colour.match(/[\\d.]+/g).slice(0, 3).map(v => {
            const c = Number(v) / 255;
            return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    let background = element;
    while (getComputedStyle(background).backgroundColor === "rgba(0, 0, 0, 0)") {
        background = background.parentElement;
    }
    const [light, dark] = [getComputedStyle(element).color, getComputedStyle(background).backgroundColor]
        .map(luminance).sort((a, b) => b - a);
    return (light + 0.05) / (dark + 0.05);
}"""


def test_text_meets_wcag_aa_contrast(page, images):
    page.set_input_files("#files", [images["drawing.png"], images["notes.txt"]])
    result(page, "drawing.png")
    result(page, "notes.txt")

    selectors = [
        "h1", "#model-line", ".drop-zone-title", ".drop-zone-hint", ".filename", ".prediction .label",
        ".prediction .score", ".problem-title", ".problem-detail", ".facts dt", ".facts dd", ".labels li",
        "caption", "tbody th",
    ]  # fmt: skip
    ratios = {selector: page.locator(selector).first.evaluate(CONTRAST) for selector in selectors}
    assert {selector: ratio for selector, ratio in ratios.items() if ratio < 4.5} == {}


# A file a version's metadata lists in its report, as a careless or hostile exporter might: opened,
# its script would mark the document.
SCRIPTED_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    "<script>document.documentElement.setAttribute('data-ran', 'yes')</script></svg>"
)


@pytest.fixture(scope="module")
def trained_server(trained_repository, tmp_path_factory) -> Iterator[Server]:
    """The service on a version trained by the training command, which wrote its training report,
    with `scripted.svg` added to that report's files."""
    trained, _ = trained_repository
    models = tmp_path_factory.mktemp("trained") / "models"
    shutil.copytree(trained, models)
    version = models / TRAINED_NAME / "1"
    metadata = json.loads((version / "metadata.json").read_text())
    metadata["report"]["files"].append("scripted.svg")
    (version / "metadata.json").write_text(json.dumps(metadata))
    (version / metadata["report"]["folder"] / "scripted.svg").write_text(SCRIPTED_SVG)
    with running_server(models, models.parent / "server.log", MODEL_NAME=TRAINED_NAME) as server:
        yield server


@pytest.fixture
def trained_page(browser, trained_server) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors = watch_errors(page)
    page.goto(trained_server.url + "/")
    expect(page.locator("#model-line")).to_have_text(f"Serving {TRAINED_NAME} version 1")
    yield page
    page.close()
    assert errors == [], "the page's script raised or logged an error"


def test_the_model_card_links_the_training_report_and_shows_its_plots(trained_server, trained_page):
    info = httpx.get(trained_server.url + "/model").json()
    page_url = str(httpx.get(trained_server.url + info["report"], follow_redirects=True).url)
    links = PageLinks()
    links.feed(httpx.get(page_url).text)

    expect(trained_page.locator(".report a")).to_have_attribute("href", info["report"])
    plots = trained_page.locator(".report img")
    expect(plots).to_have_count(len(links.images))
    # The plots /model lists are the report page's own, taken from /model: the page parses no HTML.
    assert [urljoin(page_url, src) for src in links.images] == [
        trained_server.url + plot["url"] for plot in info["plots"]
    ]
    assert [(plot.get_attribute("src"), plot.get_attribute("alt")) for plot in plots.all()] == [
        (plot["url"], plot["caption"]) for plot in info["plots"]
    ]
    assert trained_page.locator(".report figcaption").all_inner_texts() == [
        plot["caption"] for plot in info["plots"]
    ]
    # Locator checks, not wait_for_function: a predicate string is eval'd, which the page's CSP forbids.
    for plot in plots.all():
        expect(plot).to_have_js_property("complete", True)
        assert plot.evaluate("img => img.naturalWidth") > 0, plot.get_attribute("src")


def test_the_model_card_reads_as_a_card(trained_server, trained_page):
    training = httpx.get(trained_server.url + "/model").json()["training"]
    confidence = httpx.get(trained_server.url + "/model").json()["confidence"]
    data, params, metrics = training["data"], training["params"], training["metrics"]
    card = trained_page.locator("#card-body")

    sentences = card.locator(".training > p").all_inner_texts()

    assert sentences[0] == (
        f"Trained on {data['num_train']} images of 3 classes, validated on {data['num_validation']} "
        "held back (20.0 %)."
    )
    assert sentences[1].startswith(
        f"The inception_v2_seed network at 16 × 16 pixels, up to 4 epochs ({metrics['epochs_run']} run), "
        "stopping early after 4 epochs without progress; batches of 8, learning rate 0.001, seed 7, "
        f"{'with' if params['augment'] else 'without'} augmentation. It took "
    )
    assert sentences[2] == f"Validation accuracy: {metrics['val_accuracy'] * 100:.1f} %."
    rows = card.locator("table.per-class tbody tr")
    assert [row.locator("th, td").all_inner_texts() for row in rows.all()] == [
        [name, *(f"{row[key] * 100:.1f} %" for key in ("precision", "recall", "f1")), str(row["support"])]
        for name, row in metrics["per_class"].items()
    ]
    assert card.locator("table.per-class thead th").all_inner_texts() == [
        "Class", "Precision", "Recall", "F1", "Images"
    ]  # fmt: skip
    others = dict(
        zip(
            card.locator(".training .facts dt").all_inner_texts(),
            card.locator(".training .facts dd").all_inner_texts(),
            strict=True,
        )
    )
    in_words = {"arch", "image_size", "epochs", "patience", "batch_size", "learning_rate", "seed", "augment"}
    assert others == {
        key.replace("_", " "): shown_value(value)
        for key, value in params.items()
        if key not in in_words | {"validation_split"}
    }
    assert others["model name"] == TRAINED_NAME
    calibration = confidence["calibration"]
    threshold, temperature = shown_number(confidence["threshold"]), shown_number(confidence["temperature"])
    before, after = (f"{calibration[key] * 100:.1f} %" for key in ("ece_before", "ece_after"))
    assert card.locator(".confidence p").all_inner_texts() == [
        "An answer reads “not sure” when the image's out-of-distribution score (mahalanobis) is above "
        f"{threshold}, a threshold chosen at export: it {confidence['threshold_rule']}.",
        f"Probabilities are calibrated by temperature scaling (T = {temperature}), fitted on "
        f"{calibration['fitted_on']}: expected calibration error {before} before, {after} after.",
    ]


def shown_value(value: object) -> str:
    """A setting as the page shows it: JavaScript's String() of it, four digits for a fraction."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else shown_number(value)
    return str(value)


def shown_number(value: float) -> str:
    """A number as the page shows it: four significant digits (JavaScript's toPrecision(4))."""
    return f"{float(f'{value:.4g}'):g}"


def test_an_image_the_model_is_not_sure_of_reads_not_sure(
    trained_repository, trained_server, trained_page, tmp_path
):
    models, _ = trained_repository
    uploads = {
        "red.jpg": (models.parent / "data" / "red" / "0.jpg").read_bytes(),
        "static.png": encode(noise(40, 40)),
    }
    for name, data in uploads.items():
        (tmp_path / name).write_bytes(data)
    answers = {
        name: httpx.post(f"{trained_server.url}/predict", files={"file": (name, data)}, timeout=60).json()
        for name, data in uploads.items()
    }
    assert [answers[name]["results"][0]["confident"] for name in uploads] == [True, False]

    trained_page.set_input_files("#files", [tmp_path / name for name in uploads])

    sure, unsure = result(trained_page, "red.jpg"), result(trained_page, "static.png")
    expect(unsure.locator(".not-sure .verdict")).to_have_text("Not sure")
    expect(unsure.locator(".verdict-detail")).to_have_text(
        "This image is unlike what the model was trained on; its guesses:"
    )
    expect(unsure.locator(".predictions.unsure")).to_have_count(1)
    assert unsure.locator(".outcome").get_attribute("data-confident") == "false"
    expect(sure.locator(".not-sure")).to_have_count(0)
    expect(sure.locator(".predictions.unsure")).to_have_count(0)
    assert sure.locator(".outcome").get_attribute("data-confident") == "true"
    # The guesses are still there, greyed: the same labels and scores /predict gave.
    shown = shown_predictions(unsure)
    assert [label for label, _, _ in shown] == [
        p["label"] for p in answers["static.png"]["results"][0]["predictions"]
    ]


def test_a_report_page_shows_its_figures_but_no_report_file_runs_script(browser, trained_server):
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)

    page.goto(trained_server.url + "/model/report/1/")
    figures = page.locator("img")
    expect(figures).to_have_count(4)
    for figure in figures.all():
        expect(figure).to_have_js_property("complete", True)
        assert figure.evaluate("img => img.naturalWidth") > 0, figure.get_attribute("src")
    page.goto(trained_server.url + "/model/report/1/scripted.svg")
    expect(page.locator("svg")).to_have_count(1)

    assert page.locator("svg").get_attribute("data-ran") is None
    page.close()
