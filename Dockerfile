# kvcpu-dev in a container: /dev/kvcpu0 inside the container, served by
# `kvcpu-dev --mock --foreground` through the FUSE-file fallback (a container
# has no CUSE of its own).  See docs/containers.md.
#
#   scripts/docker-image.sh                       # once: kvcpu-dev-base:local
#   docker build -t kvcpu-dev .
#   docker run -d --name kvcpu --device /dev/fuse --cap-add SYS_ADMIN kvcpu-dev
#   docker exec kvcpu kvctl telemetry
#
# `--target client` builds the same install without the daemon's entry
# point: a client of a device the host hands in through CDI
# (`kvcpu-dev --mock --cdi` on the host; docs/containers.md).
#
# With /dev/cuse passed in (untested: no CUSE host here) the daemon makes the
# node itself; the device cgroup must allow it (docs/containers.md, "CUSE hosts").
# On AppArmor hosts add --security-opt apparmor=unconfined (docker-default denies mount).
#
# BASE is any Debian bookworm (or later) image.  The default,
# kvcpu-dev-base:local, is built without a registry by scripts/docker-image.sh
# and already holds every package below, so the apt step is skipped and the
# build needs no network at all.  With a registry:
#
#   docker build --build-arg BASE=debian:bookworm-slim -t kvcpu-dev .
#
# installs them with apt-get (Debian's packages only: nothing from PyPI).
ARG BASE=kvcpu-dev-base:local
FROM ${BASE} AS client

# Build: gcc, headers and cffi for the libfuse3 binding.  Run: fuse3, trio,
# click, numpy.  Test (the live suite inside the container): pytest,
# hypothesis.  bookworm ships cffi 1.15, trio 0.22, click 8.1, numpy 1.24.
ARG PACKAGES="python3 python3-venv python3-dev gcc libc6-dev pkg-config \
    fuse3 libfuse3-dev python3-cffi python3-setuptools python3-wheel \
    python3-trio python3-click python3-numpy python3-pytest python3-hypothesis \
    python3-prometheus-client python3-rich \
    procps"
RUN set -eu; \
    missing=$(for p in $PACKAGES; do \
        dpkg-query -W -f '${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"; \
    done); \
    if [ -n "$missing" ]; then \
        echo "installing from Debian: $missing"; \
        apt-get update -qq; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; \
        rm -rf /var/lib/apt/lists/*; \
    fi

# A venv on top of Debian's site-packages: the dependencies come from the
# packages above and pip (python3-venv's bundled wheel) installs only the
# project, offline: --no-index --no-deps --no-build-isolation.
ENV VIRTUAL_ENV=/opt/kvcpu-dev \
    PATH=/opt/kvcpu-dev/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN python3 -m venv --system-site-packages "$VIRTUAL_ENV"

# The checkout goes to /src/kvcpu-dev.  After the install its Python
# packages are removed from there, so that the tests, uapi/ (the C header for
# gcc -I) and scripts that stay behind use the installed package, with its
# compiled libfuse3 binding, even when run from this directory.
WORKDIR /src/kvcpu-dev
COPY . .
RUN pip install --no-index --no-deps --no-build-isolation --no-cache-dir -q . \
    && rm -rf build ./*.egg-info kvcpu_dev kvctl \
    && cd / && kvcpu-dev --version && python3 -c 'import kvcpu_dev.native._fuse, kvcpu_dev.model._hints'

# The client image (`--target client`): kvctl and the Python client and no
# daemon, for a container given a host's device through CDI:
#   podman run --device kvcpu.dev/device=kvcpu0 kvcpu-client kvctl telemetry
CMD ["kvctl", "telemetry"]

# The default image: the daemon in the container.
FROM client AS kvcpu-dev

# Healthy once the node answers KV_CPU_GET_TELEMETRY (kvctl opens
# $KVCPU_DEVICE or /dev/kvcpu0).  The daemon publishes the node only when it
# is ready, so this never reports healthy early.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["kvctl", "telemetry", "--json"]

# SIGTERM (docker stop) unmounts, removes the node and exits 0, logging
# "kvcpu0 stopped (...)".  The daemon is PID 1 and handles it itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["kvcpu-dev", "--mock", "--foreground"]
CMD []
