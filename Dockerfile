# Multi-stage build of the project's binaries (bridge, legacy-sim, shipping): the image the
# CloudFormation templates (deploy/cloudformation) and docker-compose.yml run.
#
# Base images are pinned by digest, so a rebuild of the same commit gets the same bases. The
# digests were taken from public Dockerfiles that pin the same tags; they could not be pulled on
# the machine this repository is built and tested on (no container engine there): when you
# bump them, take the new digest from `docker buildx imagetools inspect <tag>` and read the new
# image's vulnerability report first.
FROM rust:1-bookworm@sha256:93ce27a88655056a51dbdd8f5f2d7ddc071c7b0070fb288a37b5a285fc83971e AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p bridge -p legacy-sim -p shipping

FROM debian:bookworm-slim@sha256:7b140f374b289a7c2befc338f42ebe6441b7ea838a042bbd5acbfca6ec875818
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 bridge
COPY --from=build /src/target/release/bridge /src/target/release/legacy-sim /src/target/release/shipping /usr/local/bin/
USER 10001
# The process serving BRIDGE_METRICS_LISTEN (capture, relay, `bridge run`) answers /healthz;
# shipping's containers check with `shipping healthcheck` instead (compose and the template
# say so per service). No curl in the image: the binaries ask themselves.
ENV BRIDGE_METRICS_LISTEN=0.0.0.0:9464 SHIPPING_METRICS_LISTEN=0.0.0.0:9465
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["bridge", "healthcheck"]
