# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# torch and torchvision at the versions the tests ran with (README, Quick start), from
# wherever pip looks (its index or $PIP_FIND_LINKS); everything else from pyproject.toml.
# `make setup TORCH_PINS="torch torchvision"` takes the newest instead.
TORCH_PINS = torch==2.14.1 torchvision==0.29.1
DATA_DIR ?= $(if $(HPSEARCH_DATA),$(HPSEARCH_DATA),data)

.PHONY: setup setup-dev demo dashboard test lint bench bench-ray

export PIP_ROOT_USER_ACTION = ignore
export PIP_DISABLE_PIP_VERSION_CHECK = 1

setup:
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e ".[ray,postgres]"

setup-dev:
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e ".[ray,postgres,dev]"
	bash scripts/install-system-deps.sh

# A short search end to end: uses the course data if $(DATA_DIR)/euro exists, else writes a
# synthetic stand-in there (and says so).
demo: setup
	@test -d $(DATA_DIR)/euro || $(PYTHON) -m objectives.euro_data --synthetic $(DATA_DIR)
	$(PYTHON) -m search.run --study mlp_demo --trials 8 --data-dir $(DATA_DIR) --storage sqlite:///studies.db

# The dashboard on the demo's storage (http://127.0.0.1:8080/dashboard/).
dashboard:
	$(PYTHON) -m search.dashboard --storage sqlite:///studies.db

test: setup-dev
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check .

bench:
	$(PYTHON) benchmarks/mlp_loop.py

# Ray backend vs local backend vs Ray's plain OptunaSearch+ASHA (overhead per trial, wall time).
bench-ray:
	$(PYTHON) benchmarks/ray_overhead.py --data-dir $(DATA_DIR)
