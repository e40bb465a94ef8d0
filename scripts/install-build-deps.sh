#!/usr/bin/env bash
# Installs what building the workspace needs, by Debian package name: each package is
# checked with `dpkg-query` and the missing ones are installed with apt-get, never guessed
# from file names (a `libclang-cpp*.so` from `libclang-cpp14` is clang's C++ library, not
# libclang, and once made a fresh machine skip libclang).
#   - llama.cpp (crate llama-cpp-2): cmake, a C++ compiler, pkg-config, and libclang for
#     bindgen (`libclang-dev`, which brings clang's builtin headers; `clang` as well);
#   - the desktop app (Tauri 2 on Linux, per Tauri's "Prerequisites" page): WebKitGTK 4.1,
#     libsoup 3, JavaScriptCore, librsvg, libxdo, OpenSSL, D-Bus (the keychain), `file`.
# On a system without dpkg/apt-get it prints what to install and fails.
set -euo pipefail
packages=(
  cmake g++ pkg-config libclang-dev clang
  libwebkit2gtk-4.1-dev libsoup-3.0-dev libjavascriptcoregtk-4.1-dev librsvg2-dev
  libxdo-dev libssl-dev libdbus-1-dev file
)
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "not a Debian/Ubuntu system: please install the equivalents of: ${packages[*]}" >&2
  echo "(cmake, a C++ compiler and libclang build llama.cpp; WebKitGTK 4.1 and the rest build the desktop app)" >&2
  exit 1
fi
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "build dependencies present: ${packages[*]}"
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing build dependencies (Debian packages): ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for pkg in "${missing[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || { echo "apt-get did not install $pkg" >&2; exit 1; }
done
echo "build dependencies installed: ${missing[*]}"
