# Two entry points (see README): `make quickstart` and `make test`.
# The virtual environment lives in .venv and is created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install azurite quickstart test clean-runs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[dev,download,spark]"
	@test -n "$$JAVA_HOME" || command -v java >/dev/null || echo "note: no Java found; data_prep --engine spark \
	(and its tests) need Java 17+: sudo apt-get install -y openjdk-17-jre-headless (macOS: brew install openjdk@17)"
	touch $(STAMP)

install: $(STAMP)

# Azurite, the local Azure Blob server of tests/stores (npm), installed by `make test` only.
# Without npm the Azure tests skip, saying so; nothing else needs it.
AZURITE := .tools/node_modules/azurite/dist/src/blob/main.js
azurite:
	@if [ -f $(AZURITE) ]; then :; \
	elif command -v npm >/dev/null 2>&1; then npm install --prefix .tools --no-audit --no-fund azurite@3 || echo "npm install azurite failed: the Azure store tests will skip"; \
	else echo "npm not found: the Azure store tests will skip (install node, then make azurite)"; fi

# The main job on the embedded default: synthetic data, a small VLMo trained on CPU
# (a few minutes), then retrieval recall on the synthetic test split next to chance,
# and the loss/metric curves of the run as runs/quickstart/curves.png.
quickstart: install
	$(BIN)/python data_prep/make_synthetic.py --out data/synthetic --overwrite
	$(BIN)/composer -n 1 train.py yamls/quickstart.yaml
	$(BIN)/python eval.py yamls/quickstart.yaml --rerank-k 8 --output runs/quickstart/metrics.json
	$(BIN)/python -m vlmo_composer.training.curves runs/quickstart/checkpoints/metrics.jsonl runs/quickstart/curves.png

test: install azurite
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

clean-runs:
	rm -rf runs data/synthetic
