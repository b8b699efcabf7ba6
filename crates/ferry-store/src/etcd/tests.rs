//! `etcd://` locations.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use super::*;
use crate::Backend;

#[test]
fn store_locations_parse_into_backends() {
    let etcd = |endpoints: &[&str], prefix: &str| {
        Backend::Etcd(EtcdConfig {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            prefix: prefix.into(),
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
    ];
    for (input, want) in cases {
        let got = input.parse::<Backend>().map_err(|_| ());
        assert_eq!(got, want, "{input}");
    }
}
