#!/bin/sh
# deploy/docker/make-base-image.sh [ENGINE]: Debian 12 base images made from
# Debian's own packages, for a machine that can reach a Debian mirror but no
# container registry: debootstrap (minbase) into a temporary directory, then
# `ENGINE import` as localhost/debian:bookworm and localhost/debian:bookworm-slim
# (the two bases deploy/docker/Dockerfile names; the same image twice).
# ENGINE: podman (default) or docker.  Needs root (debootstrap) and, with the
# default MIRROR=http://deb.debian.org/debian, a few minutes.
set -eu
ENGINE=${1:-podman}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
dir=$(mktemp -d /var/tmp/vflclip-rootfs.XXXXXX)
trap 'rm -rf "$dir"' EXIT
debootstrap --variant=minbase bookworm "$dir/rootfs" "$MIRROR"
rm -rf "$dir"/rootfs/var/cache/apt/archives/*.deb "$dir"/rootfs/var/lib/apt/lists/*
tar -C "$dir/rootfs" -c . | "$ENGINE" import --change 'CMD ["/bin/bash"]' - localhost/debian:bookworm
"$ENGINE" tag localhost/debian:bookworm localhost/debian:bookworm-slim
echo "make-base-image: localhost/debian:bookworm and localhost/debian:bookworm-slim"
