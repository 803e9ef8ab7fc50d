# tcopy-tun — `make help` lists the targets.
GO        ?= go
BIN       := bin/tcopy-tun
PKGS      := ./...
# deploy/ is a Go module of its own (the Kubernetes API types its tests
# decode the manifests into stay out of tcopy-tun's module): test and lint
# run there too.
DEPLOY    := deploy
# Privileged tests (TUN, network namespaces, real servers) skip with a hint
# when the capability or a program is missing; TCOPY_TUN_PRIVILEGED_TESTS=1
# turns that skip into a failure (`make check` sets it when run as root).
# The race detector needs cgo, so a C compiler and the C headers (gcc and
# libc6-dev, which make deps installs); without them (go env CGO_ENABLED is 0)
# the tests run without -race, and make test says so.
RACE = $(if $(filter 1,$(shell $(GO) env CGO_ENABLED 2>/dev/null)),-race)
TESTFLAGS ?= $(RACE) -count=1 -timeout 20m
# The Debian packages the test suite uses (`make deps` installs the missing
# ones): ip(8), unshare/setpriv, setcap, ps, tcpdump and tshark, the real
# servers and clients of the end-to-end suite, netcat (the Kubernetes capture
# agent's), a C compiler for -race, promtool (Debian's prometheus package: no
# service is started) to check the metrics format, and headless Chromium
# with a font, which loads the --html report in its tests.
DEBS := iproute2 util-linux libcap2-bin procps tcpdump tshark curl netcat-openbsd \
        redis-server redis-tools nginx apache2-utils mariadb-server mariadb-client \
        gcc libc6-dev prometheus chromium fonts-dejavu-core openssl wireshark-common

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
	@[ -n "$(RACE)" ] || echo "test: no C compiler (go env CGO_ENABLED=0): testing without the race detector; install gcc and libc6-dev (make deps, as root)"
	$(GO) test $(TESTFLAGS) $(PKGS)
	cd $(DEPLOY) && $(GO) vet ./... && $(GO) test $(TESTFLAGS) ./...
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PKGS)

# make bench: the harness (cmd/tcopy-tun-bench, root). BENCH selects workloads
# (short, short-nocausal, keepalive, pipelined, bulk, upload, timing,
# tls-short, tls-keepalive, live, million; comma-separated, default all), BENCH_QUICK=1 shrinks them, BENCH_FLAGS
# passes more flags (-runs 3, -profile, -args "--mtu 1500", -live-rate 3000;
# see bin/tcopy-tun-bench -h). live is the highest short-session rate that live
# copy (--live lo) follows with no kernel drop, load on the same cores, beside
# the offline rate of the short capture (BENCH=short,live: about 1.5 minutes).
# upload is one connection that POSTs 384 MiB (32 MiB quick) and gets a short
# answer: throughput, the replayer's peak RSS on each path, and whether the
# target received every byte (BENCH=upload). tls-short and tls-keepalive replay
# TLS 1.3 captures with their key log to an HTTPS target, and set tcopy-tun's
# CPU per session beside the plaintext twin's and the decryption's alone.
BENCH       ?=
BENCH_QUICK ?=
BENCH_FLAGS ?=
BENCH_JSON  ?= out/bench.json
.PHONY: bench
bench: build ## replay each workload through the TUN + netstack and through kernel sockets in a private netns; table (rates, peak RSS, bytes delivered) + out/bench.json (root; BENCH=short,upload BENCH_QUICK=1)
	$(GO) build -o bin/tcopy-tun-bench ./cmd/tcopy-tun-bench
	bin/tcopy-tun-bench -tcopy-tun $(BIN) -workloads '$(BENCH)' -json '$(BENCH_JSON)' $(if $(BENCH_QUICK),-quick) $(BENCH_FLAGS)

.PHONY: bench-go
bench-go: build ## Go benchmarks: capture decoding, the replay loop against the kernel-socket baseline
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# make screenshot: the --html report of a real replay (the demo capture,
# through kernel sockets, to a changed build of the demo server with the
# demo server as --baseline; no root needed), as headless Chromium shows it.
.PHONY: screenshot
screenshot: ## write docs/report.png, a screenshot of the --html report of a replay with a baseline (needs chromium: make deps)
	TCOPY_TUN_HTML_SCREENSHOT=$(CURDIR)/docs/report.png $(GO) test -count=1 -run '^TestHTMLReportOfReplay$$' -v ./cmd/tcopy-tun/

FUZZTIME ?= 30s
.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME (default 30s each)
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

.PHONY: lint
lint: ## gofmt, go vet, staticcheck (a tool pinned in go.mod), go.mod/go.sum tidy; the same in deploy/
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; exit 1; }
	@# deploy/ with the same staticcheck (the one go.mod pins, built into bin/).
	$(GO) build -o bin/staticcheck honnef.co/go/tools/cmd/staticcheck
	cd $(DEPLOY) && $(GO) vet ./... && ../bin/staticcheck ./...
	@cd $(DEPLOY) && $(GO) mod tidy -diff || { echo "deploy/go.mod/go.sum are not tidy: run 'cd deploy && go mod tidy'"; exit 1; }

# make deps installs the missing DEBS with apt-get (root, Debian/Ubuntu). A
# policy-rc.d that forbids starting services is in place during the install
# (the tests start their own servers inside their network namespaces); it is
# removed afterwards if deps created it. Without root, or without apt-get, it
# names what it cannot install and succeeds: the tests that need it skip.
.PHONY: deps
deps: ## install the Debian packages the tests need, only those missing, starting no service (root)
	@missing=; \
	for p in $(DEBS); do \
	  case "$$(dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null)" in ?i*) ;; *) missing="$$missing $$p";; esac; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: the test packages are installed"; exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "deps: no apt-get here, cannot install the Debian packages$$missing: install what provides them"; exit 0; \
	fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "deps: not root, cannot install$$missing"; \
	  echo "deps: the tests that need them skip; as root, 'make deps' (or 'make check') installs them"; exit 0; \
	fi; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
	  trap 'rm -f /usr/sbin/policy-rc.d' EXIT; trap 'exit 130' INT TERM HUP; \
	  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
	fi; \
	echo "deps: apt-get install$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null

# As root, make check enforces the privileged tests: a missing capability,
# server or tool fails them instead of skipping (set
# TCOPY_TUN_PRIVILEGED_TESTS=0 to allow skipping).
ifeq ($(shell id -u),0)
check: export TCOPY_TUN_PRIVILEGED_TESTS ?= 1
endif
.PHONY: check
check: deps lint test ## install the test packages (root), lint and test with privileged tests enforced as root: what CI runs

.PHONY: clean
clean: ## remove build output
	rm -rf bin
