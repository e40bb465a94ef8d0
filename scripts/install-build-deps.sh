#!/usr/bin/env bash
# Installs what building the workspace needs, with apt-get on Debian/Ubuntu when
# something is missing: cmake, a C++ compiler and libclang (llama.cpp, crate llama-cpp-2),
# and the desktop app's system libraries (Tauri 2 on Linux: WebKitGTK 4.1, libsoup 3,
# librsvg, libxdo; D-Bus for the keychain), per Tauri's "Prerequisites" page.
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q libclang; then
  missing+=(libclang-dev clang)
fi
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in libwebkit2gtk-4.1-dev libsoup-3.0-dev libjavascriptcoregtk-4.1-dev librsvg2-dev libxdo-dev libssl-dev libdbus-1-dev file; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "installing build dependencies: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "please install: ${missing[*]} (needed to build llama.cpp and the desktop app)" >&2
  exit 1
fi
