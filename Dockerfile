# syntax=docker/dockerfile:1
#
# opsdeck as a container: a static (musl) build of the binary on a scratch image, running as
# an unprivileged user with its data directory as a volume. See README "Install" for use.
#
#   docker build -t opsdeck .
#   docker run -p 8080:8080 -v opsdeck-data:/var/lib/opsdeck opsdeck
#
# The build stage runs on the builder's own architecture and cross-compiles for the image's
# (TARGETARCH, set by BuildKit), with zig as the C compiler and linker for the bundled SQLite
# and the TLS library's C code, so `docker buildx build --platform linux/amd64,linux/arm64`
# needs no emulation for the compile.

FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS build
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && pip3 install --no-cache-dir --break-system-packages ziglang==0.17.1 cargo-zigbuild==0.24.1
WORKDIR /src
COPY . .
# The caches keep downloaded crates and compiled dependencies between builds of the image;
# the binary is copied out of the cached target directory before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture: $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && rustup target add "$target" \
 && cargo zigbuild --release --locked --target "$target" \
 && cp "target/$target/release/opsdeck" /opsdeck
# What the runtime image needs besides the binary: CA roots for outgoing TLS, a data directory
# and a /tmp owned by the unprivileged user (scratch has no shell to create them).
RUN mkdir -p /rootfs/var/lib/opsdeck /rootfs/tmp /rootfs/etc/ssl/certs \
 && chmod 0700 /rootfs/var/lib/opsdeck \
 && chmod 1777 /rootfs/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && echo 'opsdeck:x:10001:10001:opsdeck:/var/lib/opsdeck:/sbin/nologin' > /rootfs/etc/passwd \
 && echo 'opsdeck:x:10001:' > /rootfs/etc/group \
 && chown 10001:10001 /rootfs/var/lib/opsdeck

FROM scratch
COPY --from=build /rootfs/ /
COPY --from=build /opsdeck /usr/local/bin/opsdeck
USER 10001:10001
ENV OPSDECK_SERVER__LISTEN=0.0.0.0:8080 \
    OPSDECK_SERVER__DATA_DIR=/var/lib/opsdeck \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
VOLUME ["/var/lib/opsdeck"]
EXPOSE 8080
# `opsdeck healthcheck` asks this container's own server for /readyz (database reachable and
# migrated); the image has no curl or shell to do it otherwise.
HEALTHCHECK --interval=10s --timeout=6s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/opsdeck", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/opsdeck"]
CMD ["serve"]
