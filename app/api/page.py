"""GET /: a page to try the model in a browser, and the two files it loads from /static/.

The page is hand-written HTML, CSS and JavaScript in app/web/, served as they are: no build step
and nothing loaded from another origin (its Content-Security-Policy forbids it), so it works offline.
It uses only the public API: POST /predict for each image, GET /model for the model card.
"""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

WEB = Path(__file__).resolve().parents[1] / "web"
ASSETS = {"page.css": "text/css", "page.js": "text/javascript"}
HEADERS = {
    # Thumbnails are blob: URLs of the picked files; report plots come from this origin. No frame
    # may hold the page (clickjacking), and no <base> may redirect its relative URLs.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # revalidated: a new release's page never runs an old script
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    """The page: classify images by dropping or picking them; the model card below."""
    return FileResponse(WEB / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/static/{name}")
async def asset(name: str) -> FileResponse:
    """The page's stylesheet and script; anything else under /static/ is a 404."""
    if name not in ASSETS:
        raise HTTPException(404)
    return FileResponse(WEB / name, media_type=ASSETS[name], headers=HEADERS)
