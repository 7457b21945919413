# weir with its bundled plugins. Build: docker build -t weir .
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weir \
 && scripts/build-plugins.sh

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/weir /usr/local/bin/weir
COPY --from=build /src/target/wasm32-wasip2/release/*.wasm target/wasm32-wasip2/release/
COPY pipeline.toml .
ENV WEIR_CACHE_DIR=/var/cache/weir
ENTRYPOINT ["weir"]
CMD ["run", "pipeline.toml"]
