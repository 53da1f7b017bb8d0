//! What a panic does in `sbcd`: it ends the process, logged, so systemd restarts it
//! (`Restart=on-failure`). Unwinding would end only the panicking task or thread (a shard, a
//! relay worker, a TCP writer) and leave a process that answers health checks while its calls
//! go nowhere. Code that is meant to survive a panic (call-control hooks, which run operators'
//! modules) runs inside [`supervised`]: there the panic is logged and caught as before.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// Depth of [`supervised`] calls on this thread.
    static SUPERVISED: Cell<u32> = const { Cell::new(0) };
}

/// Installs the panic hook: log the panic (thread, place, message), then abort unless it
/// happened inside [`supervised`].
pub fn abort_on_unsupervised_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let place = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let message = payload_text(info.payload());
        if SUPERVISED.with(Cell::get) > 0 {
            tracing::error!(thread, place, message, "panic in supervised code; the task goes on");
            return;
        }
        tracing::error!(thread, place, message, "panic: aborting so that the service manager restarts sbcd");
        default_hook(info);
        std::process::abort();
    }));
}

/// Runs `f`, catching a panic in it (which the hook then only logs).
pub fn supervised<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    SUPERVISED.with(|d| d.set(d.get() + 1));
    let out = catch_unwind(AssertUnwindSafe(f));
    SUPERVISED.with(|d| d.set(d.get().saturating_sub(1)));
    out
}

/// Like [`supervised`], then the panic goes on unwinding (for a task whose owner, e.g. tokio's
/// blocking pool, reports it), without calling the hook a second time.
pub fn supervised_then_resume<R>(f: impl FnOnce() -> R) -> R {
    supervised(f).unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn payload_text(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(String::as_str)).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    use super::*;

    /// Runs this test binary again with only `test` and `CRASH_CHILD` set; its exit status.
    fn child(test: &str) -> std::process::ExitStatus {
        let exe = std::env::current_exe().expect("test binary path");
        Command::new(exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("CRASH_CHILD", "1")
            .env("RUST_BACKTRACE", "0")
            .status()
            .expect("test binary runs")
    }

    #[test]
    fn a_panic_in_any_thread_aborts_the_process() {
        if std::env::var_os("CRASH_CHILD").is_some() {
            abort_on_unsupervised_panic();
            // A worker thread dies: without the hook the process would go on.
            let _ = std::thread::Builder::new().name("worker".into()).spawn(|| panic!("boom")).map(|t| t.join());
            std::process::exit(0);
        }
        let status = child("crash::tests::a_panic_in_any_thread_aborts_the_process");
        assert_eq!(status.signal(), Some(6), "SIGABRT expected, got {status:?}");
    }

    #[test]
    fn a_supervised_panic_is_caught_and_the_process_goes_on() {
        if std::env::var_os("CRASH_CHILD").is_some() {
            abort_on_unsupervised_panic();
            let caught = supervised(|| panic!("hook failed"));
            let resumed = std::thread::spawn(|| supervised_then_resume(|| panic!("pool task"))).join();
            std::process::exit(if caught.is_err() && resumed.is_err() { 0 } else { 3 });
        }
        let status = child("crash::tests::a_supervised_panic_is_caught_and_the_process_goes_on");
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}
