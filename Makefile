# datastream: `make run` to try it, `make test` to check everything.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# One stamp per requirement set, named by a hash of its files: `make run` needs only the runtime
# (requirements.txt), `make test` and the checks the development toolchain too (requirements-dev.txt,
# which includes requirements.txt, so installing it also satisfies the runtime stamp).
RUN_STAMP := $(VENV)/.installed-run-$(shell cat requirements.txt | md5sum | cut -c1-12)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat requirements.txt requirements-dev.txt | md5sum | cut -c1-12)
# `make run-stores` also needs moto's S3 server, pinned once, in requirements-dev.txt.
MOTO_PIN := $(shell grep '^moto' requirements-dev.txt)
PROTO_OUT := protos

.PHONY: install install-run run run-stores serve migrate bootstrap protos lint format typecheck migrations-check check test test-production test-fast bench clean

# Runtime and development requirements.
install: $(DEV_STAMP)

# Runtime requirements only: what `make run` needs.
install-run: $(RUN_STAMP)

$(RUN_STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-run-*
	@touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*
	@touch $@ $(RUN_STAMP)

migrate: install-run
	$(BIN)/python manage.py migrate --noinput -v 0

bootstrap: migrate
	$(BIN)/python manage.py bootstrap

# One process: HTTP (admin, REST) on 127.0.0.1:$${HTTP_PORT:-8000}, gRPC on 127.0.0.1:$${GRPC_PORT:-50051}.
run: bootstrap
	$(BIN)/python manage.py serve

# The same, plus a git repository and an S3 bucket mounted beside the settings.
run-stores: install-run
	$(BIN)/python -m pip install --quiet "$(MOTO_PIN)"
	$(BIN)/python examples/stores_demo.py

protos: install
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. protos/datastream.proto
	@# The client package's own copy of the messages, from the same file under the same name.
	tmp=$$(mktemp -d) && $(BIN)/python -m grpc_tools.protoc -I. --python_out=$$tmp --pyi_out=$$tmp protos/datastream.proto \
	  && mv $$tmp/protos/datastream_pb2.py $$tmp/protos/datastream_pb2.pyi datastream_client/_proto/ && rm -rf $$tmp

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy

migrations-check: install
	$(BIN)/python manage.py makemigrations --check --dry-run

check: lint typecheck migrations-check

# The whole suite on both profiles: embedded (SQLite, in-memory layer), then
# production (a PostgreSQL and a Redis started for the run, stopped after).
test: check
	$(BIN)/python -m tests.profile embedded
	$(BIN)/python -m tests.profile production

test-production: install
	$(BIN)/python -m tests.profile production -q

test-fast: install
	$(BIN)/python -m pytest -x -q

bench: install
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
