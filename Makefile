# avzsl: `make demo` and `make test` each set everything up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test test-fast demo bench lint clean

setup: $(STAMP)

# Re-install only when the dependency list changes; an unchanged tree makes `setup` a no-op.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

# The inner loop: everything but the tests marked slow (under 2 minutes on 2 cores).
test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(BIN)/avzsl demo $(DEMO_ARGS)

bench: setup
	$(BIN)/python -m benchmarks.run_all

lint: setup
	$(BIN)/ruff check pipeline extractors model workflows tests benchmarks
	$(BIN)/ruff format --check pipeline extractors model workflows tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
