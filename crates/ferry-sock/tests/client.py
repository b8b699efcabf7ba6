# Test client for ferry-sock's root tests. It runs inside a network namespace and a
# cgroup v2 that the test created, talks to a service VIP with plain sockets and prints
# one JSON object per attempt, so the test sees what an application sees.
#
#   client.py tcp VIP PORT COUNT       connect, read the backend's label, getpeername
#   client.py udp VIP PORT COUNT       new unconnected socket per datagram: sendto, recvfrom
#   client.py udp1 VIP PORT COUNT      one unconnected socket for COUNT datagrams
#   client.py tcp6 / udp6 VIP PORT N    the same through AF_INET6 sockets (::ffff:VIP)
#   client.py hold VIP PORT            connect, report, wait for a line on stdin, then
#                                      getpeername again and exchange a line on the same socket
import json
import socket
import sys


def addr(a):
    return "%s:%d" % (a[0], a[1])


def family(vip):
    return socket.AF_INET6 if ":" in vip else socket.AF_INET


def tcp_once(vip, port):
    s = socket.socket(family(vip), socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((vip, port))
        f = s.makefile("r")
        label = f.readline().strip()
        return {"backend": label, "peer": addr(s.getpeername())}, s, f
    except OSError as e:
        s.close()
        return {"error": e.strerror or str(e), "errno": e.errno}, None, None


def udp_exchange(s, vip, port):
    try:
        s.sendto(b"hello\n", (vip, port))
        data, frm = s.recvfrom(512)
        return {"backend": data.decode().strip(), "from": addr(frm)}
    except OSError as e:
        return {"error": e.strerror or str(e), "errno": e.errno}


def main():
    mode, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode.endswith("6"):
        mode, vip = mode[:-1], "::ffff:" + vip
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    if mode == "tcp":
        for _ in range(count):
            r, s, _f = tcp_once(vip, port)
            if s:
                s.close()
            print(json.dumps(r), flush=True)
    elif mode == "udp":
        for _ in range(count):
            s = socket.socket(family(vip), socket.SOCK_DGRAM)
            s.settimeout(3)
            print(json.dumps(udp_exchange(s, vip, port)), flush=True)
            s.close()
    elif mode == "udp1":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        for _ in range(count):
            print(json.dumps(udp_exchange(s, vip, port)), flush=True)
        s.close()
    elif mode == "hold":
        r, s, f = tcp_once(vip, port)
        print(json.dumps(r), flush=True)
        if not s:
            return
        sys.stdin.readline()
        try:
            s.sendall(b"ping\n")
            echo = f.readline().strip()
            print(json.dumps({"peer": addr(s.getpeername()), "echo": echo}), flush=True)
        except OSError as e:
            print(json.dumps({"error": e.strerror or str(e)}), flush=True)
        s.close()
    else:
        sys.exit("unknown mode " + mode)


main()
