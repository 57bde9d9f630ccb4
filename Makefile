# postgres-seren-replicator — build, test, demo, benchmarks.
# `make demo` and `make test` install what they need (PostgreSQL server
# binaries from Debian's packages, Go modules) on a fresh machine.

GO      ?= go
PG_BINDIR ?= /usr/lib/postgresql/15/bin
BIN     := bin/postgres-seren-replicator
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
export PG_BINDIR

.PHONY: all build deps test test-long lint demo bench fuzz clean

all: build

# deps installs PostgreSQL 15 (server, client, pg_dump, pgbench) when missing
# and downloads the Go modules.
deps:
	@if [ ! -x "$(PG_BINDIR)/initdb" ] || ! command -v pg_dump >/dev/null; then \
		echo "installing PostgreSQL 15 from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null; \
	fi
	@$(GO) mod download

build: deps
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/postgres-seren-replicator

# test: unit and integration tests against throwaway clusters, with -race.
test: deps
	$(GO) test -race -count=1 -timeout 30m ./...

# test-long: the heavy suites (kill -9 loops, multi-million-row transactions,
# restarts under load). Run before calling a streaming issue done.
test-long: deps
	SEREN_LONG_TESTS=1 $(GO) test -race -count=1 -timeout 90m ./tests/...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

fuzz:
	$(GO) test -run=^$$ -fuzz=FuzzDecode -fuzztime=60s ./stream/

# demo: two throwaway local clusters with sample data, the real job end to end.
demo: build
	$(GO) run ./tests/demo -bin $(BIN)

bench: build
	$(GO) run ./tests/bench -bin $(BIN)

clean:
	rm -rf bin
