use super::*;

/// The endpoint answers only the agent's own token (the API server presents it).
#[tokio::test]
async fn only_the_agents_token_is_served() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let dir = tempfile::tempdir().unwrap();
    tokio::spawn(serve(
        listener,
        "s3cret".into(),
        dir.path().to_path_buf(),
        PodDirectory::default(),
        stop_rx,
    ));
    let get = |auth: Option<&'static str>| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder().uri("/containerLogs/default/p/c");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = send
            .send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let code = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(get(None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(Some("Bearer s3cre")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(Some("Bearer s3cret!")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(Some("Bearer s3cret")).await,
        (
            StatusCode::NOT_FOUND,
            "pod default/p does not run on this node".to_string()
        )
    );
}

#[test]
fn queries_decode_like_go_encodes_them() {
    assert_eq!(
        query_pairs("command=sh&command=-c&command=exit+3&stdout=true&x=%2Fa%20b"),
        vec![
            ("command".into(), "sh".into()),
            ("command".into(), "-c".into()),
            ("command".into(), "exit 3".into()),
            ("stdout".into(), "true".into()),
            ("x".into(), "/a b".into()),
        ]
    );
}

#[test]
fn log_options_follow_the_pod_log_options() {
    let q = query_pairs("tailLines=3&timestamps=true&limitBytes=10");
    assert_eq!(
        log_options(&q).unwrap(),
        LogOptions {
            tail: Some(3),
            since: None,
            timestamps: true,
            limit_bytes: Some(10)
        }
    );
    let q = query_pairs("sinceTime=2026-11-29T00%3A00%3A00Z");
    assert_eq!(
        log_options(&q).unwrap().since,
        Some("2026-11-29T00:00:00Z".parse().unwrap())
    );
    assert!(log_options(&query_pairs("tailLines=x")).is_err());
}
