#!/usr/bin/env bash
# Installs what building the workspace needs, by Debian package name
# (scripts/ensure-debian-packages.sh: each package is checked with `dpkg-query` and the
# missing ones are installed with apt-get, never guessed from file names: a
# `libclang-cpp*.so` from `libclang-cpp14` is clang's C++ library, not libclang, and once
# made a fresh machine skip libclang).
#   - llama.cpp (crate llama-cpp-2): cmake, a C++ compiler, pkg-config, and libclang for
#     bindgen (`libclang-dev`, which brings clang's builtin headers; `clang` as well);
#   - the desktop app (Tauri 2 on Linux, per Tauri's "Prerequisites" page): WebKitGTK 4.1,
#     libsoup 3, JavaScriptCore, librsvg, libxdo, OpenSSL, D-Bus (the keychain and desktop
#     notifications), `file`, and the tray icon's libayatana-appindicator (loaded at run
#     time: without it the app has no tray icon).
# On a system without dpkg/apt-get it prints what to install and fails.
# scripts/check-fresh-machine.sh proves it on a clean Debian root file system.
set -euo pipefail
exec bash "$(dirname "$0")/ensure-debian-packages.sh" \
  "build dependencies: llama.cpp and the desktop app" \
  cmake g++ pkg-config libclang-dev clang \
  libwebkit2gtk-4.1-dev libsoup-3.0-dev libjavascriptcoregtk-4.1-dev librsvg2-dev \
  libxdo-dev libssl-dev libdbus-1-dev libayatana-appindicator3-dev file
