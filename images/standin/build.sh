#!/bin/sh
# Stand-in base images for a site that cannot pull the pinned bases of images/bases.env (no route to
# Docker Hub / ghcr.io / nvcr.io, an air-gapped cluster): built from Debian 12's packages only, with the
# same OS and Python as the real bases (python:3.11-slim-bookworm is Debian 12 + Python 3.11). `make
# base-images` runs this; `make images BASES=$OUT` then builds every image on them.
#
#   STANDIN_PREFIX  name prefix of the stand-ins (default sifthinker-standin; a registry such as
#                   127.0.0.1:5000/standin together with PUSH=1 pushes them there)
#   OUT             the bases file written, in bases.env's format (default work/bases.standin.env)
#   DEBIAN_MIRROR   Debian mirror for debootstrap and apt (default http://deb.debian.org/debian)
#   CA_BUNDLE       PEM file pip trusts inside the builds (a proxy's CA): see images/README.md
#   DOCKER          docker (default) or podman
#
# What the stand-ins are not: the CUDA base is Debian without CUDA (no nvcc, no CUDA libraries: the
# train image's Python layer builds and imports on it, its GPU kernels cannot run); PostgreSQL is
# Debian's 15, not 16. Needs root (debootstrap) and a container engine.
set -eu
DOCKER=${DOCKER:-docker}
PREFIX=${STANDIN_PREFIX:-sifthinker-standin}
OUT=${OUT:-work/bases.standin.env}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS=${ROOTFS_DIR:-work/standin-rootfs/bookworm}
HERE=$(dirname "$0")
UV_VERSION=$(sed -n 's/^UV_IMAGE=[^:]*:\([^@]*\).*/\1/p' "$HERE/../bases.env")
SECRET=""
if [ -n "${CA_BUNDLE:-}" ]; then SECRET="--secret id=ca-bundle,src=$CA_BUNDLE"; fi
build() { DOCKER_BUILDKIT=1 $DOCKER build --network host -q $SECRET "$@" >/dev/null; }

if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
  echo "debootstrap bookworm -> $ROOTFS"
  rm -rf "$ROOTFS"; mkdir -p "$ROOTFS"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOTFS" "$MIRROR" \
    > "$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log"; exit 1; }
  printf 'deb %s bookworm main\n' "$MIRROR" > "$ROOTFS/etc/apt/sources.list"
fi
debian=$PREFIX/debian:bookworm
echo "import $debian"
tar -C "$ROOTFS" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -c . | $DOCKER import - "$debian" >/dev/null
python=$PREFIX/python:3.11-slim-bookworm
echo "build $python"; build -f "$HERE/Dockerfile.python" --build-arg DEBIAN_BASE="$debian" -t "$python" "$HERE"
uv=$PREFIX/uv:$UV_VERSION
echo "build $uv"; build -f "$HERE/Dockerfile.uv" --build-arg PYTHON_BASE="$python" --build-arg UV_VERSION="$UV_VERSION" -t "$uv" "$HERE"
postgres=$PREFIX/postgres:16-bookworm-standin-pg15
echo "build $postgres"; build -f "$HERE/Dockerfile.postgres" --build-arg DEBIAN_BASE="$debian" -t "$postgres" "$HERE"
# No CUDA outside nvcr.io: the train image's stand-in base is Debian 12 itself (Python 3.11 for uv to find).
cuda=$PREFIX/cuda:13.0.2-devel-standin-no-cuda
echo "tag $cuda"; $DOCKER tag "$python" "$cuda"
if [ -n "${PUSH:-}" ]; then
  for ref in "$python" "$uv" "$postgres" "$cuda"; do echo "push $ref"; $DOCKER push -q "$ref" >/dev/null; done
fi
mkdir -p "$(dirname "$OUT")"
cat > "$OUT" <<ENV
# Stand-in bases written by images/standin/build.sh (Debian 12 packages, not the official images).
# Tags only: \`make pin-bases BASES=$OUT\` pins them by digest once they are in a registry.
PYTHON_BASE=$python
CUDA_DEVEL_BASE=$cuda
UV_IMAGE=$uv
POSTGRES_BASE=$postgres
ENV
echo "wrote $OUT"
