use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn dictionary_is_spdy_3s() {
    let d = dictionary();
    assert_eq!(d.len(), 1423);
    // Its Adler-32, the DICTID every SPDY/3 header stream names.
    let (mut a, mut b) = (1u32, 0u32);
    for x in &d {
        a = (a + u32::from(*x)) % 65521;
        b = (b + a) % 65521;
    }
    assert_eq!((b << 16) | a, 0xe3c6_a7c2);
}

/// Two SYN_STREAMs as a client compresses them (CPython's zlib with the SPDY/3
/// dictionary, one sync-flushed block per frame, one stream for both), as kubectl's
/// first frames of an exec: the error stream, then stdout.
#[test]
fn syn_streams_compressed_by_another_zlib_decode() {
    let bytes = [
        hex(
            "80030001000000280000000100000000000078bbe3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff",
        ),
        hex(
            "800300010000001900000003000000000000c22a054ccc29f9a52500000000ffff",
        ),
    ]
    .concat();
    let mut codec = Codec::new();
    let mut buf = bytes;
    let first = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        first,
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            fin: false,
            headers: vec![("streamtype".into(), "error".into())],
        }
    );
    let second = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        second,
        Frame::SynStream {
            stream_id: 3,
            associated_to: 0,
            priority: 0,
            fin: false,
            headers: vec![("streamtype".into(), "stdout".into())],
        }
    );
    assert!(buf.is_empty());
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
}

#[test]
fn frames_round_trip_through_one_connection() {
    let frames = vec![
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: vec![],
        },
        Frame::SynStream {
            stream_id: 5,
            associated_to: 0,
            priority: 2,
            fin: true,
            headers: vec![
                ("streamtype".into(), "stdin".into()),
                ("x-multi".into(), "a\0b".into()),
            ],
        },
        Frame::Data {
            stream_id: 3,
            fin: false,
            data: b"hello\n".to_vec(),
        },
        Frame::Data {
            stream_id: 3,
            fin: true,
            data: vec![],
        },
        Frame::Ping { id: 7 },
        Frame::RstStream {
            stream_id: 9,
            status: 5,
        },
        Frame::GoAway {
            last_good_stream_id: 9,
            status: 0,
        },
        Frame::WindowUpdate {
            stream_id: 3,
            delta: 65536,
        },
        Frame::Headers {
            stream_id: 1,
            fin: true,
            headers: vec![("k".into(), "v".into())],
        },
    ];
    let mut tx = Codec::new();
    let mut rx = Codec::new();
    let mut wire = Vec::new();
    for f in &frames {
        tx.encode(f, &mut wire).unwrap();
    }
    let mut got = Vec::new();
    while let Some(f) = rx.decode(&mut wire).unwrap() {
        got.push(f);
    }
    assert_eq!(got, frames);
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let mut tx = Codec::new();
    let mut wire = Vec::new();
    tx.encode(
        &Frame::Data {
            stream_id: 1,
            fin: false,
            data: b"abc".to_vec(),
        },
        &mut wire,
    )
    .unwrap();
    let mut rx = Codec::new();
    let mut part = wire[..9].to_vec();
    assert_eq!(rx.decode(&mut part).unwrap(), None);
    part.extend_from_slice(&wire[9..]);
    assert!(matches!(
        rx.decode(&mut part).unwrap(),
        Some(Frame::Data { stream_id: 1, .. })
    ));
}

#[test]
fn other_versions_are_refused() {
    let mut buf = hex("800200040000000400000000");
    assert_eq!(Codec::new().decode(&mut buf), Err(SpdyError::Version(2)));
}
