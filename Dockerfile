# syntax=docker/dockerfile:1
#
# postgres-seren-replicator container images (make image builds both):
#
#   minimal (the default target, last below): the static binary alone on
#     distroless/static, about 25 MB. Enough for sync, status, verify,
#     cutover and cleanup.
#   pg: the same binary on Debian slim with the PostgreSQL client of one
#     major version (PG_MAJOR, default 17) from the PostgreSQL project's
#     apt repository: pg_dump and pg_restore for init (and validate's
#     pg_dump check). Pick PG_MAJOR >= the source server's major version:
#     pg_dump refuses newer servers; tag it IMAGE:VERSION-pgPG_MAJOR.
#
# Both run as the unprivileged user 65532 ("nonroot") and start the binary
# itself: arguments are the command, e.g.
#   docker run --rm IMAGE:VERSION status
#   docker run --rm -e SEREN_SOURCE -e SEREN_TARGET IMAGE:VERSION-pg17 init --yes
#
# Health: no HEALTHCHECK, because most commands (init, verify, status,
# cutover, cleanup) are one-shot runs that serve nothing, and distroless has
# no shell or HTTP client to probe with. The daemon (sync with
# --metrics-addr, SEREN_METRICS_ADDR=:9188) serves the probes over HTTP:
#   GET /healthz  200 while the process runs (liveness)
#   GET /readyz   200 while every database streams with lag under --max-lag,
#                 503 with the reason otherwise (readiness)
#   GET /metrics  Prometheus
# deploy/kubernetes/deployment.yaml uses them; with plain docker, probe
# http://HOST:9188/healthz from outside.
#
# Base images are pinned: the Go toolchain and Debian by exact tag, the
# distroless base by digest (it has no versioned tags). Update them in a
# reviewed commit.

ARG GO_IMAGE=golang:1.26.8-bookworm
ARG PG_BASE_IMAGE=debian:bookworm-20251229-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639

# ---- build: a static binary (CGO_ENABLED=0) for the target platform ----
FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
ARG COMMIT=unknown
ARG BUILD_DATE=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${BUILD_DATE}" \
      -o /out/postgres-seren-replicator ./cmd/postgres-seren-replicator

# ---- pg: with pg_dump/pg_restore of PG_MAJOR, for init ----
FROM ${PG_BASE_IMAGE} AS pg
ARG PG_MAJOR=17
ARG VERSION=dev
# postgresql-common ships the PostgreSQL apt repository's signing key and
# the script that adds the repository; the client package of any supported
# major then comes from there.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates postgresql-common \
 && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-client-${PG_MAJOR} \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin nonroot
# init runs this pg_dump and the pg_restore beside it.
ENV PG_DUMP=/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump
COPY --from=build /out/postgres-seren-replicator /usr/local/bin/postgres-seren-replicator
LABEL org.opencontainers.image.title="postgres-seren-replicator" \
      org.opencontainers.image.description="Zero-downtime PostgreSQL migration by logical replication (with pg_dump/pg_restore ${PG_MAJOR})" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/serenorg/postgres-seren-replicator"
USER 65532:65532
EXPOSE 9188
ENTRYPOINT ["/usr/local/bin/postgres-seren-replicator"]
CMD ["--help"]

# ---- minimal (default): the static binary on distroless ----
FROM ${RUNTIME_IMAGE} AS minimal
ARG VERSION=dev
COPY --from=build /out/postgres-seren-replicator /usr/local/bin/postgres-seren-replicator
LABEL org.opencontainers.image.title="postgres-seren-replicator" \
      org.opencontainers.image.description="Zero-downtime PostgreSQL migration by logical replication" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/serenorg/postgres-seren-replicator"
USER 65532:65532
EXPOSE 9188
ENTRYPOINT ["/usr/local/bin/postgres-seren-replicator"]
CMD ["--help"]
