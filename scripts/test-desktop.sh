#!/usr/bin/env bash
# The real desktop window: builds the editor and the app with the editor embedded
# (`custom-protocol`, as `tauri build` does), then drives the window with tauri-driver
# and WebKitWebDriver under Xvfb (ui/e2e-desktop/window.mjs). The screenshot lands in
# target/desktop-e2e/window.png. It runs in its own D-Bus session bus (dbus-run-session),
# where tests/servers/notification_server.py receives the app's desktop notifications.
# Installs webkit2gtk-driver, xvfb, imagemagick, dbus-daemon, python3-dbus and python3-gi
# with apt-get when missing (by package name), and tauri-driver with cargo into
# ~/.cache/nexus-ci-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-debian-packages.sh "the desktop window test" \
  webkit2gtk-driver xvfb xauth imagemagick dbus-daemon python3-dbus python3-gi
TOOLS="${NEXUS_TOOLS_DIR:-$HOME/.cache/nexus-ci-tools}"
if [ ! -x "$TOOLS/bin/tauri-driver" ]; then
  cargo install tauri-driver --version 2.0.6 --locked --root "$TOOLS"
fi
export PATH="$TOOLS/bin:$PATH"
(cd ui && npm install --no-audit --no-fund --loglevel=error && npx vite build --logLevel warn)
cargo build --workspace --features nexus-desktop/custom-protocol
export NEXUS_APP="${CARGO_TARGET_DIR:-$PWD/target}/debug/nexus-desktop"
dbus-run-session -- xvfb-run -a -s "-screen 0 1400x900x24" node ui/e2e-desktop/window.mjs
