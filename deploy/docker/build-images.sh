#!/bin/sh
# Build the images where no image registry is reachable (air-gapped, or behind a proxy that only lets
# package registries through): make the base image from Debian's packages with mmdebstrap, `docker
# import` it, then build the Dockerfile's targets on it. `make image` runs this.
#
#   deploy/docker/build-images.sh [TARGET...]          default targets: runtime demo
#
# Environment:
#   BASE_IMAGE    tag of the base image (default inception-v2-base:bookworm); made only if missing
#   DEBIAN_MIRROR Debian mirror for mmdebstrap (default http://deb.debian.org/debian)
#   CA_CERTS      PEM certificates (*.crt) the build and the images must trust, e.g. a TLS-inspecting
#                 proxy's CA; default: those this host added to /usr/local/share/ca-certificates.
#                 They are copied into deploy/docker/certs/ (git ignores them). CA_CERTS= adds none.
#   IMAGE         image name (default inception-v2-service); target T is tagged IMAGE:T
#   DOCKER        docker command (default docker); needs BuildKit, built into Docker 20.10+
# Any other `docker build` options go in BUILD_ARGS, e.g. BUILD_ARGS="--build-arg DEMO_EPOCHS=1".
set -eu
cd "$(dirname "$0")/../.."
BASE_IMAGE="${BASE_IMAGE:-inception-v2-base:bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
IMAGE="${IMAGE:-inception-v2-service}"
DOCKER="${DOCKER:-docker}"
CA_CERTS="${CA_CERTS-$(ls /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)}"
BUILD_ARGS="${BUILD_ARGS:-}"
[ $# -gt 0 ] || set -- runtime demo

if ! $DOCKER image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "Making $BASE_IMAGE from Debian bookworm (Python 3.11) with mmdebstrap" >&2
    security="$(dirname "$DEBIAN_MIRROR")/debian-security"
    # minbase: essential packages and apt; docs, man pages and translations are left out.
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm - "deb $DEBIAN_MIRROR bookworm main" "deb $DEBIAN_MIRROR bookworm-updates main" \
        "deb $security bookworm-security main" |
        $DOCKER import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["python3"]' \
            --message "Debian bookworm minbase with python3, python3-venv, ca-certificates (mmdebstrap)" \
            - "$BASE_IMAGE"
fi

for cert in $CA_CERTS; do
    cp "$cert" deploy/docker/certs/
done

for target in "$@"; do
    echo "Building $IMAGE:$target" >&2
    # shellcheck disable=SC2086 # BUILD_ARGS holds several options
    DOCKER_BUILDKIT=1 $DOCKER build --build-arg BASE_IMAGE="$BASE_IMAGE" --target "$target" \
        --tag "$IMAGE:$target" $BUILD_ARGS .
done
