#!/usr/bin/env bash
# The demo: installs what is missing, builds Ferry, brings up the one-machine lab (real
# OVN/OVS, Ferry's API server, controllers and two node agents, VPCs with overlapping
# CIDRs, pods, a bare-metal-like host, a VNicIP, an outside client, the seed manifest and
# one service per scenario) and runs every check with real traffic. The lab keeps running.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -p ferry
# Where cargo put it: a CARGO_TARGET_DIR set in the environment moves target/.
FERRY=${CARGO_TARGET_DIR:-./target}/release/ferry
DIR=${FERRY_LAB_DIR:-.ferry-lab}
$FERRY lab down --dir "$DIR" >/dev/null 2>&1 || true
$FERRY lab up --dir "$DIR"
$FERRY lab check --dir "$DIR"
# The lab's kubeconfig, whether FERRY_LAB_DIR is absolute or relative.
case $DIR in /*) KC=$DIR/ferry/kubeconfig ;; *) KC=$PWD/$DIR/ferry/kubeconfig ;; esac
cat <<EOT

The lab is still running. Try:
  export KUBECONFIG=$KC
  kubectl get ysvc,np,pods -o wide        # services, probes, pods with their addresses
  $FERRY lab status --dir $DIR            # hosts and scenarios
  $FERRY lab exec --dir $DIR client-vpc1 -- curl -s http://10.96.0.10/     # scenario 1
  $FERRY lab exec --dir $DIR ext-client -- curl -s http://198.18.0.101/    # scenario 4
  $FERRY lab exec --dir $DIR client-vpc1 -- iperf3 -c \$(kubectl get ysvc ysvc1 -o jsonpath='{.status.clusterIP}') -p 5001
Stop it with: $FERRY lab down --dir $DIR
EOT
