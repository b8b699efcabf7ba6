#!/usr/bin/env bash
# Figures for Kubernetes Services and the cluster DNS, against a running lab
# (`ferry lab up --dir DIR`): Service created -> reachable by ClusterIP from a default-VPC
# pod (p50/p99 over N Services), Service deleted -> its load balancers gone from the NB, DNS
# answer latency and QPS from one pod, and OVN rows per Service of each type.
# Prints a table and writes JSON (--out FILE). Usage: scripts/bench-services.sh [DIR] [N]
set -euo pipefail
DIR=${1:-.ferry-lab}
N=${2:-20}
OUT=${OUT:-/dev/null}
export KUBECONFIG="$DIR/ferry/kubeconfig"
NB="unix:$DIR/ferry/ovn/run/nb.sock"
CLIENT=ferry-client-default
now_ms() { date +%s%3N; }

create_ms=()
delete_ms=()
for i in $(seq 1 "$N"); do
  name="bench-svc-$i"
  t0=$(now_ms)
  kubectl create service clusterip "$name" --tcp=80:8080 -o name >/dev/null
  kubectl set selector "service/$name" app=k8s-web >/dev/null
  ip=$(kubectl get svc "$name" -o jsonpath='{.spec.clusterIP}')
  until ip netns exec $CLIENT curl -s -m 1 "http://$ip/" >/dev/null 2>&1; do sleep 0.02; done
  create_ms+=($(( $(now_ms) - t0 )))
done
for i in $(seq 1 "$N"); do
  name="bench-svc-$i"
  t0=$(now_ms)
  kubectl delete service "$name" --wait=false >/dev/null
  while ovn-nbctl --db="$NB" --bare --columns=name find Load_Balancer "name=ferry-svc-default-$name-cip-ovn-cluster-tcp" | grep -q .; do sleep 0.01; done
  delete_ms+=($(( $(now_ms) - t0 )))
done

dns=$(ip netns exec $CLIENT python3 - <<'EOF'
import socket, struct, time, random, json
def query(name):
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for part in name.split("."):
        q += bytes([len(part)]) + part.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
lat, fails = [], 0
start = time.perf_counter()
for _ in range(2000):
    t = time.perf_counter()
    s.sendto(query("k8s-web.default.svc.cluster.local"), ("10.96.0.53", 53))
    try:
        s.recv(512)
        lat.append((time.perf_counter() - t) * 1000)
    except socket.timeout:
        fails += 1
total = time.perf_counter() - start
lat.sort()
print(json.dumps({"queries": 2000, "timeouts": fails, "qps": round(len(lat) / total),
                  "p50_ms": round(lat[len(lat) // 2], 3), "p99_ms": round(lat[int(len(lat) * 0.99)], 3)}))
EOF
)

rows() {  # Load_Balancer rows owned by a Service
  ovn-nbctl --db="$NB" --bare --columns=name find Load_Balancer | grep -c "^ferry-svc-default-$1-" || true
}
pct() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {p50=a[int((NR+1)/2)]; i=int(NR*0.99+0.999); if(i<1)i=1; print p50, a[i]}'; }
read -r c50 c99 < <(pct "${create_ms[@]}")
read -r d50 d99 < <(pct "${delete_ms[@]}")
json=$(cat <<EOF
{"services": $N, "create_to_reachable_ms": {"p50": $c50, "p99": $c99},
 "delete_to_rows_gone_ms": {"p50": $d50, "p99": $d99}, "dns": $dns,
 "lb_rows_per_service": {"ClusterIP": $(rows k8s-web), "NodePort": $(rows k8s-np),
   "LoadBalancer": $(rows k8s-lb), "UDP": $(rows k8s-udp), "headless": $(rows k8s-headless),
   "ExternalName": $(rows k8s-ext)}}
EOF
)
echo "$json" > "$OUT"
python3 - "$json" <<'EOF'
import json, sys
j = json.loads(sys.argv[1])
print(f"{'figure':44} value")
print(f"{'Service created -> reachable (ms) p50/p99':44} {j['create_to_reachable_ms']['p50']} / {j['create_to_reachable_ms']['p99']}  (n={j['services']})")
print(f"{'Service deleted -> LB rows gone (ms) p50/p99':44} {j['delete_to_rows_gone_ms']['p50']} / {j['delete_to_rows_gone_ms']['p99']}")
d = j["dns"]
print(f"{'DNS from one pod: p50/p99 ms, QPS':44} {d['p50_ms']} / {d['p99_ms']}, {d['qps']} ({d['timeouts']} timeouts of {d['queries']})")
print(f"{'Load_Balancer rows per Service':44} " + ", ".join(f"{k} {v}" for k, v in j["lb_rows_per_service"].items()))
print(json.dumps(j))
EOF
