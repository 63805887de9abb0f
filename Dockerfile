# syntax=docker/dockerfile:1
#
# caremesh: one image with every binary. The command picks what runs:
#   docker run IMAGE auth-svc          (or messaging-svc, abe-authority-svc, records-svc, audit-svc)
#   docker run IMAGE caremesh migrate  (caremesh pki init | kek init | health | backup | restore)
#   docker run IMAGE carectl status
#   docker run IMAGE caremesh web      (the web app's HTTPS origin, app from /srv/web)
#
# Dependency caching without extra tools: the first build stage compiles only the dependencies
# (every manifest plus empty stub sources), so that layer is reused until Cargo.toml/Cargo.lock
# change; BuildKit cache mounts keep the registry and incremental artifacts between builds.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Symbols stripped from the release binaries (about 40 MB of the image); logs and traces are
# unaffected, panics (which library crates deny) print unnamed frames.
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0 CARGO_PROFILE_RELEASE_STRIP=symbols
# blst (the ABE pairing library) needs a C compiler, webauthn-rs (passkeys) the OpenSSL headers
# (distroless/cc carries libssl3 at run time); protobuf is compiled by protox (no protoc).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

# 1. Dependencies, cargo-chef style without the tool: a planner stage reduces the workspace to
#    its manifests plus stub sources; copying that recipe is a cache hit until a manifest or the
#    lock file changes, so the crates.io graph is compiled once.
FROM build AS planner
COPY . .
RUN set -eux; \
    mkdir -p /recipe; \
    cp -r .cargo /recipe/.cargo; \
    for manifest in Cargo.toml Cargo.lock proto/Cargo.toml */Cargo.toml crates/*/Cargo.toml; do \
      mkdir -p "/recipe/$(dirname "$manifest")"; cp "$manifest" "/recipe/$manifest"; \
    done; \
    cd /recipe; \
    for manifest in proto/Cargo.toml */Cargo.toml crates/*/Cargo.toml; do \
      dir=$(dirname "$manifest"); mkdir -p "$dir/src" "$dir/benches"; \
      echo 'fn main() {}' > "$dir/src/main.rs"; touch "$dir/src/lib.rs"; \
      for bench in $(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | tail -n +2); do echo 'fn main() {}' > "$dir/benches/$bench.rs"; done; \
    done

FROM build AS deps
COPY --from=planner /recipe/ ./
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo fetch --locked \
 && (cargo build --release --locked --workspace --exclude caremesh-proto || true)

# 2. The sources: only the workspace's own crates are rebuilt.
FROM deps AS binaries
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    set -eux; \
    find . -path ./target -prune -o -name '*.rs' -print0 | xargs -0 touch; \
    cargo build --release --locked \
      --bin caremesh --bin carectl \
      --bin auth-svc --bin messaging-svc --bin abe-authority-svc --bin records-svc --bin audit-svc; \
    mkdir -p /out/bin /out/empty; \
    for bin in caremesh carectl auth-svc messaging-svc abe-authority-svc records-svc audit-svc; do \
      cp "target/release/$bin" /out/bin/; \
    done

# 3. Runtime: glibc, libssl and CA roots only, no shell, non-root (uid 65532). The web app is the
#    committed build in web/dist (CI checks that it matches its source), served by `caremesh web`
#    from /srv/web (CAREMESH_WEB_ROOT).
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=binaries /out/bin/ /usr/local/bin/
COPY web/dist/ /srv/web/
# Mount points owned by the runtime user: a fresh named volume takes this ownership.
COPY --from=binaries --chown=65532:65532 /out/empty/ /data/
COPY --from=binaries --chown=65532:65532 /out/empty/ /pki/
COPY --from=binaries --chown=65532:65532 /out/empty/ /secrets/
USER 65532:65532
WORKDIR /data
ENV CAREMESH_DATA_DIR=/data \
    CAREMESH_LOG_FORMAT=json \
    CAREMESH_WEB_ROOT=/srv/web
EXPOSE 8443 50051 50052 50053 50054 50055 50151 50152 50153 50154 50155
ENTRYPOINT []
CMD ["caremesh", "--help"]
