#!/usr/bin/env bash
# Installs what Ferry's build, demo and tests need on a fresh Debian 12 machine:
# OVN/OVS from Debian, traffic tools, and checks for the Rust toolchain and kubectl.
# Safe to run again: apt skips what is installed.
set -euo pipefail

PACKAGES=(ovn-central ovn-host openvswitch-switch iperf3 sockperf wrk nginx-light
          ethtool iproute2 curl iptables nftables python3 clang-14 libbpf-dev procps dnsutils
          openvswitch-common  # ovs-pki: the OVN PKI of the TLS tests and `--ovn-tls`
          chromium chromium-driver  # the web page's browser test (ferry-ui)
          mmdebstrap umoci skopeo podman runc  # scripts/image.sh and its test
          containerd containernetworking-plugins busybox-static  # the CNI under containerd's CRI (crates/ferry/tests/cri_e2e.rs)
          etcd-server)  # the etcd-backed store (`--store etcd://...`) and its tests

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  # Debian starts packaged daemons on install; Ferry runs its own OVN/OVS in private
  # directories, so keep the system copies from starting while we install.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d; guard=1
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
  [ -z "$guard" ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust 1.95 with rustup" >&2; exit 1; }
command -v kubectl >/dev/null || echo "setup: note: kubectl not found; the kubectl compatibility tests need it" >&2
echo "setup: ok ($(cargo --version))"
