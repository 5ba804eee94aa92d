# One entry point for the study. `make book` sets up (if needed), runs the
# offline study and builds the book; `make test` sets up (if needed) and tests.
# Setup is idempotent: stamps make a second run skip it in seconds.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
WORK   ?= $(or $(SEMALIGN_WORKDIR),_work)
PROFILE ?= offline
MATHJAX_VERSION := 3.2.2

BIN := $(VENV)/bin
STAMP := $(VENV)/.semalign-installed
MATHJAX := $(WORK)/vendor/mathjax/.installed

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup book study publish test test-fast lock clean clean-all doctor

setup: $(STAMP) $(MATHJAX)

$(STAMP): requirements-lock.txt requirements-assets.txt pyproject.toml
	@echo "== setting up $(VENV) (python: $(PYTHON))"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" "setuptools>=64"
	$(BIN)/python -m pip install --quiet -r requirements-lock.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-assets.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'torch {v} installed; 2.13.0 (CPU) is required')"
	! $(BIN)/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torchvision') is None)" || { echo "torchvision is installed in $(VENV); it breaks transformers on CPU torch: remove it"; exit 1; }
	touch $@

# MathJax 3 from the npm registry, so pages render math with no CDN request.
$(MATHJAX):
	@echo "== vendoring MathJax $(MATHJAX_VERSION) from npm"
	rm -rf $(WORK)/vendor/mathjax.tmp && mkdir -p $(WORK)/vendor/mathjax.tmp
	cd $(WORK)/vendor/mathjax.tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null \
	  && tar xzf mathjax-$(MATHJAX_VERSION).tgz package/es5/tex-mml-chtml.js package/es5/output/chtml/fonts/woff-v2
	rm -rf $(WORK)/vendor/mathjax && mv $(WORK)/vendor/mathjax.tmp/package $(WORK)/vendor/mathjax && rm -rf $(WORK)/vendor/mathjax.tmp
	touch $@

study: setup
	$(BIN)/semalign run all --profile $(PROFILE)

book: study
	$(BIN)/semalign book --profile $(PROFILE)

# Publish the built book, Jupyter Book's way: ghp-import commits the HTML to the
# gh-pages branch of this repository and pushes it to REMOTE. `semalign book`
# first brings stale summaries up to date (or refuses a stale study), so what
# is published is one consistent set of runs. Build it first (make book).
REMOTE ?= origin
publish: setup
	$(BIN)/semalign book --profile $(PROFILE)
	$(BIN)/ghp-import --no-jekyll --push --force --remote $(REMOTE) --branch gh-pages \
	  --message "book ($(PROFILE) profile) from $$(git rev-parse --short HEAD 2>/dev/null || echo an unversioned tree)" \
	  $(WORK)/book/$(PROFILE)/_build/html

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

doctor: setup
	$(BIN)/semalign doctor

# Re-resolve the lock from requirements.txt in a scratch environment.
lock:
	rm -rf _work/lock-venv && $(PYTHON) -m venv _work/lock-venv
	_work/lock-venv/bin/pip install --quiet --upgrade "pip>=24" && _work/lock-venv/bin/pip install --quiet -r requirements.txt
	_work/lock-venv/bin/pip freeze --exclude-editable | sed 's/+cpu$$//' > requirements-lock.txt
	rm -rf _work/lock-venv

clean:
	rm -rf $(WORK)/executed $(WORK)/results $(WORK)/book

clean-all:
	rm -rf $(VENV) $(WORK)
