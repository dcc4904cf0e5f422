# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# The virtualenv is built once; later runs reuse it unless pyproject.toml changes.
# pip installs without compiling every module to bytecode (--no-compile: 111 s instead of 187 s
# of installing in a clean clone; most of torch's and TensorFlow's modules are never imported);
# Python compiles what is imported, once, and the runs below keep that bytecode even where the
# environment says PYTHONDONTWRITEBYTECODE (without it every process would compile again).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
WORKDIR ?= runs/demo

.PHONY: install demo test test-lowest lint clean

install: $(STAMP)

NEW_VENV = test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml
	$(NEW_VENV)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[test]'
	touch $(STAMP)

# The tests also need the reference packages the weight converters are checked against,
# Apache Beam (preparation on Beam's DirectRunner) and the deployment tools (jax2onnx without
# its pins, which would downgrade orbax-checkpoint and add equinox). One pip run installs
# everything, the demo's packages too (a second run resolved them all again: 15 s).
$(TEST_STAMP): pyproject.toml
	$(NEW_VENV)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[test,torch,beam,deploy]'
	$(BIN)/python -m pip install --quiet --no-compile --no-deps 'jax2onnx>=0.17,<0.18'
	touch $(STAMP) $(TEST_STAMP)

demo: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/vjax demo --workdir=$(WORKDIR)

# Prints the 15 slowest tests and the whole command's wall time, installation included.
test:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory $(TEST_STAMP) && \
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n auto --dist worksteal --durations=15 tests; \
	status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall time (install and tests)"; \
	exit $$status

# The suite on the lowest versions pyproject.toml allows: every direct dependency at its
# minimum (uv's --resolution lowest-direct), the rest at their newest; the torch, beam and
# deploy extras are left out, so their tests skip. Run it when a lower bound changes (not in CI).
LOWEST := .venv-lowest
test-lowest:
	rm -rf $(LOWEST) && $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet uv
	$(LOWEST)/bin/uv pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[test]'
	PYTHONDONTWRITEBYTECODE= $(LOWEST)/bin/python -m pytest -q -n auto --dist worksteal --durations=15 tests

lint: $(STAMP)
	$(BIN)/ruff check vjax configs tests launch

clean:
	rm -rf $(VENV) $(LOWEST) runs
