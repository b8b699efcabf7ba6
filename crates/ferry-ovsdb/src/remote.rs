//! OVSDB remotes (`unix:PATH`, `tcp:HOST:PORT`) and opening a byte stream to one.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};

/// Where an OVSDB server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl Remote {
    /// Parses `unix:/path/db.sock` or `tcp:127.0.0.1:6641` (`tcp:[::1]:6641` for IPv6).
    /// `ssl:` remotes are refused with [`Error::SslUnsupported`].
    pub fn parse(s: &str) -> Result<Remote> {
        let invalid = |reason| Error::InvalidRemote {
            remote: s.to_owned(),
            reason,
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid("empty socket path"));
            }
            return Ok(Remote::Unix(PathBuf::from(path)));
        }
        if s.starts_with("ssl:") {
            return Err(Error::SslUnsupported {
                remote: s.to_owned(),
            });
        }
        let Some(rest) = s.strip_prefix("tcp:") else {
            return Err(invalid("expected unix:PATH or tcp:HOST:PORT"));
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected tcp:HOST:PORT"))?;
        let port: u16 = port.parse().map_err(|_| invalid("bad port number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        Ok(Remote::Tcp {
            host: host.to_owned(),
            port,
        })
    }

    pub(crate) async fn connect(&self) -> Result<(BoxRead, BoxWrite)> {
        let err = |source| Error::Connect {
            remote: self.to_string(),
            source,
        };
        match self {
            Remote::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await.map_err(err)?;
                let (r, w) = s.into_split();
                Ok((Box::pin(r), Box::pin(w)))
            }
            Remote::Tcp { host, port } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(err)?;
                s.set_nodelay(true).map_err(err)?;
                let (r, w) = s.into_split();
                Ok((Box::pin(r), Box::pin(w)))
            }
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
            Remote::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Remote::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
        }
    }
}

pub(crate) type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
pub(crate) type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_remotes() {
        let ok = [
            ("unix:/run/nb.sock", Remote::Unix("/run/nb.sock".into())),
            (
                "tcp:127.0.0.1:6641",
                Remote::Tcp {
                    host: "127.0.0.1".into(),
                    port: 6641,
                },
            ),
            (
                "tcp:[::1]:6641",
                Remote::Tcp {
                    host: "::1".into(),
                    port: 6641,
                },
            ),
        ];
        for (s, want) in ok {
            let got = Remote::parse(s).expect(s);
            assert_eq!(got, want, "{s}");
            assert_eq!(got.to_string(), s, "round trip {s}");
        }
        let err = Remote::parse("ssl:10.0.0.1:6641").expect_err("ssl");
        assert!(err.to_string().contains("ssl:10.0.0.1:6641"), "{err}");
        for bad in ["unix:", "tcp:host", "tcp:h:notaport", "http://x"] {
            assert!(
                matches!(Remote::parse(bad), Err(Error::InvalidRemote { .. })),
                "{bad}"
            );
        }
    }
}
