# tcopy-tun — `make help` lists the targets.
GO        ?= go
BIN       := bin/tcopy-tun
PKGS      := ./...
# Privileged tests (TUN, network namespaces) skip with a hint when the
# capability is missing; TCOPY_TUN_PRIVILEGED_TESTS=1 turns that skip into a
# failure (CI sets it, see .ci/run).
TESTFLAGS ?= -race -count=1 -timeout 20m
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(shell $(GO) env GOPATH)/bin/staticcheck)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/tcopy-tun
	$(GO) build -o $(BIN) ./cmd/tcopy-tun

.PHONY: run
run: build ## the built-in default: replay the bundled capture against a bundled server in a private network namespace (root)
	$(BIN) demo

.PHONY: test
test: build ## all tests (unit, in-memory end-to-end, privileged with a real TUN when root), then every benchmark once
	$(GO) vet $(PKGS)
	$(GO) test $(TESTFLAGS) $(PKGS)
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PKGS)

# make bench: the harness (cmd/tcopy-tun-bench, root). BENCH selects workloads
# (short, short-nocausal, keepalive, pipelined, bulk, timing, million; comma-separated,
# default all), BENCH_QUICK=1 shrinks them, BENCH_FLAGS passes more flags
# (-runs 3, -profile, -args "--mtu 1500"; see bin/tcopy-tun-bench -h).
BENCH       ?=
BENCH_QUICK ?=
BENCH_FLAGS ?=
BENCH_JSON  ?= out/bench.json
.PHONY: bench
bench: build ## replay each workload through the TUN + netstack and through kernel sockets in a private netns; table + out/bench.json (root; BENCH=short,bulk BENCH_QUICK=1)
	$(GO) build -o bin/tcopy-tun-bench ./cmd/tcopy-tun-bench
	bin/tcopy-tun-bench -tcopy-tun $(BIN) -workloads '$(BENCH)' -json '$(BENCH_JSON)' $(if $(BENCH_QUICK),-quick) $(BENCH_FLAGS)

.PHONY: bench-go
bench-go: build ## Go benchmarks: capture decoding, the replay loop against the kernel-socket baseline
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

FUZZTIME ?= 30s
.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME (default 30s each)
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

.PHONY: lint
lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

.PHONY: check
check: lint test ## lint and test: what CI runs

.PHONY: clean
clean: ## remove build output
	rm -rf bin
