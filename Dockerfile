# compute_ctl on Debian with PostgreSQL 15. The build steps are .ci/run's.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin compute_ctl

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/compute_ctl /usr/local/bin/compute_ctl
ENV PATH="/usr/lib/postgresql/15/bin:${PATH}"
# compute_ctl runs as root and runs Postgres as the `postgres` user (--pg-user).
RUN mkdir -p /var/db/postgres && chown postgres:postgres /var/db/postgres
EXPOSE 3080
ENTRYPOINT ["compute_ctl"]
# The API listens beyond loopback, so it needs keys (compute_ctl refuses to start without):
# mount the control plane's Ed25519 public key (PEM) at /etc/compute_ctl/auth.pem, e.g.
#   docker run -v $PWD/auth.pem:/etc/compute_ctl/auth.pem:ro IMAGE
# or replace the command: `-S FILE` whose envelope has compute_ctl_config.jwks (drop
# --auth-public-key then), or --insecure-http to serve it unauthenticated on purpose.
CMD ["-D", "/var/db/postgres/compute", "--http-addr", "0.0.0.0:3080", \
     "--auth-public-key", "/etc/compute_ctl/auth.pem"]
