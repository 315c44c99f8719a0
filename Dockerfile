# syntax=docker/dockerfile:1
#
# Targets (docs/deployment.md has the whole story):
#   runtime  the service; the model repository is mounted at /models (what docker-compose.yml uses)
#   trainer  trains the demo model into /models (mount ./models there to keep it)
#   demo     runtime with the demo model baked in at /models: self-contained, for Kubernetes (default)
#
#   docker build --target runtime -t inception-v2-service .
#   docker run --rm -p 8000:8000 -v "$PWD/models:/models:ro" inception-v2-service
#
# GPU build: the same image with TensorFlow's CUDA libraries (the host needs only the NVIDIA driver
# and the NVIDIA Container Toolkit):
#   docker build --target runtime --build-arg TF_PACKAGE="tensorflow[and-cuda]" -t inception-v2-service:gpu .
#   docker run --rm --gpus all -p 8000:8000 -v "$PWD/models:/models:ro" inception-v2-service:gpu
#
# Stopping: on SIGTERM the service fails /readyz and drains the requests it has admitted for at
# most SHUTDOWN_TIMEOUT_S (30 s). `docker stop` waits only 10 s before SIGKILL: use `docker stop -t 60`;
# docker-compose.yml (stop_grace_period) and deploy/k8s (terminationGracePeriodSeconds) allow 60 s.

# Builder and runtime share this base, so the virtual environment is built by the Python that runs it.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/srv \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MODEL_BASE_PATH=/models \
    MODEL_NAME=inception_v2
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app
WORKDIR /srv

# Locked runtime dependencies, in a layer that changes only with pyproject.toml or constraints.txt.
# The list is [project.dependencies] (no dev extras); TF_PACKAGE adds TensorFlow's extras, e.g. CUDA,
# whose libraries constraints-cuda.txt pins.
FROM base AS deps
ARG TF_PACKAGE=tensorflow
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY pyproject.toml constraints.txt deploy/docker/constraints-cuda.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > requirements.txt \
    && pip install -c constraints.txt -c constraints-cuda.txt -r requirements.txt "${TF_PACKAGE}"

# Trains the demo model into /models; `docker compose --profile train run train` runs it.
# The code is copied, not pip-installed, so editing app/ or README.md never invalidates training.
FROM deps AS trainer
COPY imaging ./imaging
COPY training ./training
COPY --chmod=755 deploy/docker/train-demo-model.sh /usr/local/bin/train-demo-model
RUN install -d -o app -g app /models
USER 10001:10001
CMD ["train-demo-model"]

FROM trainer AS demo-model
RUN train-demo-model

FROM base AS runtime
COPY --from=deps /opt/venv /opt/venv
COPY imaging ./imaging
COPY app ./app
ENV HOST=0.0.0.0 \
    PORT=8000
USER 10001:10001
EXPOSE 8000
# Loading and warming up the model takes seconds to a minute on a CPU; failures during the start
# period do not count, and the first success ends it (start-interval needs Docker Engine 25+).
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --start-interval=2s --retries=3 \
    CMD ["python", "-m", "app.healthcheck"]
STOPSIGNAL SIGTERM
# One server process: each worker would load its own copy of the model; scale with containers.
CMD ["python", "-m", "app"]

FROM runtime AS demo
COPY --from=demo-model /models /models
