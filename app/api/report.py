"""GET /model/report: the served version's training report, a page and the figures it shows.

Only the files the exporter listed in metadata.json are served, by name: no paths.
"""

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from app.api.predict import get_classifier
from app.api.problems import PROBLEM_RESPONSES, Problem
from app.errors import ReportNotFound
from app.runtime.classifier import Classifier
from app.runtime.model import Model

router = APIRouter(tags=["model"])

REPORT_URL = "/model/report"
NOT_FOUND = {"model": Problem, "description": "The version has no training report, or no file of that name"}


def report_url(model: Model) -> str | None:
    """Where the served version's report is, or None when it has none."""
    return REPORT_URL if model.metadata.report else None


def report_file(model: Model, name: str | None) -> Path:
    """The report's page (`name` None) or one of its listed files, or `ReportNotFound`."""
    report = model.metadata.report
    if report is None:
        raise ReportNotFound(f"{model.name} version {model.version} has no training report")
    if name is None:
        return model.path / report.folder / report.page
    if name not in report.files:
        raise ReportNotFound(
            f"The training report of {model.name} version {model.version} has no file {name!r}; "
            f"it has: {', '.join(report.files)}"
        )
    return model.path / report.folder / name


@router.get(
    REPORT_URL,
    summary="The training report",
    response_class=FileResponse,
    responses={
        200: {"content": {"text/html": {"example": "<!DOCTYPE html>...<h1>Training report</h1>..."}}},
        404: NOT_FOUND,
        503: PROBLEM_RESPONSES[503],
    },
)
async def report_page(classifier: Annotated[Classifier, Depends(get_classifier)]) -> FileResponse:
    """The served version's training report: learning curves, confusion matrix, worst images, settings."""
    return FileResponse(report_file(classifier.model, None), media_type="text/html")


@router.get(
    REPORT_URL + "/{name}",
    summary="A figure of the training report",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/png": {"example": "(the PNG of learning_curves.png)"}}},
        404: NOT_FOUND,
        503: PROBLEM_RESPONSES[503],
    },
)
async def report_figure(
    name: str, classifier: Annotated[Classifier, Depends(get_classifier)]
) -> FileResponse:
    """One file the report's page shows, by the name the page uses."""
    return FileResponse(report_file(classifier.model, name))
