#!/bin/sh
# A stand-in for the official python:3.11-slim-bookworm base, made from Debian's
# own packages, for building and testing the image where Docker Hub cannot be
# reached: Debian bookworm's python3 (3.11) with a venv at /usr/local, so that
# `python` and `pip` are in /usr/local/bin as in the official image.
#
#   tests/image/python-base.sh OUT.tar    (then: podman import OUT.tar NAME)
#
# Needs mmdebstrap and root. The packages come from this machine's apt sources
# for Debian (DEBIAN_SOURCES, by default the first of
# /etc/apt/sources.list.d/debian.sources and /etc/apt/sources.list that exists),
# or mmdebstrap's default mirror when there is none.
set -eu

out=${1:?usage: $0 OUT.tar}

sources=${DEBIAN_SOURCES:-}
if [ -z "$sources" ]; then
  for candidate in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$candidate" ]; then sources=$candidate; break; fi
  done
fi

# Documentation, manual pages and translations are left out, as in the official
# slim image; the venv's pip is the one Debian's python3-venv bundles.
mmdebstrap --variant=minbase --format=tar --quiet \
  --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='chroot "$1" python3 -m venv /usr/local' \
  bookworm "$out.tmp" ${sources:+"$sources"}
mv "$out.tmp" "$out"
