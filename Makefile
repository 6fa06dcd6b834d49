# kakusan — set-up, demo and tests. Override e.g. `make demo TORCH_SPEC="torch==2.13.0"` or PYTHON=python3.11.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO := out/demo

.PHONY: setup demo demo-train test test-fast bench bench-peers

$(BIN)/kakusan: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned, so that no dependency pulls a multi-GB CUDA build
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test,sd]"
	touch $@

setup: $(BIN)/kakusan

# From the shipped models, in under two minutes on a CPU: a class-conditional sample grid and a one-page HTML report.
demo: setup
	$(BIN)/kakusan report mnist-s --out $(DEMO)/report-$$(date +%Y%m%d-%H%M%S) --n 150

# Train a small class-conditional MNIST model from scratch for a few minutes, then draw a sample grid.
demo-train: setup
	@if [ -f $(DEMO)/run/checkpoint/train_state.json ]; then \
		echo "reusing $(DEMO)/run"; \
	else \
		$(BIN)/kakusan train --data mnist --preset xs --kimg 12 --sample-kimg 12 --out $(DEMO)/run; \
	fi
	$(BIN)/kakusan sample $(DEMO)/run --out $(DEMO)/samples-$$(date +%Y%m%d-%H%M%S) --n 100 --nfe 35

# Two workers of one thread each (the suite's time goes largely into starting processes and loading models, which
# overlap); --dist loadfile keeps a file in one worker, so its module fixtures run once.
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile

# The same without the tests marked @pytest.mark.slow (each over ~3 s): under a minute on 2 cores.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python bench/throughput.py

# The peers of bench/time_to_quality.py in a venv of their own (they need torchvision, which does not import beside
# kakusan's CPU torch): torch 2.14.1 + torchvision 0.29.1 from this machine's disk (a CUDA build, ~5.5 GB; it runs on
# the CPU), k-diffusion and denoising-diffusion-pytorch. kakusan's own legs run from .venv.
PEERS ?= .venv-peers
$(PEERS)/installed:
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(PEERS)/bin/pip install -q k-diffusion denoising-diffusion-pytorch safetensors "setuptools<81"  # k-diffusion imports clip, which needs pkg_resources
	touch $@

bench-peers: setup $(PEERS)/installed
