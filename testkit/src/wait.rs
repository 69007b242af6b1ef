//! Polling until something holds: the one way tests wait for a condition, with the time it took.

use std::future::Future;
use std::time::{Duration, Instant};

/// The first poll comes at once, then the pause doubles from 10 ms up to this: quick conditions are seen
/// quickly (and timed closely), slow ones (an API server, a pod) are not polled in a tight loop.
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Polls `check` until it returns `Some`, and returns that value.
///
/// # Panics
/// When `within` passes first; the message names `what`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Polls `check` until it returns true; returns how long that took.
///
/// # Panics
/// When `within` passes first; the message names `what`.
pub async fn eventually_true<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    eventually(what, within, || {
        let ready = check();
        async move { ready.await.then_some(()) }
    })
    .await;
    started.elapsed()
}

/// Polls the synchronous `check` until it holds or `within` passes; whether it held. For a test that
/// measures whether something happened in time rather than fails on it (the journey counts such cases).
pub async fn holds_within(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    while started.elapsed() < within {
        if check() {
            return true;
        }
        tokio::time::sleep(pause.min(within.saturating_sub(started.elapsed()))).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
    check()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_and_times_the_wait() {
        let mut calls = 0;
        let value = eventually("three calls", Duration::from_secs(5), || {
            calls += 1;
            let now = calls;
            async move { (now == 3).then_some(now * 10) }
        })
        .await;
        assert_eq!(value, 30);
        let started = Instant::now();
        let took = eventually_true("100 ms", Duration::from_secs(5), || async move {
            started.elapsed() > Duration::from_millis(100)
        })
        .await;
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(1),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn holds_within_says_whether_it_held() {
        let started = Instant::now();
        assert!(
            holds_within(Duration::from_secs(5), || started.elapsed()
                > Duration::from_millis(50))
            .await
        );
        assert!(!holds_within(Duration::from_millis(50), || false).await);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    #[should_panic(expected = "never: not within")]
    async fn panics_with_what_after_the_deadline() {
        eventually_true("never", Duration::from_millis(50), || async { false }).await;
    }
}
