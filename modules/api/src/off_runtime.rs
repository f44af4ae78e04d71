//! Blocking work (a mount, a lock wait, a syscall that may hang) on a thread of its own: the
//! single-threaded runtime — every module and every timeout — goes on meanwhile.

/// Runs `call` on a new thread and waits for it without blocking the runtime. A plain
/// thread, not the runtime's blocking pool: a call stuck in the kernel holds up neither the
/// caller's timeout nor the process's exit. An error only when the thread could not start
/// or died without an answer.
pub async fn off_runtime<T: Send + 'static>(
    what: &'static str,
    call: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("stoke-{what}"))
        .spawn(move || {
            let _ = tx.send(call());
        })?;
    rx.await
        .map_err(|_| std::io::Error::other(format!("{what}: its thread ended without an answer")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn a_stuck_call_does_not_stop_the_runtime_nor_a_timeout() {
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let call = off_runtime("test", move || stuck.recv().is_ok());
        let timed = tokio::time::timeout(Duration::from_millis(50), call).await;
        assert!(timed.is_err(), "the timeout fired while the call was stuck");
        drop(release);
        assert_eq!(off_runtime("test", || 7).await.unwrap(), 7);
    }
}
