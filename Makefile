# rtcd-rs: a Rust, wire-compatible Mattermost rtcd with a Kubernetes operator.
# Set-up is two commands: `make run` and `make test`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Build outputs live outside the clone so fresh clones (and CI) reuse them.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/rtcd-rs/target
CARGO ?= cargo

.PHONY: help deps build run test fuzz soak test-rust test-operator test-node test-chart test-e2e test-compat test-browser test-loadtest test-placement test-observability test-canary test-testpage test-smoke smoke bench lint fmt generate check-generated images-test

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

deps: ## Install what builds and tests need (idempotent)
	@scripts/deps.sh

build: deps ## Build the release binary
	$(CARGO) build --release --locked -p rtcd

run: build ## Build and run rtcd on embedded defaults (API :8045, media :8443)
	$(CARGO_TARGET_DIR)/release/rtcd

test: deps ## Install test dependencies, then run every test
	$(MAKE) --no-print-directory check-generated test-rust test-operator test-chart test-e2e images-test test-node test-loadtest test-placement test-observability test-canary test-testpage test-smoke test-compat test-browser
	@scripts/test-summary.sh $(CARGO_TARGET_DIR)/test-rust.log $(CARGO_TARGET_DIR)/test-operator.log $(CARGO_TARGET_DIR)/test-chart.log $(CARGO_TARGET_DIR)/test-e2e.log \
		$(CARGO_TARGET_DIR)/images-test.log $(CARGO_TARGET_DIR)/test-node.log $(CARGO_TARGET_DIR)/test-loadtest.log $(CARGO_TARGET_DIR)/test-placement.log $(CARGO_TARGET_DIR)/test-observability.log $(CARGO_TARGET_DIR)/test-canary.log $(CARGO_TARGET_DIR)/test-testpage.log \
		$(CARGO_TARGET_DIR)/test-smoke.log \
		$(CARGO_TARGET_DIR)/test-compat.log $(CARGO_TARGET_DIR)/test-browser.log

test-rust: deps ## Rust unit, HTTP, config, golden-vector and process tests
	$(CARGO) test --workspace --locked --features rtcd/fault-injection 2>&1 | tee $(CARGO_TARGET_DIR)/test-rust.log

test-operator: deps ## The operator on a real control plane (etcd, apiserver, KCM, scheduler, kwok; netns)
	scripts/operator-e2e.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-operator.log

generate: ## Rewrite generated artefacts (crds/, the chart's CRD and schema, manifests/)
	$(CARGO) run --locked -q -p rtcd-operator --bin crdgen > crds/rtcdclusters.yaml
	charts/generate.sh

check-generated: ## Fail when crds/ differs from what crdgen writes
	@$(CARGO) run --locked -q -p rtcd-operator --bin crdgen > $(CARGO_TARGET_DIR)/rtcdclusters.yaml
	@diff -u crds/rtcdclusters.yaml $(CARGO_TARGET_DIR)/rtcdclusters.yaml \
		|| { echo "crds/ is stale: run 'make generate' and commit the result" >&2; exit 1; }
	@charts/generate.sh --check

test-chart: deps ## Helm chart + manifests/: lint, renderings, typos, install/uninstall on a real control plane (netns)
	scripts/chart-test.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-chart.log

test-e2e: deps ## The cluster-agnostic e2e suite (e2e/cluster) on the local real control plane (netns)
	scripts/cluster-e2e.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-e2e.log

images-test: deps ## hadolint both Dockerfiles; their build outside Docker; start each like its image
	scripts/image-test.sh 2>&1 | tee $(CARGO_TARGET_DIR)/images-test.log

test-node: deps ## The chart on a REAL node (containerd, kubelet, kube-proxy, CoreDNS; images built here; netns)
	scripts/node-e2e.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-node.log

test-loadtest: deps ## A few-second smoke run of rtcd-loadtest against our rtcd (netns)
	scripts/loadtest-smoke.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-loadtest.log

test-placement: deps ## Calls placed like the Calls plugin over 3 instances behind one DNS name: spread, capacity, refusals (netns)
	scripts/placement-e2e.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-placement.log

test-observability: deps ## The dashboard and alerts: promtool, a real Prometheus scraping rtcd during a call, the chart's renderings (netns)
	scripts/observability-test.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-observability.log

test-canary: deps ## The connectivity canary (rtcd-loadtest probe) on a working and a UDP-blocked instance (netns, nftables)
	scripts/canary-e2e.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-canary.log

test-testpage: deps ## The end-user connectivity page /test in headless Chromium, working and UDP-blocked (netns, nftables)
	scripts/testpage-e2e.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-testpage.log

# make bench [BENCH_ARGS="--workloads w2,w4 --runs 3 --window 10"] [FLAMEGRAPH=w2]
# (bench/bench.py --scaling gives the server every core; cargo bench -p rtcd --bench engine_throughput)
bench: deps ## Side-by-side benchmark against the real rtcd v1.2.6; writes docs/benchmarks/
	@# Separate builds: together, cargo would unify the generator's dependency features into the
	@# measured rtcd; alone, it is exactly what `make build` ships.
	$(CARGO) build --release --locked -p rtcd
	$(CARGO) build --release --locked -p rtcd-loadtest
	@ref=$$(e2e/compat/build-ref.sh); \
	fg=""; if [ -n "$(FLAMEGRAPH)" ]; then fg="--flamegraph $(FLAMEGRAPH)"; PATH="$$(scripts/inferno.sh):$$PATH"; fi; \
	RTCD_BIN=$(CARGO_TARGET_DIR)/release/rtcd RTCD_REF_BIN=$$ref LOADTEST_BIN=$(CARGO_TARGET_DIR)/release/rtcd-loadtest \
	  BENCH_COMMAND="make bench BENCH_ARGS='$(BENCH_ARGS)' FLAMEGRAPH='$(FLAMEGRAPH)'" PATH="$$PATH" \
	  unshare -n python3 bench/bench.py $(BENCH_ARGS) $$fg
	@# The server on every core (engine shards), CPU per thread; then the in-memory engine, 1 vs 2 shards.
	RTCD_BIN=$(CARGO_TARGET_DIR)/release/rtcd RTCD_REF_BIN=$$(e2e/compat/build-ref.sh) LOADTEST_BIN=$(CARGO_TARGET_DIR)/release/rtcd-loadtest \
	  BENCH_COMMAND="make bench (scaling)" unshare -n python3 bench/bench.py --workloads w2 --scaling
	$(CARGO) bench --locked -p rtcd --bench engine_throughput

test-smoke: deps ## Build the admins' smoke suite (e2e/smoke) and run its unit tests
	scripts/smoke-test.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-smoke.log

# make smoke MM_URL=https://chat.example.com MM_ADMIN_TOKEN=... [RTCD_URL=...] (docs/smoke.md)
smoke: ## After deploying: calls through a real Mattermost + Calls plugin, checked on rtcd
	@test -n "$(MM_URL)" -a -n "$(MM_ADMIN_TOKEN)" || { echo "make smoke MM_URL=<site URL> MM_ADMIN_TOKEN=<system admin token> [RTCD_URL=...]" >&2; exit 2; }
	MM_URL="$(MM_URL)" MM_ADMIN_TOKEN="$(MM_ADMIN_TOKEN)" RTCD_URL="$(RTCD_URL)" "$$(e2e/smoke/build.sh)" $(SMOKE_ARGS)

test-compat: deps ## The Go service.Client suite against the real rtcd and ours (netns)
	scripts/compat.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-compat.log

test-browser: deps ## Two Chromium pages (calls-common RTCPeer) in one call, real rtcd and ours (netns)
	scripts/browser.sh 2>&1 | tee $(CARGO_TARGET_DIR)/test-browser.log

soak: deps ## rtcd under churn for SOAK_MINUTES (default 30): RSS, fds, tasks and every table stay flat and end at zero
	scripts/soak.sh

fuzz: ## libFuzzer + ASan (nightly) on every rtcd::fuzz target, FUZZ_SECONDS each (default 180)
	scripts/fuzz.sh

lint: deps ## rustfmt --check, clippy -D warnings, cargo deny (licenses, bans, sources), actionlint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	scripts/deny.sh
	scripts/actionlint.sh

fmt: ## Format the code
	$(CARGO) fmt --all
