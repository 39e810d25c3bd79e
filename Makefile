# dystress: the two commands a newcomer needs are `make book` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export DYSTRESS_PROFILE ?= quick
export DYSTRESS_DATA ?= $(CURDIR)/data
export DYSTRESS_RUNS ?= $(CURDIR)/runs
# An offline CIFAR-10 copy beside the checkout (development and CI machines); elsewhere the library downloads.
OFFLINE_CIFAR10 ?= $(CURDIR)/../shared/data/make_cifar10.py

# `make book` runs the study's points side by side: one per CPU core (at most 8), each with one thread
# (on the 2-core development VM two quick runs of one thread train 2,459 pairs/s together, one run of
# two threads 2,189, and a run's evaluation and start-up use one core anyway: 30 runs took 16 minutes);
# one at a time on a machine with an NVIDIA GPU. Set
# DYSTRESS_PARALLEL to override (runs made with another count live in other folders: CPU sums depend on
# the thread count).
BOOK_PARALLEL := $(shell $(PYTHON) -c "import os; print(1 if os.path.exists('/dev/nvidiactl') else max(1, min(8, os.cpu_count() or 1)))")

.PHONY: setup data book test lint clean-book

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

data: setup
	@if [ -f "$(DYSTRESS_DATA)/cifar-10-batches-py/test_batch" ]; then \
	  echo "CIFAR-10 found in $(DYSTRESS_DATA)"; \
	elif [ -f "$(OFFLINE_CIFAR10)" ]; then \
	  $(PY) "$(OFFLINE_CIFAR10)" "$(DYSTRESS_DATA)"; \
	else \
	  echo "Downloading CIFAR-10 into $(DYSTRESS_DATA) (once, before any run)"; \
	  $(VENV)/bin/dystress data prepare --profile smoke --set "data_root=$(DYSTRESS_DATA)"; \
	fi

book: data
	DYSTRESS_PARALLEL=$${DYSTRESS_PARALLEL:-$(BOOK_PARALLEL)} $(VENV)/bin/jupyter-book build book/ -W -n --keep-going
	@echo "Book: $(CURDIR)/_build/html/index.html (profile $(DYSTRESS_PROFILE))"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: data lint
	$(VENV)/bin/pytest -q

clean-book:
	rm -rf _build
