//! Each module runs on a thread of its own, its future still driven by the engine's runtime
//! (its commands, timers and sockets are the runtime's). Whatever a module does on its thread —
//! a read that blocks, a long computation — the runtime's thread stays free, so every other
//! module goes on and this module's timeout fires on time. At the timeout the module's future
//! is dropped on its thread (which kills its commands' process groups) as soon as it next
//! yields; a thread stuck for good is left behind and ends with the process.

use std::sync::Arc;
use std::time::Duration;

use stoke_api::{Context, Module, ModuleError, Report};
use tokio::sync::oneshot;

/// Runs `module` with `ctx` for at most `timeout`.
pub async fn run(
    module: Arc<dyn Module>,
    ctx: Context,
    timeout: Duration,
) -> Result<Report, ModuleError> {
    let name = module.spec().name;
    let handle = tokio::runtime::Handle::current();
    let (done_tx, done_rx) = oneshot::channel();
    // Dropped (at the timeout, or when the engine drops this future): the module is cancelled.
    let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name(format!("module {name}"))
        .spawn(move || {
            let outcome = handle.block_on(async {
                tokio::select! {
                    r = module.run(&ctx) => Some(r),
                    _ = cancel_rx => None,
                }
            });
            // The engine may have stopped waiting (timeout): nobody to tell.
            let _ = done_tx.send(outcome);
        });
    if let Err(e) = spawned {
        return Err(ModuleError::Other(format!(
            "cannot start a thread for it: {e}"
        )));
    }
    let outcome = tokio::time::timeout(timeout, done_rx).await;
    drop(cancel_tx);
    match outcome {
        Ok(Ok(Some(result))) => result,
        // Its thread ended without an answer: the module panicked.
        Ok(Ok(None)) | Ok(Err(_)) => Err(ModuleError::Other(
            "panicked (a bug in stoke: please report it)".into(),
        )),
        Err(_) => Err(ModuleError::Other(format!("timed out after {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use schemars::JsonSchema;
    use serde::Deserialize;
    use stoke_api::{Frequency, ModuleSpec, Order, Stage, config_spec};

    use super::*;

    #[derive(Deserialize, JsonSchema, Default)]
    struct NoConfig {}

    enum Behaviour {
        /// Blocks its thread (a read that never returns, a busy loop).
        BlocksItsThread(Duration),
        /// Waits asynchronously; says so on the channel when its future is dropped.
        WaitsForever(Arc<Mutex<Option<oneshot::Sender<()>>>>),
        Panics,
        Fine,
    }

    struct Probe(Behaviour);

    struct SayOnDrop(Option<oneshot::Sender<()>>);

    impl Drop for SayOnDrop {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }

    #[stoke_api::async_trait]
    impl Module for Probe {
        fn spec(&self) -> ModuleSpec {
            ModuleSpec {
                name: "probe",
                stage: Stage::Local,
                frequency: Frequency::PerBoot,
                after: &[],
                needs_metadata: false,
                before_logins: false,
                timeout: Duration::from_secs(10),
                config: config_spec::<NoConfig>(),
                order: Order::Normal,
            }
        }

        async fn run(&self, _ctx: &Context) -> Result<Report, ModuleError> {
            match &self.0 {
                Behaviour::BlocksItsThread(d) => {
                    std::thread::sleep(*d);
                    Ok(Report::new("woke up"))
                }
                Behaviour::WaitsForever(dropped) => {
                    let _guard = SayOnDrop(dropped.lock().ok().and_then(|mut t| t.take()));
                    std::future::pending::<()>().await;
                    Ok(Report::new("never"))
                }
                Behaviour::Panics => panic!("a bug in a module"),
                Behaviour::Fine => Ok(Report::new("fine")),
            }
        }
    }

    fn ctx() -> Context {
        stoke_api::fake::context(
            &std::env::temp_dir(),
            serde_json::json!({}),
            stoke_api::InstanceData::default(),
            stoke_api::fake::FakeSystem::new(),
        )
    }

    fn probe(b: Behaviour) -> Arc<dyn Module> {
        Arc::new(Probe(b))
    }

    #[tokio::test]
    async fn a_module_that_blocks_its_thread_times_out_on_time_and_the_runtime_goes_on() {
        // A timer on the engine's runtime: it must keep firing while the module blocks.
        let ticks = tokio::spawn(async {
            let mut n = 0;
            let mut every = tokio::time::interval(Duration::from_millis(20));
            loop {
                every.tick().await;
                n += 1;
                if n == 5 {
                    return Instant::now();
                }
            }
        });
        let started = Instant::now();
        let result = run(
            probe(Behaviour::BlocksItsThread(Duration::from_secs(30))),
            ctx(),
            Duration::from_millis(300),
        )
        .await;
        let returned = Instant::now();
        let err = result.expect_err("it timed out").to_string();
        assert!(err.contains("timed out"), "{err}");
        // On the runtime's thread, the module would have held the timeout back for its 30 s.
        assert!(returned - started < Duration::from_secs(20));
        let ticked = ticks.await.expect("ticker");
        assert!(
            ticked <= returned,
            "the runtime's other work ran while the module blocked"
        );
    }

    #[tokio::test]
    async fn at_the_timeout_a_waiting_module_is_dropped() {
        let (tx, dropped) = oneshot::channel();
        let result = run(
            probe(Behaviour::WaitsForever(Arc::new(Mutex::new(Some(tx))))),
            ctx(),
            Duration::from_millis(100),
        )
        .await;
        assert!(result.is_err());
        // Its thread drops the future (and with it the module's commands) once cancelled.
        tokio::time::timeout(Duration::from_secs(10), dropped)
            .await
            .expect("the module's future was dropped")
            .expect("by its guard");
    }

    #[tokio::test]
    async fn a_panic_is_a_failure_and_a_fine_module_reports() {
        let err = run(probe(Behaviour::Panics), ctx(), Duration::from_secs(10))
            .await
            .expect_err("failed");
        assert!(err.to_string().contains("panicked"), "{err}");
        let ok = run(probe(Behaviour::Fine), ctx(), Duration::from_secs(10))
            .await
            .expect("ok");
        assert_eq!(ok.summary, "fine");
    }
}
