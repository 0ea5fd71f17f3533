# Multi-stage build of the project's binaries (bridge, legacy-sim, shipping) for docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p bridge -p legacy-sim -p shipping

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 bridge
COPY --from=build /src/target/release/bridge /src/target/release/legacy-sim /src/target/release/shipping /usr/local/bin/
USER bridge
