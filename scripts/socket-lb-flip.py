#!/usr/bin/env python3
# Usage: socket-lb-flip.py KUBECONFIG FERRY_LOG PROBE VIP:PORT BACKENDS [ROUNDS]
# e.g. against `ferry lab up` (socket LB on):
#   scripts/socket-lb-flip.py .ferry-lab/ferry/kubeconfig .ferry-lab/ferry.log \
#       web-vpc1-pod-svc1-ep-2 10.96.0.10:80 5 10
# Probe flip -> socket LB map latency in a running lab: patches a NetworkProbe's status
# Unhealthy/Healthy through the API and reads when each agent's socket LB logged the
# change of the service's backend count (the log line is written after the map write).
import base64, datetime, http.client, json, re, ssl, sys, tempfile, time, urllib.parse
import yaml
kc_path, log_path, probe, vip, full = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 10
kc = yaml.safe_load(open(kc_path))
cluster = kc["clusters"][0]["cluster"]; user = kc["users"][0]["user"]
u = urllib.parse.urlparse(cluster["server"])
ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
ctx.check_hostname = False
conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx)
path = f"/apis/iaas.yusur.io/v1/namespaces/default/networkprobes/{probe}/status"
def patch(phase):
    body = json.dumps({"status": {"phase": phase}})
    t0 = time.time()
    conn.request("PATCH", path, body, {"Authorization": "Bearer " + user["token"], "Content-Type": "application/merge-patch+json"})
    r = conn.getresponse(); r.read()
    assert r.status == 200, r.status
    return t0, time.time()
ansi = re.compile(r"\x1b\[[0-9;]*m")
def wait_line(after, want, timeout=10):
    pat = f"{vip}/tcp -> {want} backends" if want else f"{vip}/tcp removed"
    deadline = time.time() + timeout
    while time.time() < deadline:
        hits = []
        for line in open(log_path, errors="replace"):
            line = ansi.sub("", line)
            if "socket LB programmed" in line and pat in line:
                ts = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
                if ts > after:
                    hits.append(ts)
        if len(hits) >= 2:
            return hits
        time.sleep(0.05)
    return hits
out = []
for i in range(rounds):
    t0, t1 = patch("Unhealthy")
    down = wait_line(t0, full - 1 if full > 1 else 0)
    time.sleep(0.5)
    b0, _ = patch("Healthy")
    up = wait_line(b0, full)
    out.append({"unhealthy_ms": [round((h - t0) * 1000, 1) for h in down], "healthy_ms": [round((h - b0) * 1000, 1) for h in up], "patch_ms": round((t1 - t0) * 1000, 1)})
    time.sleep(0.5)
for o in out:
    print(json.dumps(o))
allv = sorted(v for o in out for v in o["unhealthy_ms"] + o["healthy_ms"])
if allv:
    print(json.dumps({"n": len(allv), "p50_ms": allv[len(allv)//2], "max_ms": allv[-1], "min_ms": allv[0]}))
