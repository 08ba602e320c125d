# The two commands a newcomer needs are `make up` and `make test`; everything else is a
# step they call. Both install into .venv/ at the repo root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE_PREFIX := $(VENV)/node
BUF := $(NODE_PREFIX)/node_modules/.bin/buf
GEN := extproc/_gen
# The base root filesystem of local sandboxes that every test shares (built once, ~40 s).
ROOTFS_CACHE ?= $(or $(AGENTCUBE_E2B_ROOTFS_CACHE_DIR),$(CURDIR)/.cache/rootfs)

.PHONY: up test venv host-packages test-host-packages rootfs generate check-generate lint unit bench sdk-matrix sdk-matrix-lock

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# npm ci installs exactly the committed lock file (the JS SDK's own dependencies included).
$(NODE_PREFIX)/.installed: tests/js/package.json tests/js/package-lock.json
	mkdir -p $(NODE_PREFIX)
	cp tests/js/package.json tests/js/package-lock.json $(NODE_PREFIX)/
	cd $(NODE_PREFIX) && npm ci --silent --no-audit --no-fund
	touch $@

venv: $(VENV)/.installed $(NODE_PREFIX)/.installed

# The Debian packages sandbox isolation needs (packaging/debian-packages.txt): installed when
# run as root, else the apt-get line is printed and this fails.
host-packages:
	sh packaging/install-host-packages

# and for the tests: busybox-static is the image without Python (or libc) that the injected
# picod bundle is tested in (tests/picod_bundle, tests/lifecycle_k8s/test_templates.py), and
# bubblewrap runs it as a container would (tests/support/python_less.py); nghttp2-client's
# h2load loads the gateway (tests/e2e/test_up.py and the benchmarks)
test-host-packages:
	sh packaging/install-host-packages busybox-static bubblewrap nghttp2-client

# Building needs root, as sandbox isolation does; as another user the tests that need the
# base skip and say so. The code interpreter's data stack (numpy, pandas, ...; a layer of
# its own, extproc/lifecycle/data_stack.py) is built beside it, as any user.
rootfs: $(VENV)/.installed host-packages
	@if [ "$$(id -u)" = 0 ]; then \
	  $(VENV)/bin/agentcube-e2b rootfs build --cache-dir $(ROOTFS_CACHE); \
	else \
	  echo "not root: not building the base rootfs (sandbox isolation needs root)"; \
	fi
	$(PY) -m extproc.lifecycle.data_stack build --cache-dir $(ROOTFS_CACHE)

# The E2B SDK version matrix (tests/sdk_matrix): a venv or npm prefix per SDK release, each
# installed from its committed lock into .cache/sdk-matrix/; unchanged locks install nothing.
sdk-matrix: $(VENV)/.installed
	PYTHONPATH=tests $(PY) -m sdk_matrix.installing

# Rewrites the matrix's locks from tests/sdk_matrix/releases.py (pip-compile, npm): commit them.
sdk-matrix-lock: $(VENV)/.installed
	PYTHONPATH=tests $(PY) -m sdk_matrix.locking

up: venv host-packages
	$(VENV)/bin/agentcube-e2b up

# One command regenerates every stub; CI fails if the checked-in ones differ.
generate: $(VENV)/.installed
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -I proto/envd -I $$($(PY) -c 'import grpc_tools,os;print(os.path.dirname(grpc_tools.__file__))')/_proto \
	  --plugin=protoc-gen-py=$(VENV)/bin/protoc-gen-py --plugin=protoc-gen-connectrpc=$(VENV)/bin/protoc-gen-connectrpc \
	  --py_out=$(GEN) --connectrpc_out=$(GEN) process/process.proto filesystem/filesystem.proto
	$(PY) -m grpc_tools.protoc -I proto -I $$($(PY) -c 'import grpc_tools,os;print(os.path.dirname(grpc_tools.__file__))')/_proto \
	  --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) agentcube/e2b/v1/lifecycle.proto
	# grpc_python_out writes absolute imports; the stubs live inside our package.
	sed -i 's/^from agentcube\.e2b\.v1 import/from extproc._gen.agentcube.e2b.v1 import/' $(GEN)/agentcube/e2b/v1/*_grpc.py
	for d in agentcube agentcube/e2b agentcube/e2b/v1; do touch $(GEN)/$$d/__init__.py; done
	printf '"""Generated protobuf and RPC stubs. Do not edit: run `make generate`."""\n' > $(GEN)/__init__.py

check-generate: generate
	git diff --exit-code --stat -- $(GEN) || (echo "extproc/_gen is stale: run make generate and commit" && exit 1)
	test -z "$$(git status --porcelain -- $(GEN))" || (git status --porcelain -- $(GEN); echo "extproc/_gen has untracked or changed files" && exit 1)

lint: venv
	$(BUF) lint
	$(VENV)/bin/ruff check extproc tests
	$(VENV)/bin/mypy extproc

test: venv test-host-packages check-generate lint rootfs sdk-matrix
	AGENTCUBE_E2B_ROOTFS_CACHE_DIR=$(ROOTFS_CACHE) $(VENV)/bin/pytest

bench: venv
	@echo "benchmarks: run the scripts in tests/bench/ one by one, e.g. $(PY) tests/bench/picod_bench.py"
