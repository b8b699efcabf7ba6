#!/usr/bin/env bash
# Builds Ferry's OCI image without Docker, from Debian's packages, reproducibly:
#   layer 1: a Debian bookworm root file system made by mmdebstrap from the configured
#            Debian mirror (minbase + the OVS/OVN userspace tools the agent runs:
#            ovs-vsctl, ovs-appctl, ovn-nbctl/-sbctl, ip, ethtool);
#   layer 2: the `ferry` binary at /usr/local/bin/ferry.
# umoci assembles the OCI layout; podman (via skopeo) gets it as localhost/ferry:TAG.
#
# Reproducible: every timestamp is SOURCE_DATE_EPOCH (default: this script's last commit),
# tar members are sorted with numeric owners, gzip carries no name or time. Two builds
# from the same binary and the same mirror state give the same image digest; a Debian
# point release or security update changes layer 1 (pin a snapshot mirror with
# FERRY_IMAGE_MIRROR to rebuild an old image bit for bit).
#
# Usage: scripts/image.sh [--binary PATH] [--tag TAG] [--out DIR] [--no-load] [--rebuild-base]
#   --binary  the ferry binary (default: target/release/ferry, built if missing)
#   --out     work and output directory (default: target/image); DIR/oci is the OCI layout,
#             DIR/base-*.tar caches layer 1 by its inputs
#   --no-load do not copy the image into podman's storage
# Prints the image digest (sha256 of the manifest) on the last line. Needs root.
set -euo pipefail

binary="" tag="dev" out="" load=1 rebuild_base=0
while (($#)); do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --no-load) load=0; shift ;;
    --rebuild-base) rebuild_base=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# Paths given relative to where we were called from stay valid after the cd.
[ -z "$binary" ] || binary="$(realpath "$binary")"
[ -z "$out" ] || { mkdir -p "$out" && out="$(realpath "$out")"; }
cd "$(dirname "$0")/.."
out="${out:-$PWD/target/image}"
mkdir -p "$out"

for tool in mmdebstrap umoci skopeo; do
  command -v "$tool" >/dev/null || { echo "image.sh: $tool not found (scripts/setup.sh installs it)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "image.sh: run as root (mmdebstrap root mode, podman storage)" >&2; exit 1; }

if [ -z "$binary" ]; then
  binary=target/release/ferry
  [ -x "$binary" ] || cargo build --release -p ferry
fi
[ -x "$binary" ] || { echo "image.sh: $binary is not an executable" >&2; exit 1; }

# Default: the time of the last commit of this script, so that the cached Debian layer
# stays valid across commits of the code.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct -- scripts/image.sh 2>/dev/null || true)}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"
created="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
suite=bookworm
# The mirror apt uses here (deb.debian.org unless set).
mirror="${FERRY_IMAGE_MIRROR:-$( { grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true; } \
  | head -1 | awk '{print $2}')}"
mirror="${mirror:-http://deb.debian.org/debian}"
packages=openvswitch-switch,ovn-common,iproute2,ethtool,ca-certificates
start=$(date +%s)

# --- layer 1: Debian ---------------------------------------------------------------
key="$(printf '%s\n' "$suite" "$mirror" "$packages" "$SOURCE_DATE_EPOCH" | sha256sum | cut -c1-16)"
base="$out/base-$key.tar"
if [ "$rebuild_base" = 1 ] || [ ! -s "$base" ]; then
  echo "image.sh: mmdebstrap $suite from $mirror (+ $packages)" >&2
  # Documentation, manuals and locales are left out; the apt lists and caches, the
  # machine id and logs are cleaned by mmdebstrap so they do not vary between builds.
  mmdebstrap --quiet --format=tar --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -f "$1"/var/log/*.log "$1"/var/log/apt/* "$1"/var/cache/ldconfig/aux-cache' \
    --customize-hook='rm -rf "$1"/etc/openvswitch/* "$1"/var/lib/openvswitch/*' \
    "$suite" "$base.partial" "$mirror" >&2
  mv "$base.partial" "$base"
fi

# --- layer 2: ferry ----------------------------------------------------------------
stage="$out/ferry-layer"
rm -rf "$stage" && mkdir -p "$stage/usr/local/bin"
install -m 0755 "$binary" "$stage/usr/local/bin/ferry"
strip --strip-debug "$stage/usr/local/bin/ferry" 2>/dev/null || true
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --owner=0 --group=0 --numeric-owner \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$stage" -cf "$out/ferry-layer.tar" usr

# --- OCI layout --------------------------------------------------------------------
oci="$out/oci"
rm -rf "$oci"
umoci init --layout "$oci"
umoci new --image "$oci:$tag"
hist=(--history.created="$created" --history.author=ferry)
umoci raw add-layer --image "$oci:$tag" "${hist[@]}" --history.created_by="mmdebstrap $suite $packages" "$base"
umoci raw add-layer --image "$oci:$tag" "${hist[@]}" --history.created_by="ferry binary" "$out/ferry-layer.tar"
umoci config --image "$oci:$tag" "${hist[@]}" --history.created_by="ferry image config" \
  --created="$created" --author=ferry \
  --config.env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.entrypoint=/usr/local/bin/ferry --config.cmd=--help \
  --config.label=org.opencontainers.image.title=ferry \
  --config.label=org.opencontainers.image.created="$created"
umoci gc --layout "$oci"

# The tag's manifest digest, from the layout's index.
digest="$(python3 -c '
import json, sys
idx = json.load(open(sys.argv[1] + "/index.json"))
for m in idx["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["digest"]); break
' "$oci" "$tag")"
size=$(du -sb "$oci/blobs" | cut -f1)

if [ "$load" = 1 ]; then
  skopeo copy --quiet "oci:$oci:$tag" "containers-storage:localhost/ferry:$tag" >&2
fi
echo "image.sh: localhost/ferry:$tag, $((size / 1024 / 1024)) MiB compressed, built in $(( $(date +%s) - start )) s" >&2
echo "$digest"
