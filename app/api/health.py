"""GET /healthz (liveness) and GET /readyz (readiness)."""

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.api.problems import PROBLEM_RESPONSES
from app.errors import ModelNotReady

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The process is up (liveness) or ready for traffic (readiness)."""

    status: str = Field(examples=["ready"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> Health:
    """Liveness: 200 while the process serves HTTP."""
    return Health(status="alive")


@router.get("/readyz", summary="Readiness", responses={503: PROBLEM_RESPONSES[503]})
async def readyz(request: Request) -> Health:
    """Readiness: 200 while a model version is loaded and warmed up; 503 before, and once shutdown begins."""
    if request.app.state.draining:
        raise ModelNotReady("The service is shutting down")
    if request.app.state.models is None:
        raise ModelNotReady("The model is not loaded yet")
    request.app.state.models.get()  # ModelNotReady while no version is available
    return Health(status="ready")
