# The one task runner: README, the guide, .ci/run and GitHub Actions call these targets
# only. The template's file: an upgrade replaces it (flows/toolkit/template-paths.txt).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
# PREFECT=3: the same targets in a venv of their own on Prefect 3
# (requirements-prefect3.lock), beside the Prefect 2.20 one.
PREFECT ?= 2
VENV := $(if $(filter 3,$(PREFECT)),.venv-prefect3,.venv)
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# uv installs the requirements in seconds where pip takes a minute and a half; pip
# itself only brings uv into the new venv. uv writes no bytecode unless asked, and
# where PYTHONDONTWRITEBYTECODE=1 is set (CI images, many laptops' Docker shells)
# Python never writes it either: then every process, each test's subprocess and
# worker included, compiles Prefect again (`import prefect` 10.3 s against 5.7 s).
# So the venv is compiled once, at install.
UV_VERSION := 0.13.9
DEMO_PORT ?= 4200
# The embedded default: a local server on 127.0.0.1, its state and the flow storage
# kept in .local/ (ignored by git), and a process-type pool since no Docker is needed.
# WORKER=docker: a Docker pool instead, whose runs start in containers of the image
# built from image/ (tools/docker_images.py: a stand-in base where Prefect's cannot be
# pulled); it needs a running Docker daemon.
WORKER ?= process
DEMO_POOL := local-$(WORKER)
DEMO_ENV := PREFECT_API_URL=http://127.0.0.1:$(DEMO_PORT)/api \
	FLOWS_WORK_POOL=$(DEMO_POOL) FLOWS_WORK_POOL_TYPE=$(WORKER) \
	FLOWS_STORAGE_ROOT=$(CURDIR)/.local/flow-storage FLOWS_OUTPUT_DIR=$(CURDIR)/.local/output
# `make demo` deploys and runs every flow file of flows/ (any file that ends with
# util.run_flow_command_line_interface), one after the other, or DEMO_FLOW=flows/x.py
# alone; the image of WORKER=docker is built from the first one's plan.
DEMO_FLOWS := $(filter-out flows/util.py,$(shell grep -l '^ *util\.run_flow_command_line_interface' flows/*.py))
DEMO_FLOW ?= $(DEMO_FLOWS)
# The team's Python is flows/ without the toolkit; the template's is the toolkit,
# util.py, tools/ and bench/, linted by test-template.
TOOLKIT := flows/toolkit
TEMPLATE_LINTED := $(TOOLKIT) flows/util.py tools bench
# pytest-xdist workers for the toolkit's suite: on 2 cores, 3 keep both busy while
# tests wait on servers and subprocesses (measured: 312 s with 2, 280 s with 3).
TEMPLATE_WORKERS ?= 3

.PHONY: venv lock demo server stop setup test lint test-template test-faults test-image \
	lint-template format reference bench deploy-all delete-branch upgrade release clean

# `make venv` installs exactly the developer lock (requirements-dev.lock), hashes
# checked; KUBERNETES=1 the lock with the Kubernetes pool type
# (requirements-kubernetes.lock): where setup and deploy run for a Kubernetes pool, and
# for the toolkit's own tests. uv's `pip sync` removes whatever the lock does not hold,
# so one venv moves between the two; it syncs again only when its lock changed.
# Nothing resolves here: `make lock` does that (tools/locks.py).
VENV_LOCK = $(if $(filter 3,$(PREFECT)),requirements-prefect3.lock,$(if $(KUBERNETES),requirements-kubernetes.lock,requirements-dev.lock))
venv: | $(UV)
	@$(PYTHON) tools/locks.py check
	@if [ "$$(cat $(VENV)/.synced 2>/dev/null)" != "$$(sha256sum $(VENV_LOCK))" ]; then \
		echo "$(UV) pip sync --require-hashes $(VENV_LOCK)"; \
		$(UV) pip sync --quiet --compile-bytecode --require-hashes --python $(PY) \
			$(VENV_LOCK) && sha256sum $(VENV_LOCK) > $(VENV)/.synced; \
	fi

# uv alone, pinned, in a new venv: what locks and syncs the rest.
$(UV):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The locks again after a requirements file changed, keeping every pin it can;
# UPGRADE=1 takes the newest releases the bounds allow (EXCLUDE_NEWER=YYYY-MM-DD: none
# published after that day). Prints each version that moved.
lock: | $(UV)
	$(PYTHON) tools/locks.py write --uv $(UV) $(if $(UPGRADE),--upgrade) \
		$(if $(EXCLUDE_NEWER),--exclude-newer $(EXCLUDE_NEWER))

server: venv
	$(PY) tools/local_prefect.py start --port $(DEMO_PORT)

demo: server
	mkdir -p .local
	$(DEMO_ENV) $(PY) flows/util.py setup --no-prompt
ifeq ($(WORKER),docker)
	$(DEMO_ENV) $(PY) $(firstword $(DEMO_FLOW)) deploy --dry-run > .local/plan.json
	$(PY) tools/docker_images.py build --tag-of-plan .local/plan.json
endif
	set -e; for flow_file in $(DEMO_FLOW); do \
		$(DEMO_ENV) $(PY) $$flow_file deploy | tee .local/deploy.out; \
		$(DEMO_ENV) $(PY) tools/local_prefect.py run-deployment --port $(DEMO_PORT) \
			--pool $(DEMO_POOL) --param env=dev "$$(sed -n '1s/^Deployed \(.*\) as .*/\1/p' .local/deploy.out)"; \
	done
	@echo "The server stays up for the UI at http://127.0.0.1:$(DEMO_PORT); 'make stop' ends it."

stop:
	$(PY) tools/local_prefect.py stop

# The Prefect workspace in force (PREFECT_API_URL or the active profile), e.g.
# make setup SETUP_ARGS="--database example --sftp example"
setup: venv
	$(PY) flows/util.py setup $(SETUP_ARGS)

# A team repository's checks, fast: the team's code, the files every deployment needs.
lint: venv
	$(PY) -m black --check --extend-exclude '^/$(TOOLKIT)/' flows
	$(PY) -m pylint --jobs=2 --fail-under=8.5 --ignore-paths='^$(TOOLKIT)/.*$$' flows
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --no-progress --min-severity medium .github
	$(VENV)/bin/hadolint image/Dockerfile
	$(VENV)/bin/deptry flows

# The team's tests, and the toolkit's checks of every flow file and of the
# requirements (pytest.ini's testpaths).
test: lint
	$(PY) -m pytest

# The toolkit's real-server suite: PR checks run it when a template path changed.
lint-template: venv
	$(PY) -m black --check $(TEMPLATE_LINTED)
	$(PY) -m pylint --jobs=2 --fail-under=8.5 $(TEMPLATE_LINTED)
	PYTHONPATH=flows $(VENV)/bin/lint-imports --no-cache

# The toolkit's tests include the Kubernetes pool's: its venv is the Kubernetes lock's.
test-template: KUBERNETES = 1
# The tests marked prefect3 run the toolkit on Prefect 3 too, from its own venv.
test-template: lint-template
	$(MAKE) --no-print-directory venv PREFECT=3
	$(PY) -m pytest -n $(TEMPLATE_WORKERS) -m "not faults and not docker" $(TOOLKIT)/tests

# The fault tests (a server restarted mid-run): on their own, so that a restart never
# lands on another test's server and their minutes stay out of test-template's.
test-faults: venv
	$(PY) bench/faults.py

# The runtime image built from image/ and run (the tests marked docker): every module
# of flows/ imports in it as its user, its packages are compiled, and the toolkit's
# fixture flow runs in its containers through Docker workers. The tests start a
# Docker daemon when one is installed but not running; -rP prints the build's time
# and size and the workers' lines.
test-image: venv
	$(PY) -m pytest -m docker -rP $(TOOLKIT)/tests

deploy-all: venv
	$(PY) flows/util.py deploy-all $(if $(DOCKER_LABEL),--docker-label $(DOCKER_LABEL))

delete-branch: venv
	$(PY) flows/util.py delete-branch "$(BRANCH)"

# make upgrade [FROM=<git URL or path>] [TO=vX.Y.Z] [FORCE=1]
upgrade: venv
	$(PY) flows/util.py upgrade $(if $(FROM),--from "$(FROM)") $(if $(TO),--to "$(TO)") \
		$(if $(FORCE),--force)

# In the template repository: make release VERSION=vX.Y.Z
release: venv
	$(PY) flows/util.py release "$(VERSION)"

bench: venv
	$(PY) bench/etl.py --rows 2000000
	$(PY) bench/load.py --rows 2000000
	$(PY) bench/bad_input.py
	$(PY) bench/s3_delivery.py --rows 2700000
	$(PY) bench/concurrency.py
	$(PY) bench/storage.py
	$(PY) bench/deploy_all.py
	$(PY) bench/deploy.py
	$(PY) bench/imports.py
	$(PY) bench/artifacts.py
	$(PY) bench/faults.py

format: venv
	$(PY) -m black flows tools bench

# flows/toolkit/docs/reference.md, written again from the code (settings, --help).
reference: venv
	$(PY) tools/reference.py --write

clean: stop
	rm -rf .local $(VENV)
