#!/bin/sh
# Makes a local stand-in for the official python:3.11-slim image, for building the Dockerfile
# where Docker Hub cannot be reached: Debian bookworm (debootstrap --variant=minbase) with its
# python3 (3.11) and python3-venv, imported as the image named by $1. Needs root, debootstrap
# and a Debian mirror (DEBIAN_MIRROR, default deb.debian.org). The host's CA bundle replaces the
# image's, and pip is pointed at it, so that pip in `docker build` trusts what the host trusts (a
# TLS-inspecting proxy's CA, for one): this image stands in for the base on this machine only.
set -eu
tag=$1
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d "${TMPDIR:-/tmp}/imgopt-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >&2
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/var/log/apt/*
bundle=/etc/ssl/certs/ca-certificates.crt
if [ -f "$bundle" ]; then
    cp "$bundle" "$root$bundle"
fi
# python:3.11-slim's interpreter is `python`; Debian's is `python3` only.
ln -sf python3 "$root"/usr/bin/python
tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV PIP_CERT=$bundle SSL_CERT_FILE=$bundle" \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
