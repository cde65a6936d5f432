# The `shop` binary in a small runtime image. Build: docker build -t shop .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin shop && cp target/release/shop /usr/local/bin/shop

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 shop
COPY --from=build /usr/local/bin/shop /usr/local/bin/shop
USER shop
ENV SHOP_BIND=0.0.0.0 SHOP_LOG_FORMAT=json
ENTRYPOINT ["shop"]
