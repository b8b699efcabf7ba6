//! `etcd://` and `etcds://` locations.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use super::*;
use crate::Backend;

#[test]
fn store_locations_parse_into_backends() {
    let etcd = |endpoints: &[&str], prefix: &str| {
        Backend::Etcd(EtcdConfig {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            prefix: prefix.into(),
            tls: None,
        })
    };
    let etcds = |endpoints: &[&str], prefix: &str, ca: &str, pair: Option<(&str, &str)>| {
        Backend::Etcd(EtcdConfig {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            prefix: prefix.into(),
            tls: Some(EtcdTls {
                ca: ca.into(),
                cert: pair.map(|p| p.0.into()),
                key: pair.map(|p| p.1.into()),
            }),
        })
    };
    let cases: Vec<(&str, std::result::Result<Backend, ()>)> = vec![
        ("embedded", Ok(Backend::Embedded)),
        ("", Ok(Backend::Embedded)),
        ("etcd://127.0.0.1:2379", Ok(etcd(&["127.0.0.1:2379"], ""))),
        (
            "etcd://a:1,b:2, c:3/fed",
            Ok(etcd(&["a:1", "b:2", "c:3"], "/fed")),
        ),
        ("etcd://a:1/fed/one/", Ok(etcd(&["a:1"], "/fed/one"))),
        ("etcd://", Err(())),
        ("etcd://a", Err(())),
        ("etcd://a:x", Err(())),
        ("etcd://a:99999", Err(())),
        ("redis://a:1", Err(())),
        (
            "etcds://a:1,b:2/fed?cacert=/pki/ca.pem&cert=/pki/c.pem&key=/pki/c.key",
            Ok(etcds(
                &["a:1", "b:2"],
                "/fed",
                "/pki/ca.pem",
                Some(("/pki/c.pem", "/pki/c.key")),
            )),
        ),
        (
            "etcd+https://a:1?cacert=ca.pem",
            Ok(etcds(&["a:1"], "", "ca.pem", None)),
        ),
        ("etcds://a:1", Err(())),
        ("etcds://a:1?cert=c.pem&key=c.key", Err(())),
        ("etcds://a:1?cacert=ca.pem&cert=c.pem", Err(())),
        ("etcds://a:1?cacert=ca.pem&user=x", Err(())),
        ("etcds://a:1?cacert=", Err(())),
        ("etcd://a:1?cacert=ca.pem", Err(())),
    ];
    for (input, want) in cases {
        let got = input.parse::<Backend>().map_err(|_| ());
        assert_eq!(got, want, "{input}");
    }
}
