# make demo  - set up and run the seed's examples end to end
# make test  - set up and run every test (lint and types included)
# make soak  - the reliability tests at full size (docs/reliability.md)
# make fuzz  - run every fuzz target FUZZ_RUNS times (FUZZ_TARGETS: a subset)

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian packages the tests use: QEMU 7.2 as the reference and peer, openssl,
# pam_wrapper and the stock PAM modules (authz-pam without touching /etc/pam.d),
# and the vhost-user peers: qemu-storage-daemon (qemu-system-common) and DPDK's
# vhost_crypto example, built by the tests from dpdk-doc's source; OVMF, whose
# SEV launch digest is compared with sev-snp-measure's (a pip test dependency).
# The guest tests also compile a static program (build-essential's libc6-dev) and
# fetch Debian's kernel and busybox-static with apt-get download (never installed).
DEBS   := qemu-system-x86 qemu-system-common qemu-utils openssl bsdextrautils libpam-wrapper libpam-modules \
          dpdk-doc libdpdk-dev build-essential pkg-config ovmf

.PHONY: demo test lint typecheck unit differential interop integration bench fuzz system-deps clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# As root (CI), install what is missing; otherwise say what is missing.
system-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (tests that need them are skipped)"; fi; \
	fi

demo: $(STAMP) system-deps
	$(PY) demo/run_demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks demo fuzz
	$(VENV)/bin/ruff format --check src tests benchmarks demo fuzz

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict src

test: $(STAMP) system-deps lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider tests

# The tests of docs/reliability.md with QOMHOST_SOAK=1: 64 QMP clients x 10 000
# commands, 100 vhost-user peer kills each way, 1 000 rule-file rewrites and
# 1 000 iothread cycles; each prints its figures.
SOAK_TESTS := tests/integration/test_qmp_load.py tests/integration/test_vhost_user_peer_faults.py \
              tests/integration/test_authz_listfile_churn.py tests/integration/test_iothread_churn.py

soak: $(STAMP) system-deps
	QOMHOST_SOAK=1 $(PY) -m pytest -q -s -p no:cacheprovider $(SOAK_TESTS)

bench: $(STAMP) system-deps
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py

# Each target in a child process of its own, at the lowest priority; prints
# executions, crashes, hangs and time per target (fuzz/run.py --help).
FUZZ_RUNS    ?= 1000000
FUZZ_TARGETS ?=
fuzz: $(STAMP)
	$(VENV)/bin/pip install -q -e '.[fuzz]'
	nice -n 19 $(PY) fuzz/run.py --runs $(FUZZ_RUNS) $(FUZZ_TARGETS)

clean:
	rm -rf $(VENV) .cache build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
