# Multi-stage build: compile in the Rust image, run from a small Debian image as a non-root user.
#   docker build -t signalbox .
#   docker run -d --name signalbox --network host -v signalbox-certs:/srv/signalbox/certs \
#     -e SIGNALBOX_PUBLIC_HOST=calls.example.com signalbox
# Host networking: the TURN relay hands out ports from a range (49152-65535/udp by default),
# which is impractical to publish one by one.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
# The Socket.IO client build is compiled into the binary.
COPY public/vendor ./public/vendor
RUN cargo build --release --locked --bin signalbox

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /srv/signalbox --shell /usr/sbin/nologin signalbox \
 && mkdir -p /srv/signalbox/certs /srv/signalbox/run \
 && chown signalbox:signalbox /srv/signalbox/certs /srv/signalbox/run
COPY --from=build /src/target/release/signalbox /usr/local/bin/signalbox
# The one capability needed to bind ports below 1024 (443) as the non-root user.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && setcap cap_net_bind_service=+ep /usr/local/bin/signalbox \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
COPY public /srv/signalbox/public
COPY config.toml /srv/signalbox/config.toml
# The image's files stay root-owned; the server writes only certs/ and run/ (the pid file that
# `docker exec signalbox signalbox reload` reads; `docker kill -s HUP signalbox` works too).
RUN sed -i 's|^pid_file = .*|pid_file = "run/signalbox.pid"|' /srv/signalbox/config.toml \
 && grep -q '^pid_file = "run/signalbox.pid"' /srv/signalbox/config.toml
WORKDIR /srv/signalbox
USER signalbox
# HTTPS (web app + signaling), STUN/TURN over UDP and TCP, TURN over TLS, the relay port range;
# 443/tcp and 443/udp for the one-port layout.
EXPOSE 8443/tcp 443/tcp 443/udp 3478/udp 3478/tcp 5349/tcp 49152-65535/udp
ENTRYPOINT ["/usr/local/bin/signalbox", "--config", "/srv/signalbox/config.toml"]
