# Multi-stage build of the project's binaries (bridge, legacy-sim, shipping): the image the
# CloudFormation templates (deploy/cloudformation) and docker-compose.yml run.
#
# Base images are pinned by digest, so a rebuild of the same commit gets the same bases. The
# digests were taken from public Dockerfiles that pin the same tags; they could not be pulled on
# the machine this repository is built and tested on (no container engine there): when you
# bump them, take the new digest from `docker buildx imagetools inspect <tag>` and read the new
# image's vulnerability report first.
#
# Builds need BuildKit (the default builder of Docker 23+): the dependencies' crates and build
# outputs live in cache mounts, so an edit of the README or of one crate recompiles that crate,
# not the AWS SDK. The binaries are stripped (symbols cost ~60 % of their size; backtraces keep
# file and line only in debug builds).
FROM rust:1-bookworm@sha256:93ce27a88655056a51dbdd8f5f2d7ddc071c7b0070fb288a37b5a285fc83971e AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked -p bridge -p legacy-sim -p shipping \
    && mkdir -p /out \
    && cp target/release/bridge target/release/legacy-sim target/release/shipping /out/

FROM debian:bookworm-slim@sha256:7b140f374b289a7c2befc338f42ebe6441b7ea838a042bbd5acbfca6ec875818
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 bridge
COPY --from=build /out/bridge /out/legacy-sim /out/shipping /usr/local/bin/
USER 10001
# No HEALTHCHECK here: one image runs three kinds of process, and each container declares the
# check of its own (compose and the templates): `bridge healthcheck` and `shipping healthcheck`
# ask their process's /livez, `legacy-sim healthcheck` its /healthz. No curl in the image: the
# binaries ask themselves.
ENV BRIDGE_METRICS_LISTEN=0.0.0.0:9464 SHIPPING_METRICS_LISTEN=0.0.0.0:9465
