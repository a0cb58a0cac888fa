# Multi-stage build: compile with the pinned toolchain, run as a non-root user in a
# small Debian image (ca-certificates for HTTPS upstreams).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY src/build.rs ./src/
RUN echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked && rm -rf src
COPY src ./src
# The shipped profiles are compiled in (`--profile kerlig` works from any directory).
COPY profiles ./profiles
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin diglot

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /app diglot \
    && mkdir /data && chown diglot /data
WORKDIR /app
COPY --from=build /src/target/release/diglot /usr/local/bin/diglot
COPY profiles ./profiles
USER diglot
# Inside a container, listen on every interface (so API tokens are required: create one
# with `docker exec CONTAINER diglot token create --name NAME`); reach an Ollama on the
# host by default. Tokens and usage records live in the /data volume.
ENV DIGLOT_LISTEN=0.0.0.0:3000 \
    DIGLOT_UPSTREAM__URL=http://host.docker.internal:11434 \
    DIGLOT_STORE__DATA_DIR=/data
VOLUME /data
EXPOSE 3000
# The binary probes its own /health (no curl in the image): unhealthy when diglot does
# not answer, or answers 503 because no upstream is usable.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["diglot", "health-check", "--timeout", "4"]
ENTRYPOINT ["diglot"]
CMD ["serve"]
