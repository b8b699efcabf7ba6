// SPDX-License-Identifier: Apache-2.0
//
// Ferry's VPC-aware socket-level load balancer (IPv4 services).
//
// Attached to a cgroup v2 at connect4 / sendmsg4 (forward: VIP -> backend) and at
// recvmsg4 / getpeername4 (reverse: backend -> VIP), so no packet of a service
// connection ever carries the VIP and the OVN load balancer is off the packet path.
// The *6 twins do the same for IPv4-mapped addresses on AF_INET6 sockets.
//
// The VPC of the calling socket is found from its network namespace cookie
// (bpf_get_netns_cookie, kernel 5.7+), which the agent records at CNI ADD. A socket whose
// netns is unknown, or whose VPC has no service at that (VIP, port, protocol), is left
// untouched: a pod in vpc2 connecting to vpc1's VIP gets no translation, so isolation is
// exactly what the OVN fabric gives it.
//
// The four maps that can fill up (netns, services, slots, members) sit behind a
// one-entry ARRAY_OF_MAPS each, so user space can swap in a bigger (or rebuilt) inner map
// atomically. The affinity and reverse maps are LRU hashes that are never swapped, so a
// resize loses no reverse translation of a live socket.
//
// The struct layouts below are mirrored byte for byte by crates/ferry-sock/src/wire.rs.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2

#define ALGO_RANDOM 0
#define ALGO_MAGLEV 1

struct svc_key {
	__u32 vpc;
	__u32 vip;   /* network order */
	__u16 port;  /* network order */
	__u8 proto;  /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
};

struct svc_val {
	__u32 id;          /* stable id of the service: affinity and member keys */
	__u32 set;         /* backend set: slot i is entry (set, i / 16), element i % 16 */
	__u32 count;       /* number of slots */
	__u32 affinity_s;  /* ClientIP affinity timeout, 0 = none */
	__u8 algo;         /* ALGO_RANDOM / ALGO_MAGLEV */
	__u8 pad[3];
};

/* Slots are stored 16 to a map entry, so programming a service of up to 16 slots is one
 * map update rather than one per slot. */
#define SLOTS_PER_ENTRY 16

struct slot_key {
	__u32 set;
	__u32 chunk;  /* slot index / SLOTS_PER_ENTRY */
};

struct backend {
	__u32 ip;    /* network order */
	__u16 port;  /* network order */
	__u16 pad;
};

struct slot_val {
	struct backend be[SLOTS_PER_ENTRY];
};

struct member_key {
	__u32 svc;
	__u32 ip;
	__u16 port;
	__u16 pad;
};

struct aff_key {
	__u64 netns;
	__u32 svc;
	__u32 pad;
};

struct aff_val {
	__u64 ts;  /* bpf_ktime_get_ns of the last use */
	__u32 ip;
	__u16 port;
	__u16 pad;
};

struct rev_key {
	__u64 cookie;  /* socket cookie */
	__u32 ip;      /* backend */
	__u16 port;
	__u16 pad;
};

struct rev_val {
	__u32 vip;
	__u16 port;
	__u16 pad;
};

/* Inner map templates: user space creates the real inner maps with the sizes it wants
 * (hash maps may differ in max_entries from the template) and the same flags. Sizes,
 * not types: clang emits the structs behind these pointers only as forward declarations,
 * which a BTF loader cannot size. */
struct netns_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, sizeof(__u64));
	__uint(value_size, sizeof(__u32));
};

struct svc_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, sizeof(struct svc_key));
	__uint(value_size, sizeof(struct svc_val));
};

struct slot_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, sizeof(struct slot_key));
	__uint(value_size, sizeof(struct slot_val));
};

struct member_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, sizeof(struct member_key));
	__uint(value_size, sizeof(__u8));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct netns_inner);
} ferry_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct svc_inner);
} ferry_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct slot_inner);
} ferry_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct member_inner);
} ferry_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct aff_key);
	__type(value, struct aff_val);
} ferry_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct rev_key);
	__type(value, struct rev_val);
} ferry_rev SEC(".maps");

/* Liveness guard of a pinned socket LB (the programs outlive the agent that programs
 * them): the agent writes a deadline (bpf_ktime_get_ns, CLOCK_MONOTONIC) here and moves
 * it forward while it runs. Past it, nothing new is translated, so the sockets keep the
 * VIP and OVN's load balancers (kept healthy by the controller) answer them; reverse
 * translation of sockets already translated goes on. 0 = no guard (an unpinned socket LB
 * detaches with its owner instead). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ferry_live SEC(".maps");

static __always_inline int alive(void)
{
	__u32 zero = 0;
	__u64 *deadline = bpf_map_lookup_elem(&ferry_live, &zero);
	return !deadline || *deadline == 0 || bpf_ktime_get_ns() <= *deadline;
}

static __always_inline void *inner_map(void *outer)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(outer, &zero);
}

/* splitmix64 finaliser: socket cookies are a counter, the Maglev index must not be. */
static __always_inline __u32 mix(__u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (__u32)x;
}

/* Picks the backend for a socket of the calling netns towards (vip, port, proto), in
 * network order, and records the reverse translation. Returns 0 when the socket is not
 * to be translated (unknown netns, no such service in its VPC, no backend). */
static __always_inline int pick_backend(void *ctx, __u32 proto, __u32 vip, __u16 port,
					struct backend *be)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if (!alive())
		return 0;

	void *netns = inner_map(&ferry_netns);
	if (!netns)
		return 0;
	__u64 netns_cookie = bpf_get_netns_cookie(ctx);
	__u32 *vpc = bpf_map_lookup_elem(netns, &netns_cookie);
	if (!vpc)
		return 0;

	void *svcs = inner_map(&ferry_svc);
	if (!svcs)
		return 0;
	struct svc_key key = {
		.vpc = *vpc,
		.vip = vip,
		.port = port,
		.proto = (__u8)proto,
	};
	struct svc_val *svc = bpf_map_lookup_elem(svcs, &key);
	if (!svc || svc->count == 0)
		return 0;

	int chosen = 0;
	__u64 now = 0;
	struct aff_key akey = { .netns = netns_cookie, .svc = svc->id };

	if (svc->affinity_s) {
		now = bpf_ktime_get_ns();
		struct aff_val *aff = bpf_map_lookup_elem(&ferry_affinity, &akey);
		if (aff && now - aff->ts <= (__u64)svc->affinity_s * 1000000000ULL) {
			/* Only a backend that is still in the service (healthy) counts. */
			void *members = inner_map(&ferry_members);
			struct member_key mkey = { .svc = svc->id, .ip = aff->ip, .port = aff->port };
			if (members && bpf_map_lookup_elem(members, &mkey)) {
				be->ip = aff->ip;
				be->port = aff->port;
				chosen = 1;
			}
		}
	}

	if (!chosen) {
		void *slots = inner_map(&ferry_slots);
		if (!slots)
			return 0;
		__u32 draw = svc->algo == ALGO_MAGLEV ? mix(bpf_get_socket_cookie(ctx))
						      : bpf_get_prandom_u32();
		__u32 idx = draw % svc->count;
		struct slot_key skey = { .set = svc->set, .chunk = idx / SLOTS_PER_ENTRY };
		struct slot_val *v = bpf_map_lookup_elem(slots, &skey);
		if (!v)
			return 0;
		__u32 off = idx & (SLOTS_PER_ENTRY - 1);
		be->ip = v->be[off].ip;
		be->port = v->be[off].port;
	}

	if (svc->affinity_s) {
		struct aff_val aval = { .ts = now, .ip = be->ip, .port = be->port };
		bpf_map_update_elem(&ferry_affinity, &akey, &aval, BPF_ANY);
	}

	struct rev_key rkey = {
		.cookie = bpf_get_socket_cookie(ctx),
		.ip = be->ip,
		.port = be->port,
	};
	struct rev_val rval = { .vip = vip, .port = port };
	bpf_map_update_elem(&ferry_rev, &rkey, &rval, BPF_ANY);
	return 1;
}

/* The VIP a socket that got `ip:port` from a backend was talking to, if any. */
static __always_inline struct rev_val *reverse(void *ctx, __u32 ip, __u16 port)
{
	struct rev_key rkey = {
		.cookie = bpf_get_socket_cookie(ctx),
		.ip = ip,
		.port = port,
	};
	return bpf_map_lookup_elem(&ferry_rev, &rkey);
}

/* An AF_INET6 socket talking to an IPv4 address (::ffff:a.b.c.d, dual-stack apps). */
static __always_inline int v4_mapped(struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
	       ctx->user_ip6[2] == bpf_htonl(0x0000ffff);
}

/* Forward translation (connect, sendmsg). Always allows the call. */
static __always_inline int fwd4(struct bpf_sock_addr *ctx)
{
	struct backend be = {};
	if (pick_backend(ctx, ctx->protocol, ctx->user_ip4, (__u16)ctx->user_port, &be)) {
		ctx->user_ip4 = be.ip;
		ctx->user_port = (__u32)be.port;
	}
	return 1;
}

static __always_inline int fwd6(struct bpf_sock_addr *ctx)
{
	struct backend be = {};
	if (v4_mapped(ctx) &&
	    pick_backend(ctx, ctx->protocol, ctx->user_ip6[3], (__u16)ctx->user_port, &be)) {
		ctx->user_ip6[3] = be.ip;
		ctx->user_port = (__u32)be.port;
	}
	return 1;
}

/* Reverse translation (recvmsg, getpeername): the app sees the VIP. */
static __always_inline int rev4(struct bpf_sock_addr *ctx)
{
	struct rev_val *rval = reverse(ctx, ctx->user_ip4, (__u16)ctx->user_port);
	if (rval) {
		ctx->user_ip4 = rval->vip;
		ctx->user_port = (__u32)rval->port;
	}
	return 1;
}

static __always_inline int rev6(struct bpf_sock_addr *ctx)
{
	if (!v4_mapped(ctx))
		return 1;
	struct rev_val *rval = reverse(ctx, ctx->user_ip6[3], (__u16)ctx->user_port);
	if (rval) {
		ctx->user_ip6[3] = rval->vip;
		ctx->user_port = (__u32)rval->port;
	}
	return 1;
}

SEC("cgroup/connect4")
int ferry_connect4(struct bpf_sock_addr *ctx)
{
	return fwd4(ctx);
}

SEC("cgroup/sendmsg4")
int ferry_sendmsg4(struct bpf_sock_addr *ctx)
{
	return fwd4(ctx);
}

SEC("cgroup/recvmsg4")
int ferry_recvmsg4(struct bpf_sock_addr *ctx)
{
	return rev4(ctx);
}

SEC("cgroup/getpeername4")
int ferry_getpeername4(struct bpf_sock_addr *ctx)
{
	return rev4(ctx);
}

/* The IPv6 hooks translate only IPv4-mapped addresses: Ferry's services are IPv4, but
 * dual-stack applications (Java, Go, Node) reach them through AF_INET6 sockets. */
SEC("cgroup/connect6")
int ferry_connect6(struct bpf_sock_addr *ctx)
{
	return fwd6(ctx);
}

SEC("cgroup/sendmsg6")
int ferry_sendmsg6(struct bpf_sock_addr *ctx)
{
	return fwd6(ctx);
}

SEC("cgroup/recvmsg6")
int ferry_recvmsg6(struct bpf_sock_addr *ctx)
{
	return rev6(ctx);
}

SEC("cgroup/getpeername6")
int ferry_getpeername6(struct bpf_sock_addr *ctx)
{
	return rev6(ctx);
}

/* No GPL-only helper is used, so the project licence applies. */
char LICENSE[] SEC("license") = "Apache-2.0";
