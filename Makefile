# The torch pair is pinned here, in one place, so installs reuse the wheels a machine already
# has; pyproject.toml keeps ordinary lower bounds so tl installs anywhere.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tl-installed

.PHONY: install quickstart test tutorial ui server bench bench-answer clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_PINS) -e '.[test,parallel,ray,slurm,team]'
	$(BIN)/python -c "import torch, torchvision, timm, hydra, mlflow, tl"
	touch $(STAMP)

quickstart: install
	$(BIN)/python -m tl.train experiment=quickstart

test: install
	$(BIN)/python -m pytest -q

tutorial: install
	$(BIN)/python -m tl.train experiment=tutorial

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --host 127.0.0.1 --port 5000

# The team's MLflow server from conf/server/team.yaml (docs/clusters-and-server.md, "A team MLflow server"), e.g.
#   MLFLOW_AUTH_ADMIN_PASSWORD=... make server ARGS="port=5001"
server: install
	$(BIN)/python -m tl server $(ARGS)

clean:
	rm -rf multirun outputs mlruns

bench: install
	$(BIN)/python -m tl.bench

# tl answer against the full grid it races over (docs/answer.md), e.g. make bench-answer ARGS="--epochs 4"
bench-answer: install
	$(BIN)/python -m tl.bench.answer_grid $(ARGS)
