#!/usr/bin/env bash
# The demo: builds Ferry, starts `ferry up` on the embedded API server, applies the seed
# manifest verbatim and shows the result; leaves Ferry running and says what to try next.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -p ferry
DIR=${FERRY_DEMO_DIR:-$PWD/.ferry-demo}
mkdir -p "$DIR"
if [ -f "$DIR/ferry.pid" ] && kill -0 "$(cat "$DIR/ferry.pid")" 2>/dev/null; then
  echo "demo: stopping the previous demo (pid $(cat "$DIR/ferry.pid"))"
  kill "$(cat "$DIR/ferry.pid")"; sleep 1
fi
rm -f "$DIR/kubeconfig"
./target/release/ferry up --data-dir "$DIR" --listen 127.0.0.1:6443 --no-dataplane --no-agent >"$DIR/ferry.log" 2>&1 &
echo $! >"$DIR/ferry.pid"
for _ in $(seq 50); do [ -f "$DIR/kubeconfig" ] && break; sleep 0.2; done
export KUBECONFIG=$DIR/kubeconfig
until kubectl get --raw /readyz >/dev/null 2>&1; do sleep 0.2; done
set -x
kubectl apply -f examples/ysvc1.yaml   # the seed manifest, verbatim
kubectl get ysvc
kubectl get crd
set +x
cat <<EOT

Ferry is running (pid $(cat "$DIR/ferry.pid"), log $DIR/ferry.log). Try:
  export KUBECONFIG=$DIR/kubeconfig
  kubectl get ysvc -w            # in another terminal, then change something:
  kubectl label ysvc ysvc1 team=net
  kubectl explain ysvc.spec
Stop it with: kill \$(cat $DIR/ferry.pid)
EOT
