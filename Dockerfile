# syntax=docker/dockerfile:1
# The `sightline` image: the one binary for every role (collector, loader, query, operator,
# a Reprocess Job's pod, `token issue`, ...).
#
#   docker build -t sightline:dev .                                   # target `cluster` (the default)
#   docker build --target standalone -t sightline:dev-standalone .
#
# `cluster`: the binary on distroless cc (glibc, OpenSSL, CA certificates; no shell, no
# package manager), run as distroless's nonroot user 65532, the uid the operator's pods run
# as. The roles in a cluster reach ClickHouse over HTTP and never load libchdb, so it is
# left out.
# `standalone`: the same plus libchdb (the embedded engine, loaded at run time from
# /usr/local/lib/sightline/libchdb.so), the example tenant and a data volume.
#
# The pins (libchdb, the user-agent data the build embeds) live in scripts/install-deps.sh,
# which the stages run rather than repeat; tests/tests/packaging.rs checks this file
# against the repository.

ARG RUST_VERSION=1.95.0
ARG NODE_VERSION=20

# The pinned user-agent data the build embeds (core/build.rs), fetched from npm.
FROM node:${NODE_VERSION}-bookworm-slim AS deps
WORKDIR /src
COPY scripts/install-deps.sh scripts/tools-path.sh scripts/
ENV SIGHTLINE_LIB_DIR=/usr/local/lib/sightline
RUN ["./scripts/install-deps.sh", "--no-libchdb", "--no-build-libs"]

# libchdb, pinned in the same script; only the standalone image takes it.
FROM deps AS libchdb
RUN ["./scripts/install-deps.sh", "--no-build-libs"]

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The C toolchain and the OpenSSL 3 headers librdkafka's TLS and SCRAM build against, from
# the same script (the rust image normally has them: then it only checks).
COPY scripts/install-deps.sh scripts/tools-path.sh scripts/
RUN ["./scripts/install-deps.sh", "--build-libs"]
COPY --from=deps /usr/local/lib/sightline/ua /usr/local/lib/sightline/ua
COPY . .
# The registry and target directory are build caches, so the binary is copied out of them.
RUN --mount=type=cache,id=sightline-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=sightline-target,target=/src/target \
    cargo build --release --locked --bin sightline \
    && install -D -m 0755 target/release/sightline /out/bin/sightline \
    && install -d -m 0700 /out/data

# Debian 12's glibc and OpenSSL 3.0 (libssl3), as the build stage's bookworm: distroless cc
# is distroless base (glibc, libssl3, CA certificates) plus libgcc and libstdc++, which is
# every library the binary links (tests/tests/packaging.rs checks its dynamic section).
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="sightline" \
      org.opencontainers.image.description="Sightline, an open analytics backend: one binary for every role" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bin/sightline /usr/local/bin/sightline
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sightline"]
CMD ["--help"]

FROM runtime AS standalone
COPY --from=libchdb /usr/local/lib/sightline/libchdb.so /usr/local/lib/sightline/libchdb.so
# The example tenant; mount your own tenants directory over it.
COPY manifests/examples/tenant.yaml /etc/sightline/tenants/tenant.yaml
# The secret key and the engine's files: owned by the nonroot user, mode 0700 (the secret's
# directory must not be readable by others).
COPY --from=build --chown=65532:65532 --chmod=0700 /out/data /var/lib/sightline
VOLUME ["/var/lib/sightline"]
EXPOSE 8080 9090
CMD ["standalone", "--tenants", "/etc/sightline/tenants", "--data", "/var/lib/sightline", "--listen", "0.0.0.0:8080", "--ops-listen", "0.0.0.0:9090"]

# The default target, last: the image the chart and the operator run.
FROM runtime AS cluster
