"""GET /healthz (liveness) and GET /readyz (readiness)."""

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import DataPlaneDep
from app.api.problems import PROBLEM_RESPONSES

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The process is up (liveness) or ready for traffic (readiness)."""

    status: str = Field(examples=["ready"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> Health:
    """Liveness: 200 while the process serves HTTP."""
    return Health(status="alive")


@router.get("/readyz", summary="Readiness", responses={503: PROBLEM_RESPONSES[503]})
async def readyz(dataplane: DataPlaneDep) -> Health:
    """Readiness: 200 while a model version is loaded and warmed up; 503 before, and once shutdown begins."""
    dataplane.ready()
    return Health(status="ready")
