#!/usr/bin/env bash
# Builds the Trellis image from deploy/docker/Dockerfile, offline: the binaries are built
# here (release, or PROFILE=debug), and the root file system is staged from this machine:
# the binaries (debug info stripped), every shared library `ldd` says they load, a CA
# bundle, /etc/passwd and /etc/group naming the user 65532, an empty /tmp, and /data owned
# by that user.
#
#   deploy/docker/build-image.sh                 # trellis:latest
#   IMAGE=trellis:dev PROFILE=debug deploy/docker/build-image.sh
#   SKIP_BUILD=1 ...                             # binaries already built
#
# Prints the image's name and size.
set -euo pipefail

cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
PROFILE=${PROFILE:-release}
IMAGE=${IMAGE:-trellis:latest}

if [ -z "${SKIP_BUILD:-}" ]; then
  if [ "$PROFILE" = release ]; then
    cargo build --release --locked --bin trellis --bin trellisctl
  else
    cargo build --locked --bin trellis --bin trellisctl
  fi
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/rootfs
mkdir -p "$ROOT/etc/ssl/certs" "$ROOT/tmp" "$STAGE/data"
chmod 1777 "$ROOT/tmp"
for bin in trellis trellisctl; do
  install -m 0755 "$TARGET/$PROFILE/$bin" "$ROOT/$bin"
  # The release profile keeps line tables for profiling; the image needs none of that
  # (symbols stay, so backtraces still name functions). STRIP=0 keeps everything.
  if [ "${STRIP:-1}" != 0 ] && command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$ROOT/$bin"
  fi
  # The loader and the libraries (libc, libm, libgcc_s ...), at the paths the binary names.
  for lib in $(ldd "$TARGET/$PROFILE/$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
  done
done
# Roots for https:// task endpoints (connectors.ca_file can name another bundle).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/"
fi
printf 'root:x:0:0:root:/:/sbin/nologin\ntrellis:x:65532:65532:trellis:/data:/sbin/nologin\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\ntrellis:x:65532:\n' > "$ROOT/etc/group"
cp deploy/docker/Dockerfile "$STAGE/Dockerfile"

docker build -q -t "$IMAGE" "$STAGE" >/dev/null
SIZE=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "$IMAGE $((SIZE / 1024 / 1024)) MiB"
