# The comfy-batch container image (examples/ci/k8s-indexed-job.yaml runs it;
# the release workflow publishes it). Two stages: build the binary, then a
# small runtime image with only the binary, CA certificates (for https
# servers) and an unprivileged user.
#   docker build -t registry.example/comfy-batch:0.1.0 .

# A named Rust release (the one the tests run on; at least Cargo.toml's
# rust-version), on the runtime's Debian release: the binary links its glibc.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# .git is in the context (.dockerignore) and this image has git, so
# --version names the commit.
RUN cargo build --locked --release \
    && cp target/release/comfy-batch /usr/local/bin/comfy-batch

FROM debian:bookworm-slim
# Unpinned: the distribution's current CA bundle is the point.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/comfy comfy
COPY --from=build /usr/local/bin/comfy-batch /usr/local/bin/comfy-batch
USER 10001
WORKDIR /home/comfy
ENTRYPOINT ["comfy-batch"]
CMD ["--help"]
