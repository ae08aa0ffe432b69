# crib: set-up, run, test. Every target is idempotent and does its own set-up on a fresh Debian machine (root).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# What crib drives (runc, conmon, CNI plugins, catatonit, iptables, iproute2, util-linux) and what its tests
# and benchmarks use (docker-registry, busybox-static, apache2-utils for htpasswd, containerd as the reference,
# e2fsprogs for the soak's small loop-mounted root).
DEBS := runc runsc conmon containernetworking-plugins busybox-static catatonit docker-registry iptables \
        iproute2 util-linux apache2-utils containerd python3-venv python3-dev gcc zstd openssl e2fsprogs

.PHONY: all deps venv run test unit integration lint proto proto-check bench soak fuzz clean-venv help

all: test

help:
	@echo "make run    - install what is missing, then run the daemon on its embedded defaults"
	@echo "make test   - install what is missing, then run the whole test suite (as root)"
	@echo "make lint   - ruff and mypy"
	@echo "make proto  - regenerate src/crib/_proto from proto/"
	@echo "make bench  - crib vs containerd benchmarks (see bench/README.md)"
	@echo "make soak   - the 10-minute chaos soak (SOAK_ARGS=\"--minutes 30\" for longer)"
	@echo "make fuzz   - the fuzzers with 2000 examples each (CRIB_FUZZ_EXAMPLES=N for more)"

deps:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q || apt-get update -q; \
	  apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml | deps
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: deps $(STAMP)

run: venv
	@echo "crib: serving on unix:///run/crib/crib.sock; in another shell try: $(VENV)/bin/crib version"
	exec $(VENV)/bin/crib daemon

test: venv
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: an empty run is a broken run" >&2; exit 1; fi; exit $$rc

unit: venv
	$(PY) -m pytest tests/unit tests/test_architecture.py $(PYTEST_ARGS)

integration: venv
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests scripts bench examples
	$(VENV)/bin/mypy

proto: venv
	$(PY) scripts/gen_proto.py

proto-check: venv
	$(PY) scripts/gen_proto.py --check

bench: venv
	$(PY) -m bench $(BENCH_ARGS)

soak: venv
	$(PY) -m bench soak $(SOAK_ARGS)

fuzz: venv
	CRIB_FUZZ_EXAMPLES=$${CRIB_FUZZ_EXAMPLES:-2000} $(PY) -m pytest -s \
	  tests/integration/test_fuzz_rpc.py tests/integration/test_fuzz_unpack.py tests/unit/test_fuzz_manifest.py \
	  $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
