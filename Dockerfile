# Targets (docs/deployment.md has the whole story):
#   runtime  the service; the model repository is mounted at /models (what docker-compose.yml uses)
#   trainer  trains the demo model into /models (mount ./models there to keep it)
#   demo     runtime with the demo model baked in at /models: self-contained, for Kubernetes (default)
#
#   docker build --target runtime -t inception-v2-service:runtime .
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/models:/models:ro" inception-v2-service:runtime
#
# Built and run on Docker Engine 20.10 with BuildKit (DOCKER_BUILDKIT=1) and its built-in Dockerfile
# frontend: no `# syntax=` line, which would pull a frontend image. No registry reachable (air-gapped,
# or a TLS-inspecting proxy)? deploy/docker/build-images.sh (`make image`) makes the base image from
# Debian's packages and adds the proxy's CA certificate.
#
# GPU build: the same image with TensorFlow's CUDA libraries (the host needs only the NVIDIA driver
# and the NVIDIA Container Toolkit):
#   docker build --target runtime --build-arg TF_PACKAGE="tensorflow[and-cuda]" -t inception-v2-service:gpu .
#   docker run --rm --gpus all -p 127.0.0.1:8001:8000 -v "$PWD/models:/models:ro" inception-v2-service:gpu
#
# Stopping: on SIGTERM /readyz answers 503 at once while requests are still served for
# SHUTDOWN_DELAY_S (5 s: load balancers see it and move away), then admitted requests drain for at
# most SHUTDOWN_TIMEOUT_S (30 s). `docker stop` waits only 10 s before SIGKILL: use `docker stop -t 60`;
# docker-compose.yml (stop_grace_period) and deploy/k8s (terminationGracePeriodSeconds) allow 60 s.

# Builder and runtime share this base, so the virtual environment is built by the Python that runs it:
# any Debian-like image with Python 3.11, python3 -m venv, update-ca-certificates and useradd.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/srv \
    MODEL_BASE_PATH=/models \
    MODEL_NAME=inception_v2
# Extra CA certificates (e.g. a TLS-inspecting proxy's): deploy/docker/certs/*.crt, trusted by pip
# during the build and by the image's system store.
COPY deploy/docker/certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app
WORKDIR /srv

# The requirement lists from pyproject.toml, made in a stage of their own: the install layers below
# are rebuilt when a list changes, not when another part of pyproject.toml does. TensorFlow is
# TF_PACKAGE: the CPU-only wheel by default, "tensorflow[and-cuda]" for a GPU image.
FROM base AS requirements
ARG TF_PACKAGE=tensorflow-cpu
COPY pyproject.toml deploy/docker/requirements.py ./
RUN python3 requirements.py "${TF_PACKAGE}" /requirements

# Locked runtime dependencies ([project.dependencies], no extras), in a layer that changes only with
# that list or the locks (constraints-cuda.txt pins the CUDA libraries of a GPU build).
FROM base AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
COPY constraints.txt deploy/docker/constraints-cuda.txt deploy/docker/pip-install.sh ./
COPY --from=requirements /requirements/runtime.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv "$VIRTUAL_ENV" \
    && ./pip-install.sh runtime.txt

# Trains the demo model into /models; `docker compose --profile train run train` runs it.
# The code is copied, not pip-installed, so editing app/ or README.md never invalidates training.
FROM deps AS trainer
COPY --from=requirements /requirements/train.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    ./pip-install.sh train.txt
COPY imaging ./imaging
COPY training ./training
COPY --chmod=755 deploy/docker/train-demo-model.sh /usr/local/bin/train-demo-model
RUN install -d -o app -g app /models
USER 10001:10001
CMD ["train-demo-model"]

FROM trainer AS demo-model
# Fewer epochs build a rougher demo model faster (CI builds with 1); unset: the trainer's default.
ARG DEMO_EPOCHS=
RUN train-demo-model ${DEMO_EPOCHS:+--epochs "$DEMO_EPOCHS"}

FROM base AS runtime
COPY --from=deps /opt/venv /opt/venv
COPY imaging ./imaging
COPY app ./app
ENV HOST=0.0.0.0 \
    PORT=8000
USER 10001:10001
EXPOSE 8000
# Loading and warming up the model takes seconds to a minute on a CPU; failures during the start
# period do not count, and the first success ends it. (Docker 25+ could probe faster while starting
# with --start-interval, but older engines reject the whole build over it: docker-compose.yml sets it.)
HEALTHCHECK --interval=5s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-m", "app.healthcheck"]
STOPSIGNAL SIGTERM
# One server process: each worker would load its own copy of the model; scale with containers.
CMD ["python", "-m", "app"]

FROM runtime AS demo
COPY --from=demo-model /models /models
