//! The only way a test waits: poll a condition until it holds or a deadline passes.

use std::time::{Duration, Instant};

/// Polls `condition` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like [`wait_until`] for a boolean condition.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    wait_until(what, timeout, || condition().then_some(()));
}

/// Like [`wait_until`], but `condition` says why it does not hold yet (`Err(why)`), and the
/// last reason is part of the failure message (e.g. the status JSON that was wrong).
pub fn wait_until_why<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match condition() {
            Ok(value) => return value,
            Err(why) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last seen: {why}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
