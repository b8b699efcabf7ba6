//! Waiting for a condition without timing assertions: poll until it holds or a generous
//! limit passes, then fail naming what never happened and the last reason.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(50);

/// One try of a condition: `Some`/`Ok` is done, `None`/`Err` is not yet (with a reason).
pub trait Attempt<T> {
    /// The value, or why not yet.
    fn attempt(self) -> Result<T, String>;
}

impl<T> Attempt<T> for Option<T> {
    fn attempt(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet".to_owned())
    }
}

impl<T, E: Display> Attempt<T> for Result<T, E> {
    fn attempt(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Calls `f` every [`POLL`] until it returns `Some`/`Ok`, or fails after `timeout` with
/// `what` and the last reason.
pub fn eventually<T, A: Attempt<T>>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> A,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f().attempt() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                anyhow::bail!("{what}: not after {timeout:?} ({e})")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// [`eventually`] for async conditions (sleeps with the runtime's timer, feature `api`).
#[cfg(feature = "api")]
pub async fn eventually_async<T, A: Attempt<T>>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> A,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f().await.attempt() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                anyhow::bail!("{what}: not after {timeout:?} ({e})")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventually_returns_the_first_success_and_names_a_failure() {
        let mut n = 0;
        let v = eventually("third try", Duration::from_secs(5), || {
            n += 1;
            (n >= 3).then_some(n)
        })
        .expect("succeeds");
        assert_eq!(v, 3);
        let err = eventually("never", Duration::from_millis(120), || {
            Err::<(), _>("still down")
        })
        .expect_err("times out");
        let msg = err.to_string();
        assert!(msg.contains("never") && msg.contains("still down"), "{msg}");
    }
}
