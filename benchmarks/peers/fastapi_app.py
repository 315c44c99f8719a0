"""The tutorial way: a FastAPI route that calls the model once per request, under uvicorn, one process.

A sync route, as FastAPI's tutorials write it: FastAPI runs it in its thread pool, so decoding and
the model overlap across requests, but every request is its own model call (no batching).
"""

import argparse
from contextlib import asynccontextmanager
from typing import Annotated

import uvicorn
from fastapi import FastAPI, File, Request, UploadFile

from benchmarks.peers.model import PeerModel


@asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.model = PeerModel()
    yield


app = FastAPI(lifespan=lifespan)


@app.post("/predict")
def predict(request: Request, file: Annotated[UploadFile, File()]) -> dict:
    model: PeerModel = request.app.state.model
    (predictions,) = model.classify([model.prepare(file.file)])
    return {"filename": file.filename, "predictions": predictions}


@app.get("/readyz")
def readyz() -> dict:
    return {"status": "ready"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
