# syntax=docker/dockerfile:1
# The `shop` binary in a small runtime image; docker-compose.yml runs one container per
# component from it.  Build: docker build -t shop .
#
# Builder: rust:1-bookworm has gcc, g++, make and zlib headers, which the rdkafka crate's
# bundled librdkafka build needs. The cache mounts keep the crate registry and the build
# directory between builds (the binary is copied out of the cached target directory).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin shop --features otlp \
    && cp target/release/shop /usr/local/bin/shop

# Runtime: the binary, CA certificates, curl for the compose health checks, a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/shop shop
COPY --from=build /usr/local/bin/shop /usr/local/bin/shop
USER shop
WORKDIR /var/lib/shop
ENV SHOP_BIND=0.0.0.0 \
    SHOP_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["shop"]
CMD ["--help"]
