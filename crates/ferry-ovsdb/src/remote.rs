//! OVSDB remotes (`unix:PATH`, `tcp:HOST:PORT`, `ssl:HOST:PORT`) and opening a byte
//! stream to one.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};
use crate::tls::TlsConfig;

/// Where an OVSDB server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Unix(PathBuf),
    Tcp {
        host: String,
        port: u16,
    },
    /// TCP with TLS ([`TlsConfig`]).
    Ssl {
        host: String,
        port: u16,
    },
}

impl Remote {
    /// Parses `unix:/path/db.sock`, `tcp:127.0.0.1:6641` (`tcp:[::1]:6641` for IPv6) or
    /// `ssl:HOST:PORT`.
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
        let (ssl, rest) = match (s.strip_prefix("tcp:"), s.strip_prefix("ssl:")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => {
                return Err(invalid(
                    "expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT",
                ));
            }
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected tcp:HOST:PORT or ssl:HOST:PORT"))?;
        let port: u16 = port.parse().map_err(|_| invalid("bad port number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        let host = host.to_owned();
        Ok(if ssl {
            Remote::Ssl { host, port }
        } else {
            Remote::Tcp { host, port }
        })
    }

    /// True for `ssl:` remotes, which need a [`TlsConfig`].
    pub fn is_ssl(&self) -> bool {
        matches!(self, Remote::Ssl { .. })
    }

    /// Opens the stream; `ssl:` remotes also run the TLS handshake with `tls` (read again
    /// from its files at every call).
    pub(crate) async fn connect(&self, tls: Option<&TlsConfig>) -> Result<(BoxRead, BoxWrite)> {
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
            Remote::Ssl { host, port } => {
                let tls = tls.ok_or_else(|| Error::TlsNotConfigured {
                    remote: self.to_string(),
                })?;
                let config = tls.client_config()?;
                let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(err)?;
                s.set_nodelay(true).map_err(err)?;
                let s = tokio_rustls::TlsConnector::from(config)
                    .connect(crate::tls::server_name(host), s)
                    .await
                    .map_err(|source| Error::TlsHandshake {
                        remote: self.to_string(),
                        source,
                    })?;
                let (r, w) = tokio::io::split(s);
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
            Remote::Ssl { host, port } if host.contains(':') => write!(f, "ssl:[{host}]:{port}"),
            Remote::Ssl { host, port } => write!(f, "ssl:{host}:{port}"),
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
            (
                "ssl:10.0.0.1:6641",
                Remote::Ssl {
                    host: "10.0.0.1".into(),
                    port: 6641,
                },
            ),
            (
                "ssl:[fd00::1]:6641",
                Remote::Ssl {
                    host: "fd00::1".into(),
                    port: 6641,
                },
            ),
        ];
        for (s, want) in ok {
            let got = Remote::parse(s).expect(s);
            assert_eq!(got, want, "{s}");
            assert_eq!(got.to_string(), s, "round trip {s}");
        }
        for bad in [
            "unix:",
            "tcp:host",
            "tcp:h:notaport",
            "ssl:host",
            "ssl::6641",
            "http://x",
        ] {
            assert!(
                matches!(Remote::parse(bad), Err(Error::InvalidRemote { .. })),
                "{bad}"
            );
        }
    }
}
