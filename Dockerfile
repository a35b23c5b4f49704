# Data Nexus container image: `docker build -t datanexus .`
#
# Build stage: the same cargo command CI runs for the release binary, with every
# backend (Redis, Kafka, PostgreSQL). Final stage: distroless (glibc, OpenSSL, CA
# certificates; no shell), running as a non-root user with its data in /data.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p datanexus --features kafka \
    && install -D -m 0755 target/release/datanexus /out/usr/bin/datanexus \
    && install -D -m 0644 deploy/datanexus.toml /out/etc/datanexus/datanexus.toml \
    && install -d -m 0750 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/bin/datanexus /usr/bin/datanexus
COPY --from=build /out/etc/datanexus /etc/datanexus
COPY --from=build --chown=65532:65532 /out/data /data
# Listen on every interface of the container. A non-loopback listener needs auth
# tokens (DATANEXUS_AUTH_TOKENS) or an explicit DATANEXUS_INSECURE=true.
ENV DATANEXUS_DATA_DIR=/data \
    DATANEXUS_GRPC_ADDR=0.0.0.0:50051 \
    DATANEXUS_HTTP_ADDR=0.0.0.0:8080
VOLUME ["/data"]
EXPOSE 50051 8080
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/bin/datanexus", "healthcheck", "--http-addr", "127.0.0.1:8080"]
ENTRYPOINT ["/usr/bin/datanexus"]
CMD ["serve", "--config", "/etc/datanexus/datanexus.toml"]
