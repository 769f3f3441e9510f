# surreal-farm: `make setup`, `make test`, `make demo`.
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup system-deps test lint demo clean lock

# The farm itself: all that `make demo` needs (no system packages, no sudo).
setup: $(VENV)/.installed

# Debian packages only the tests use: headless Chromium (the dashboard test), docker-compose (the compose file
# checks), docker.io and mmdebstrap (the cluster test runs a Docker engine of its own and makes its base images
# from Debian's packages), faketime with gcc and libc6-dev (a worker whose clock is off; the test compiles a
# small fix for faketime's sleeps), socat (the SeaweedFS container's S3-only forwarder), prometheus (promtool
# and the server, for the monitoring profile's tests), slurm-wlm and munge (a one-node Slurm for the sbatch
# script's test), libegl1, libegl-mesa0 and libgl1-mesa-dri (Mesa's software OpenGL, llvmpipe: Blender renders
# EEVEE headless with it, so the EEVEE tests run without a GPU).
# Installed only when missing (the daemons live in /usr/sbin, which a user's PATH may lack), quietly, as root
# or with `sudo -n`; where neither can, one sentence says what is missing and how to install it.
TEST_PACKAGES = chromium docker-compose docker.io mmdebstrap faketime gcc libc6-dev socat prometheus slurm-wlm munge libegl1 libegl-mesa0 libgl1-mesa-dri
SUDO = $(if $(filter 0,$(shell id -u)),,sudo -n)
system-deps:
	@missing=; for package in $(TEST_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	test -z "$$missing" || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } 2>/dev/null || \
	  { echo "make test needs Debian's$$missing, which apt-get could not install here (it needs root or password-less sudo): run sudo apt-get install$$missing" >&2; exit 1; }

# Every dependency of every extra at the version and sha256 of requirements.lock (torch is the CPU build that
# the machine keeps on disk; bpy needs Python 3.11 and numpy < 2), then the farm itself, editable, built with the
# setuptools just installed.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The locks from pyproject.toml with pip-tools; run `make lock` after changing the dependencies.
# requirements.lock: every extra (make setup); docker/app.lock and docker/worker.lock: what each image needs.
LOCK = $(BIN)/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
  --no-emit-find-links -c lock-constraints.txt
lock: setup
	$(LOCK) --all-extras -o requirements.lock pyproject.toml
	$(LOCK) --extra flower -o docker/app.lock pyproject.toml
	$(LOCK) --extra torch --extra render -o docker/worker.lock pyproject.toml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: system-deps lint
	$(BIN)/pytest -q -ra

DEMO_DIR ?= farm-demo
demo: setup
	$(BIN)/farm demo --folder $(DEMO_DIR)

clean:
	rm -rf $(VENV) farm.db farm-broker.db farm-output farm-demo .pytest_cache
