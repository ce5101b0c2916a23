# The one task runner: README, .ci/run and GitHub Actions call these targets only.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_PORT ?= 4200
DEMO_POOL := local-process
# The embedded default: a local server on 127.0.0.1, its state and the flow storage
# kept in .local/ (ignored by git), and a process-type pool since no Docker is needed.
DEMO_ENV := PREFECT_API_URL=http://127.0.0.1:$(DEMO_PORT)/api \
	FLOWS_WORK_POOL=$(DEMO_POOL) FLOWS_WORK_POOL_TYPE=process \
	FLOWS_STORAGE_ROOT=$(CURDIR)/.local/flow-storage FLOWS_OUTPUT_DIR=$(CURDIR)/.local/output
LINTED := flows tools bench

.PHONY: venv demo server stop setup test lint format bench deploy-all delete-branch clean

venv: $(VENV)/.installed

$(VENV)/.installed: image/requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check \
		-r image/requirements.txt -r requirements-dev.txt
	touch $@

server: venv
	$(PY) tools/local_prefect.py start --port $(DEMO_PORT)

demo: server
	mkdir -p .local
	$(DEMO_ENV) $(PY) flows/util.py setup --no-prompt
	$(DEMO_ENV) $(PY) flows/example_flow.py deploy | tee .local/deploy.out
	$(DEMO_ENV) $(PY) tools/local_prefect.py run-deployment --port $(DEMO_PORT) \
		--pool $(DEMO_POOL) --param env=dev "$$(sed -n '1s/^Deployed \(.*\) as .*/\1/p' .local/deploy.out)"
	@echo "The server stays up for the UI at http://127.0.0.1:$(DEMO_PORT); 'make stop' ends it."

stop:
	$(PY) tools/local_prefect.py stop

# The Prefect workspace in force (PREFECT_API_URL or the active profile), e.g.
# make setup SETUP_ARGS="--database example --sftp example"
setup: venv
	$(PY) flows/util.py setup $(SETUP_ARGS)

lint: venv
	$(PY) -m black --check $(LINTED)
	$(PY) -m pylint --fail-under=8.5 $(LINTED)
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/hadolint image/Dockerfile
	$(VENV)/bin/deptry flows

test: lint
	$(PY) -m pytest

deploy-all: venv
	$(PY) flows/util.py deploy-all $(if $(DOCKER_LABEL),--docker-label $(DOCKER_LABEL))

delete-branch: venv
	$(PY) flows/util.py delete-branch "$(BRANCH)"

bench: venv
	$(PY) bench/etl.py --rows 2000000
	$(PY) bench/concurrency.py
	$(PY) bench/storage.py

format: venv
	$(PY) -m black $(LINTED)

clean: stop
	rm -rf .local $(VENV)
