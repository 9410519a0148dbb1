# The two commands a newcomer runs from a fresh clone (Python >= 3.11 is all it needs):
#   make demo   — set up .venv and run the end-to-end demo on the embedded defaults
#   make demo-drift — the retraining loop: cameras drift, the pipeline retrains (minutes)
#   make test   — set up .venv and run the whole test suite (ruff and mypy included); in
#                 PYTEST_WORKERS parallel processes when set (pytest-xdist; default 0: serially)
#   make images — the server and agent container images with podman (docs/containers.md)
#   make images-arm64 — the same for arm64 (under qemu-user-static on an x86 host)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgefleet-installed
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`; 0 (the default) runs the suite in one process. Tests that
# must not overlap are pinned to one worker each (tests/utils/xdist.py, docs/testing.md). Not yet
# the default: the closed capture file of the first 3-worker run is fixed, but one e2e test
# still fails under parallel load (docs/testing.md, "Full 3-worker runs").
PYTEST_WORKERS ?= 0
ifeq ($(PYTEST_WORKERS),0)
PYTEST_PARALLEL :=
else
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadgroup
endif
# The images' base; where no registry answers, a local debootstrap base is used instead.
IMAGE_BASE ?= docker.io/library/python:3.11-slim

.PHONY: demo demo-drift test lint bench images images-arm64 clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[agent,server,s3,convert,convert-tf,convert-torch,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgefleet demo

demo-drift: $(STAMP)
	$(BIN)/edgefleet demo --scenario drift

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	for f in bench/*_bench.py; do $(BIN)/python $$f || exit 1; done

images: $(STAMP)
	$(BIN)/python -m containers.build --base $(IMAGE_BASE)

images-arm64: $(STAMP)
	$(BIN)/python -m containers.build --arch arm64 --base $(IMAGE_BASE)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
