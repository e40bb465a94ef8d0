#!/usr/bin/env bash
# Installs Debian packages by name when they are missing: each is checked with
# `dpkg-query` (never by guessing from file names, which once took `libclang-cpp14`'s
# library for libclang) and the missing ones are installed with apt-get, saying which and
# what for. Used by every install step of the scripts here.
#
#   scripts/ensure-debian-packages.sh [--with-recommends] "WHAT FOR" PACKAGE...
#
# Packages are installed without their recommended ones unless --with-recommends.
# Exits 0 once all are installed. Fails, naming the packages, on a system without
# dpkg/apt-get, or when apt-get did not install one of them.
set -euo pipefail
recommends=--no-install-recommends
if [ "${1:-}" = --with-recommends ]; then recommends=""; shift; fi
what="$1"
shift
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "not a Debian/Ubuntu system: please install the equivalents of: $* ($what)" >&2
  exit 1
fi
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for pkg in "$@"; do
  installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "present ($what): $*"
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing Debian packages ($what): ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $recommends "${missing[@]}" >/dev/null
for pkg in "${missing[@]}"; do
  installed "$pkg" || { echo "apt-get did not install $pkg ($what)" >&2; exit 1; }
done
echo "installed ($what): ${missing[*]}"
