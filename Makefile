# Every target works on a fresh machine with only Python 3.11: the virtual environment is made on demand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data/demo
MODEL_BASE_PATH ?= models
MODEL_NAME ?= inception_v2
# Debian's docker.io CLI (20.10) builds with its built-in BuildKit; a newer CLI needs the buildx plugin.
DOCKER ?= $(shell test -x /usr/bin/docker && echo /usr/bin/docker || echo docker)

.PHONY: help install install-peers run test test-image image fleet fleet-down lint audit format demo-data train demo-model bench clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed  ## Create .venv with the locked dependencies

run: demo-model  ## Start the service on 127.0.0.1:8000, or HOST and PORT (trains the demo model first if models/ has none)
	@echo "Try:  curl -F file=@$$(ls $(DATA_DIR)/circle/* 2>/dev/null | head -n 1 || echo your-image.jpg) http://$${HOST:-127.0.0.1}:$${PORT:-8000}/predict"
	MODEL_BASE_PATH=$(MODEL_BASE_PATH) MODEL_NAME=$(MODEL_NAME) $(PY) -m app

test: $(VENV)/.installed  ## Run the test suite
	$(PY) -m pytest

test-image: $(VENV)/.installed  ## Build the images and test them on Docker, Compose and swarm for real (minutes)
	DOCKER=$(DOCKER) $(PY) -m pytest -m image -rP --timeout 3600 tests/deploy

image:  ## Build the runtime and demo images, making the base image from Debian's packages if needed
	DOCKER=$(DOCKER) deploy/docker/build-images.sh runtime demo

# IMAGE=, MODELS=, FLEET_PORT=...: deploy/swarm/fleet.sh lists them; docs/deployment.md tells the story.
fleet:  ## Serve 3 replicas of the demo image behind HAProxy on 127.0.0.1:8080 (Docker swarm)
	DOCKER=$(DOCKER) deploy/swarm/fleet.sh up

fleet-down:  ## Remove the fleet (the model volume and the swarm are kept)
	DOCKER=$(DOCKER) deploy/swarm/fleet.sh down

lint: audit  ## ruff, hadolint, compose and Kubernetes schema checks, promtool on the alert rules, pip-audit
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile deploy/swarm/haproxy/Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml deploy/swarm/stack.yml
	$(VENV)/bin/kubernetes-validate --strict --kubernetes-version 1.29.0 deploy/k8s/deployment.yaml deploy/k8s/service.yaml deploy/k8s/hpa.yaml deploy/k8s/pdb.yaml
	$(VENV)/bin/kubernetes-validate --strict --kubernetes-version 1.29.0 deploy/k8s/training/service.yaml deploy/k8s/training/job.yaml deploy/k8s/training/pvc.yaml
	cd deploy/prometheus && promtool check rules rules.yml && promtool check config prometheus.yml && promtool test rules rules_test.yml

# pip-audit asks PyPI's JSON API for each pinned version's advisories. Where that cannot be reached
# (this project's build machines reach only a package mirror), it says so and skips rather than fail.
ADVISORIES ?= https://pypi.org/pypi/pip/24.0/json
audit: $(VENV)/.installed  ## Known vulnerabilities in the locked dependencies (pip-audit)
	@if $(PY) -c "import urllib.request as u; u.urlopen('$(ADVISORIES)', timeout=15)" 2>/dev/null; then \
		$(VENV)/bin/pip-audit --strict --disable-pip --no-deps -r constraints.txt --progress-spinner off; \
	else \
		echo "pip-audit SKIPPED: the advisory database ($(ADVISORIES)) cannot be reached from here"; \
	fi

format: $(VENV)/.installed  ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo-data: $(VENV)/.installed  ## Generate the synthetic shapes dataset into data/demo
	@test -d $(DATA_DIR) || $(PY) -m training make-demo-data --out $(DATA_DIR)

train: demo-data  ## Train on DATA_DIR (default: the demo data) and export the next model version
	$(PY) -m training train --data-dir $(DATA_DIR) --model-base-path $(MODEL_BASE_PATH) --model-name $(MODEL_NAME)

demo-model: $(VENV)/.installed  ## Train the demo model unless a version already exists
	@if ls -d $(MODEL_BASE_PATH)/$(MODEL_NAME)/[0-9]* >/dev/null 2>&1; then \
		echo "Using the existing model in $(MODEL_BASE_PATH)/$(MODEL_NAME)"; \
	else \
		$(MAKE) --no-print-directory train; \
	fi

$(VENV)/.peers-installed: $(VENV)/.installed constraints-peers.txt
	$(PY) -m pip install --quiet -c constraints-peers.txt -e ".[bench-peers]"
	touch $@

install-peers: $(VENV)/.peers-installed  ## Add the benchmark's peers (BentoML) to .venv

# BENCH_ARGS, e.g. "--peers none" or "--quick": see `.venv/bin/python -m benchmarks --help`.
bench: demo-model  ## Run the benchmark suite with the installed peers on the demo model (trained first if none) and the notebook's network (writes docs/performance.md)
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:  ## Remove the virtual environment, generated data and caches
	rm -rf $(VENV) data checkpoints .pytest_cache .ruff_cache
