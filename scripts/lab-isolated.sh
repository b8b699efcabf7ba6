#!/usr/bin/env bash
# Runs a command (default: an interactive shell) in private mount and network namespaces,
# with fresh /run/netns and /etc/netns, so a lab started there (`ferry lab up`) cannot
# collide with another lab on the same machine: lab host namespaces have fixed names
# (ferry-NAME) and the lab's API server a fixed port; a private bpffs at /sys/fs/bpf. Everything the command starts stays
# inside; `ferry lab down` inside removes it as usual. No network inside but loopback.
#
#   scripts/lab-isolated.sh sh -c 'ferry lab up --dir /tmp/lab && ferry lab check --dir /tmp/lab; ferry lab down --dir /tmp/lab'
#
# To enter a lab that is still running: nsenter -t "$(cat DIR/ferry.pid)" -m -n CMD...
set -euo pipefail
if [ "${FERRY_LAB_ISOLATED:-}" != 1 ]; then
  exec unshare --mount --net --propagation private env FERRY_LAB_ISOLATED=1 "$0" "$@"
fi
ip link set lo up
mkdir -p /run/netns
mount -t tmpfs ferry-netns /run/netns
mkdir -p /etc/netns
mount -t tmpfs ferry-etc-netns /etc/netns
# A bpffs of the lab's own: the agents pin their socket LB there (it outlives an agent's
# kill -9), and it goes away with the namespace.
mount -t bpf ferry-bpffs /sys/fs/bpf 2>/dev/null || echo "lab-isolated: no bpffs; socket LB not pinned" >&2
if [ $# -eq 0 ]; then
  exec "${SHELL:-bash}"
fi
exec "$@"
