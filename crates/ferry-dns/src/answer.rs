//! What to say to one query from one VPC: [`answer`] decides from [`Zones`] alone whether to
//! reply (records, NODATA or NXDOMAIN with the SOA), to forward upstream, or to reply after
//! asking upstream for the target of a CNAME that leaves the cluster domain. Pure.

use crate::wire::{
    CLASS_ANY, CLASS_IN, Edns, Header, Message, Name, RCODE_FORMERR, RCODE_NOERROR, RCODE_NOTIMP,
    RCODE_NXDOMAIN, RCODE_REFUSED, RCODE_SERVFAIL, RData, Record, TYPE_A, TYPE_AAAA, TYPE_ANY,
    TYPE_AXFR, TYPE_CNAME, TYPE_IXFR, TYPE_SOA, UDP_EDNS,
};
use crate::zones::{TTL, Zones};

/// How many CNAMEs inside the cluster domain are followed before giving up.
const MAX_CHAIN: usize = 8;

/// The outcome for one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this.
    Reply(Message),
    /// Not Ferry's name: relay the query to an upstream (REFUSED when there is none).
    Forward,
    /// Send `reply` after appending what an upstream answers for `target`/`qtype`: an
    /// ExternalName's CNAME points outside the cluster, and stub resolvers expect the whole
    /// chain from their server.
    Chase {
        reply: Message,
        target: Name,
        qtype: u16,
    },
}

/// The reply skeleton for `query`: same id, opcode, RD, CD and question; RA set (Ferry
/// recurses through its upstreams); an OPT record when the query had one.
pub fn reply_to(query: &Message, rcode: u8) -> Message {
    Message {
        header: Header {
            id: query.header.id,
            qr: true,
            opcode: query.header.opcode,
            aa: false,
            tc: false,
            rd: query.header.rd,
            ra: true,
            ad: false,
            cd: query.header.cd,
            rcode,
        },
        questions: query.questions.clone(),
        answers: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        edns: query.edns.as_ref().map(|_| Edns {
            udp_size: UDP_EDNS,
            ext_rcode: 0,
            version: 0,
            dnssec_ok: false,
            options: Vec::new(),
        }),
    }
}

/// REFUSED (no upstream configured for a name outside the cluster domain).
pub fn refused(query: &Message) -> Message {
    reply_to(query, RCODE_REFUSED)
}

/// SERVFAIL (every upstream failed or timed out).
pub fn servfail(query: &Message) -> Message {
    reply_to(query, RCODE_SERVFAIL)
}

/// FORMERR for bytes whose header parses as a query but whose body does not; `None` for
/// anything else (responses and runts are dropped, never answered).
pub fn malformed(buf: &[u8]) -> Option<Message> {
    let h = Header::parse(buf).ok().filter(|h| !h.qr)?;
    Some(reply_to(
        &Message {
            header: h,
            ..Default::default()
        },
        RCODE_FORMERR,
    ))
}

/// The decision for `query` arriving on `vpc`'s socket.
pub fn answer(zones: &Zones, vpc: &str, query: &Message) -> Decision {
    if query.header.qr {
        return Decision::Reply(reply_to(query, RCODE_FORMERR));
    }
    if query.header.opcode != 0 {
        return Decision::Reply(reply_to(query, RCODE_NOTIMP));
    }
    if query.questions.len() != 1 {
        return Decision::Reply(reply_to(query, RCODE_FORMERR));
    }
    if let Some(e) = &query.edns
        && e.version > 0
    {
        // BADVERS (RFC 6891 §6.1.3): extended rcode 16 = 1 << 4.
        let mut r = reply_to(query, RCODE_NOERROR);
        if let Some(o) = r.edns.as_mut() {
            o.ext_rcode = 1;
        }
        return Decision::Reply(r);
    }
    let q = &query.questions[0];
    let key = q.name.key();
    let zone = zones.vpc(vpc);
    let in_domain = zones.in_domain(&key);
    if !in_domain && zone.records(&key).is_none() {
        return Decision::Forward;
    }
    let mut reply = reply_to(query, RCODE_NOERROR);
    reply.header.aa = true;
    if q.qclass != CLASS_IN && q.qclass != CLASS_ANY {
        reply.header.rcode = RCODE_REFUSED;
        reply.header.aa = false;
        return Decision::Reply(reply);
    }
    if q.qtype == TYPE_AXFR || q.qtype == TYPE_IXFR {
        reply.header.rcode = RCODE_REFUSED;
        reply.header.aa = false;
        return Decision::Reply(reply);
    }
    let mut owner = q.name.clone();
    let mut owner_key = key;
    for _ in 0..MAX_CHAIN {
        if owner_key == zones.domain() {
            if q.qtype == TYPE_SOA || q.qtype == TYPE_ANY {
                reply.answers.push(Record {
                    name: owner,
                    class: CLASS_IN,
                    ttl: TTL,
                    data: RData::Soa(zones.soa().clone()),
                });
            } else {
                negative(zones, &mut reply, RCODE_NOERROR);
            }
            return Decision::Reply(reply);
        }
        let Some(set) = zone.records(&owner_key) else {
            // RFC 6604: the rcode speaks for the last name of a chain.
            let ent = zone.is_empty_non_terminal(&owner_key);
            negative(
                zones,
                &mut reply,
                if ent { RCODE_NOERROR } else { RCODE_NXDOMAIN },
            );
            return Decision::Reply(reply);
        };
        let mut matching: Vec<&RData> = set
            .iter()
            .filter(|d| q.qtype == TYPE_ANY || d.rtype() == q.qtype)
            .collect();
        if !matching.is_empty() {
            // Rotate address sets by the query id: successive queries spread over the
            // endpoints of a headless Service, and the answer stays a function of the query.
            if matches!(q.qtype, TYPE_A | TYPE_AAAA) && matching.len() > 1 {
                let n = matching.len();
                matching.rotate_left(usize::from(query.header.id) % n);
            }
            reply.answers.extend(matching.into_iter().map(|d| Record {
                name: owner.clone(),
                class: CLASS_IN,
                ttl: TTL,
                data: d.clone(),
            }));
            return Decision::Reply(reply);
        }
        let cname = set.iter().find_map(|d| match d {
            RData::Cname(t) => Some(t.clone()),
            _ => None,
        });
        let Some(target) = cname.filter(|_| q.qtype != TYPE_CNAME) else {
            negative(zones, &mut reply, RCODE_NOERROR);
            return Decision::Reply(reply);
        };
        reply.answers.push(Record {
            name: owner,
            class: CLASS_IN,
            ttl: TTL,
            data: RData::Cname(target.clone()),
        });
        let target_key = target.key();
        if !zones.in_domain(&target_key) && zone.records(&target_key).is_none() {
            return Decision::Chase {
                reply,
                target,
                qtype: q.qtype,
            };
        }
        owner = target;
        owner_key = target_key;
    }
    // A CNAME loop inside the zone: what we have, as SERVFAIL.
    reply.header.rcode = RCODE_SERVFAIL;
    Decision::Reply(reply)
}

/// NODATA or NXDOMAIN: the SOA in authority gives the negative-caching TTL (RFC 2308).
fn negative(zones: &Zones, reply: &mut Message, rcode: u8) {
    reply.header.rcode = rcode;
    reply.authority.push(Record {
        name: zones.domain_name().clone(),
        class: CLASS_IN,
        ttl: TTL,
        data: RData::Soa(zones.soa().clone()),
    });
}

/// Appends an upstream's reply for a chased CNAME target to `reply`: its answers, and its
/// rcode when it is a failure of the target itself (NXDOMAIN).
pub fn complete_chase(mut reply: Message, upstream: Option<&Message>) -> Message {
    if let Some(u) = upstream {
        reply.answers.extend(u.answers.iter().cloned());
        if u.header.rcode == RCODE_NXDOMAIN {
            reply.header.rcode = RCODE_NXDOMAIN;
        }
    }
    reply
}

#[cfg(test)]
pub(crate) mod tests;
