# observerd — `make` lists the targets. Every target that needs a tool
# installs it when it is missing (Debian packages via apt-get, Go tools
# pinned in go.mod's tool block), so a fresh machine needs only Go and make.

SHELL := /bin/bash
.DEFAULT_GOAL := help

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
BIN      := bin
PROTOS   := $(wildcard proto/polar/observer/v1/*.proto)
# The example plugins (wasm/examples/README.md): Go ones (a main.go), C
# ones (<name>-c/<name>.c) and Rust ones (<name>-rs/lib.rs).
GO_PLUGINS := $(patsubst wasm/examples/%/main.go,%,$(wildcard wasm/examples/*/main.go))
C_PLUGINS  := $(patsubst wasm/examples/%/,%,$(dir $(wildcard wasm/examples/*-c/*.c)))
RS_PLUGINS := $(patsubst wasm/examples/%/lib.rs,%,$(wildcard wasm/examples/*-rs/lib.rs))
# Debian bookworm's toolchains for the C and Rust examples (make deps):
# clang 14 with wasi-libc, and rustc 1.63 with its wasm32-wasi std, named
# by path since a rustup toolchain on PATH would lack that target.
CLANG    ?= /usr/bin/clang
RUSTC    ?= /usr/bin/rustc
FUZZTIME ?= 60s
SUDO     := $(if $(filter 0,$(shell id -u)),,sudo)
# make install: DESTDIR stages (packaging), PREFIX places binaries, unit and plugins.
DESTDIR  ?=
PREFIX   ?= /usr/local
UNITDIR  ?= $(PREFIX)/lib/systemd/system

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install what is missing (apt-get): Debian's rabbitmq-server, protoc, systemd-analyze, promtool, Python with pika, protobuf and jsonschema, clang with wasi-libc and rustc with its wasm32-wasi std (the C and Rust example plugins)
	@missing=""; \
	command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing="$$missing rabbitmq-server"; \
	command -v protoc >/dev/null 2>&1 || missing="$$missing protobuf-compiler"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	[ -f /usr/include/google/protobuf/timestamp.proto ] || missing="$$missing libprotobuf-dev"; \
	[ -x $(CLANG) ] || missing="$$missing clang"; \
	[ -x /usr/bin/wasm-ld ] || missing="$$missing lld"; \
	[ -f /usr/lib/wasm32-wasi/libc.a ] || missing="$$missing wasi-libc"; \
	ls /usr/lib/llvm-14/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || missing="$$missing libclang-rt-14-dev-wasm32"; \
	[ -x $(RUSTC) ] || missing="$$missing rustc"; \
	[ -d /usr/lib/rustlib/wasm32-wasi/lib ] || missing="$$missing libstd-rust-dev-wasm32"; \
	for m in pika:python3-pika google.protobuf:python3-protobuf jsonschema:python3-jsonschema; do \
		/usr/bin/python3 -c "import $${m%%:*}" >/dev/null 2>&1 || missing="$$missing $${m##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		$(SUDO) systemctl disable --now rabbitmq-server prometheus >/dev/null 2>&1 || true; \
	fi

.PHONY: build
build: deps plugins ## build bin/observerd, bin/observerctl, bin/observable and the example plugins bin/plugins/*.wasm
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/observerd ./cmd/observerctl ./cmd/observable

.PHONY: plugins
plugins: $(C_PLUGINS:%=$(BIN)/plugins/%.wasm) $(RS_PLUGINS:%=$(BIN)/plugins/%.wasm) ## build the example plugins (Go, C, Rust) into bin/plugins (make deps installs the C and Rust toolchains)
	@mkdir -p $(BIN)/plugins
	@# One module per build: c-shared takes one main package.
	for p in $(GO_PLUGINS); do \
		GOOS=wasip1 GOARCH=wasm $(GO) build -trimpath -buildmode=c-shared -o $(BIN)/plugins/$$p.wasm ./wasm/examples/$$p || exit 1; \
	done

# A C example: a WASI reactor with wasi-libc, its names stripped: they
# are debug data, 105 of the healthz example's 134 KiB. The toolchains of
# the C and Rust examples come from make deps (order-only: it checks
# them, and installs what is missing, before any of them compiles).
.SECONDEXPANSION:
$(BIN)/plugins/%-c.wasm: $$(wildcard wasm/examples/%-c/*.c) | deps
	@mkdir -p $(@D)
	$(CLANG) --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror -Wl,--strip-all -o $@ $^

# A Rust example: one file, the standard library only (no cargo, no
# crates), a cdylib for wasm32-wasi, its symbols stripped.
$(BIN)/plugins/%-rs.wasm: wasm/examples/%-rs/lib.rs | deps
	@mkdir -p $(@D)
	$(RUSTC) --edition 2021 --target wasm32-wasi --crate-type cdylib -C opt-level=s -C lto -C codegen-units=1 -C strip=symbols -D warnings -o $@ $<

.PHONY: test
test: deps proto-check lint build ## install what is missing, then run every test (unit, integration, end to end) against a private TLS RabbitMQ
	cd wasm/sdk && $(GO) test -count=1 ./...
	@# The cluster's fault tests are minutes of real outages, mostly waiting:
	@# they run in a test binary of their own beside everything else, and
	@# their output follows.
	@log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	OBSERVERD_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -tags integration -timeout 15m -run '^TestClusterFaults$$' ./test/e2e/ >$$log 2>&1 & faults=$$!; \
	OBSERVERD_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -tags integration -timeout 15m -skip '^TestClusterFaults$$' ./...; rest=$$?; \
	wait $$faults; status=$$?; echo "--- the cluster's fault tests (test/e2e TestClusterFaults):"; cat $$log; \
	[ $$rest -eq 0 ] && [ $$status -eq 0 ]

.PHONY: run
run: deps build ## the demo: TLS RabbitMQ (CLUSTER=3: a three-node cluster), bin/observable, observerd with configs/policies, a live tail of the events (Ctrl-C stops it all)
	$(GO) run ./test/demo --bin $(BIN)$(if $(CLUSTER), --cluster $(CLUSTER))

.PHONY: proto
proto: deps ## regenerate messages/*.pb.go from proto/ (pinned protoc-gen-go)
	protoc --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" -I proto -I /usr/include \
		--go_out=. --go_opt=module=github.com/polar/observerd $(PROTOS)

.PHONY: proto-check
proto-check: deps ## fail when messages/*.pb.go differ from what `make proto` generates
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	protoc --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" -I proto -I /usr/include \
		--go_out=$$tmp --go_opt=module=github.com/polar/observerd $(PROTOS) || exit 1; \
	for f in $$tmp/messages/*.pb.go; do \
		cmp -s $$f messages/$$(basename $$f) || { echo "messages/$$(basename $$f) differs from proto/: run make proto"; exit 1; }; \
	done; \
	for f in messages/*.pb.go; do \
		[ -f $$tmp/messages/$$(basename $$f) ] || { echo "$$f has no .proto source: run make proto"; exit 1; }; \
	done; \
	echo "proto-check: messages/ matches proto/"

# The guest SDK is a module of its own (wasm/sdk/go.mod), which the
# daemon's module requires through a replace: named by its import path,
# its packages are checked from here with the daemon's pinned tools.
SDK := github.com/polar/observerd/wasm/sdk/...

.PHONY: lint
lint: ## go mod tidy -diff (both modules), go vet, gofmt and staticcheck (pinned in go.mod)
	$(GO) mod tidy -diff
	cd wasm/sdk && $(GO) mod tidy -diff
	$(GO) vet -tags integration ./... $(SDK)
	GOOS=wasip1 GOARCH=wasm $(GO) vet $(SDK) ./wasm/examples/...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) tool staticcheck -tags integration ./... $(SDK)

.PHONY: bench
bench: deps build ## measure the broker actor against baselines on a private TLS RabbitMQ and a three-node cluster (~10 min; BENCH_FLAGS=--quick ~4 min; --rows selects), write docs/benchmarks.md
	$(GO) run ./test/bench --out docs/benchmarks.md $(BENCH_FLAGS)

.PHONY: fuzz
fuzz: ## run every native fuzz target for FUZZTIME each (default 60s); each input is also held to a memory budget (test/fuzzbudget)
	@set -e; for file in $$(git ls-files '*_test.go' | xargs grep -l '^func Fuzz'); do \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
			echo "== $$target in ./$$(dirname $$file) for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) ./$$(dirname $$file); \
		done; \
	done

.PHONY: install
install: $(if $(and $(wildcard $(BIN)/observerd),$(wildcard $(BIN)/observerctl)),,build) ## install observerd, observerctl, the systemd unit, the example config, the policy schema and the alerting rules (DESTDIR, PREFIX=/usr/local; never overwrites /etc/observerd/observerd.yaml)
	install -D -m 0755 $(BIN)/observerd $(DESTDIR)$(PREFIX)/bin/observerd
	install -D -m 0755 $(BIN)/observerctl $(DESTDIR)$(PREFIX)/bin/observerctl
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	sed -e 's|/usr/bin/observerd|$(PREFIX)/bin/observerd|' -e 's|/usr/share/doc/observerd|$(PREFIX)/share/doc/observerd|' \
		configs/observerd.service > $$tmp/observerd.service && \
	install -D -m 0644 $$tmp/observerd.service $(DESTDIR)$(UNITDIR)/observerd.service && \
	printf 'u observerd - "observerd host-local observer" /var/lib/observerd /usr/sbin/nologin\n' > $$tmp/observerd.conf && \
	install -D -m 0644 $$tmp/observerd.conf $(DESTDIR)$(PREFIX)/lib/sysusers.d/observerd.conf && \
	sed 's|/usr/lib/observerd/plugins|$(PREFIX)/lib/observerd/plugins|' configs/observerd.example.yaml > $$tmp/observerd.yaml && \
	install -D -m 0644 $$tmp/observerd.yaml $(DESTDIR)$(PREFIX)/share/observerd/observerd.example.yaml && \
	if [ -e $(DESTDIR)/etc/observerd/observerd.yaml ]; then \
		echo "kept $(DESTDIR)/etc/observerd/observerd.yaml (the new example is $(DESTDIR)$(PREFIX)/share/observerd/observerd.example.yaml)"; \
	else \
		install -D -m 0644 $$tmp/observerd.yaml $(DESTDIR)/etc/observerd/observerd.yaml; \
	fi
	install -d -m 0755 $(DESTDIR)/etc/observerd/policies.d $(DESTDIR)$(PREFIX)/lib/observerd/plugins
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/doc/observerd README.md docs/*.md
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/doc/observerd/observers docs/observers/*.md
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/doc/observerd/rabbitmq configs/rabbitmq/*
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(BIN)/observerctl policy schema > $$tmp/policy.schema.json && \
	install -D -m 0644 $$tmp/policy.schema.json $(DESTDIR)$(PREFIX)/share/observerd/policy.schema.json && \
	sed 's|/usr/share/doc/observerd|$(PREFIX)/share/doc/observerd|' configs/prometheus/observerd.rules.yml > $$tmp/observerd.rules.yml && \
	install -D -m 0644 $$tmp/observerd.rules.yml $(DESTDIR)$(PREFIX)/share/observerd/prometheus/observerd.rules.yml
	@for f in $(wildcard $(BIN)/plugins/*.wasm); do \
		echo "install -m 0644 $$f $(DESTDIR)$(PREFIX)/lib/observerd/plugins/"; \
		install -m 0644 $$f $(DESTDIR)$(PREFIX)/lib/observerd/plugins/ || exit 1; \
	done

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN)
