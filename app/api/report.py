"""GET /model/report: a version's training report, a page and the figures it shows.

The page lives at `/model/report/{version}/`, so the relative links the exporter wrote (they work
from disk too) resolve to that version's figures, whichever version is the default meanwhile.
Only the files the exporter listed in metadata.json are served, by name: no paths.
"""

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse

from app.api.deps import ClassifierDep, DataPlaneDep
from app.api.problems import PROBLEM_RESPONSES, Problem
from app.errors import ReportNotFound
from app.runtime.model import Model

router = APIRouter(tags=["model"])

# A report file is whatever the version's metadata lists: an .html or .svg among them would otherwise
# run its script on the API's origin, with the API's cookies and keys in reach. Sandboxed, with no
# script allowed, a report page shows its own figures and inline style, and nothing more.
REPORT_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
NOT_FOUND = {"model": Problem, "description": "No such version, or it has no training report or no such file"}
VersionParam = Annotated[int, PathParam(ge=1, description="The model version.")]


def report_url(model: Model) -> str | None:
    """Where a version's report page is, or None when it has none."""
    return f"/model/report/{model.version}/" if model.metadata.report else None


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
    "/model/report",
    summary="The training report",
    status_code=307,
    response_class=RedirectResponse,
    responses={
        307: {
            "description": "To the version's report page",
            "headers": {"Location": {"schema": {"type": "string"}, "example": "/model/report/3/"}},
        },
        404: NOT_FOUND,
        503: PROBLEM_RESPONSES[503],
    },
)
async def report(classifier: ClassifierDep) -> RedirectResponse:
    """Go to the training report of a version (`?version=`, `?label=`; default the highest available)."""
    report_file(classifier.model, None)  # a version without a report is a 404 here, not after the redirect
    return RedirectResponse(report_url(classifier.model) or "", status_code=307)


@router.get(
    "/model/report/{version}/",
    summary="A training report page",
    response_class=FileResponse,
    responses={
        200: {"content": {"text/html": {"example": "<!DOCTYPE html>...<h1>Training report</h1>..."}}},
        404: NOT_FOUND,
        503: PROBLEM_RESPONSES[503],
    },
)
async def report_page(version: VersionParam, dataplane: DataPlaneDep) -> FileResponse:
    """A version's training report: learning curves, confusion matrix, worst images, settings, data."""
    return FileResponse(
        report_file(dataplane.model(version=version).model, None),
        media_type="text/html",
        headers=REPORT_HEADERS,
    )


@router.get(
    "/model/report/{version}/{name}",
    summary="A figure of a training report",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/png": {"example": "(the PNG of learning_curves.png)"}}},
        404: NOT_FOUND,
        503: PROBLEM_RESPONSES[503],
    },
)
async def report_figure(version: VersionParam, name: str, dataplane: DataPlaneDep) -> FileResponse:
    """One file a version's report page shows, by the name the page uses."""
    return FileResponse(report_file(dataplane.model(version=version).model, name), headers=REPORT_HEADERS)
