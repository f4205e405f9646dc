//! Progress while sending, on stderr: a bar when stderr is a terminal, plain lines
//! otherwise. SIGINT and SIGTERM stop the run gracefully: messages in flight finish,
//! the rest stays pending for `resume`, and the report is printed.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use owner_access::{Error, Progress, RunControl, SendReport, StopSignal};

struct Counters {
    sent: AtomicUsize,
    failed: AtomicUsize,
    retried: AtomicUsize,
    taken_over: AtomicUsize,
    total: AtomicUsize,
    started: Instant,
    last_line: Mutex<Instant>,
}

fn describe(c: &Counters) -> String {
    let sent = c.sent.load(Ordering::Relaxed);
    let secs = c.started.elapsed().as_secs_f64().max(1e-3);
    format!(
        "sent {sent}, failed {}, retried {} of {} ({:.0}/s)",
        c.failed.load(Ordering::Relaxed),
        c.retried.load(Ordering::Relaxed),
        c.total.load(Ordering::Relaxed),
        sent as f64 / secs
    )
}

/// Runs a send with progress reporting and signal handling.
pub async fn run_with_progress<F, Fut>(run: F) -> Result<SendReport, Error>
where
    F: FnOnce(RunControl) -> Fut,
    Fut: Future<Output = Result<SendReport, Error>>,
{
    let stop = StopSignal::new();
    let watcher = tokio::spawn(watch_signals(stop.clone()));
    let counters = std::sync::Arc::new(Counters {
        sent: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        retried: AtomicUsize::new(0),
        taken_over: AtomicUsize::new(0),
        total: AtomicUsize::new(0),
        started: Instant::now(),
        last_line: Mutex::new(Instant::now()),
    });
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let c = counters.clone();
    let b = bar.clone();
    let control = RunControl::new()
        .with_stop(stop)
        .with_progress(move |event| {
            match event {
                Progress::Queued { pending, .. } => {
                    c.total.store(*pending, Ordering::Relaxed);
                    if let Some(bar) = &b {
                        bar.set_length(*pending as u64);
                    } else {
                        eprintln!("sending {pending} messages");
                    }
                }
                Progress::Sent { .. } => {
                    c.sent.fetch_add(1, Ordering::Relaxed);
                }
                Progress::Failed { owner, error } => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    let line = format!(
                        "failed {}: {}",
                        crate::output::shown(owner.as_str()),
                        crate::output::shown(&error.to_string())
                    );
                    match &b {
                        Some(bar) => bar.println(line),
                        None => eprintln!("{line}"),
                    }
                }
                Progress::Skipped { owner, reason } => {
                    let line = format!(
                        "skipped {}: {reason} ({})",
                        crate::output::shown(owner.as_str()),
                        reason.code()
                    );
                    match &b {
                        Some(bar) => bar.println(line),
                        None => eprintln!("{line}"),
                    }
                }
                Progress::Retrying { .. } => {
                    c.retried.fetch_add(1, Ordering::Relaxed);
                }
                Progress::Waiting {
                    held,
                    senders,
                    until,
                } => {
                    let by = if *senders == 1 {
                        "another sender".to_owned()
                    } else {
                        format!("{senders} other senders")
                    };
                    let line = format!(
                        "waiting: {held} deliveries are held by {by} until {until}; they are \
                         sent once those leases run out, or by their sender if it is alive \
                         (`resume --take-over` takes them at once if it is known to be dead)"
                    );
                    match &b {
                        Some(bar) => bar.println(line),
                        None => eprintln!("{line}"),
                    }
                }
                // One line, not one per delivery: a whole chunk goes at once.
                Progress::TakenOver { owner }
                    if c.taken_over.fetch_add(1, Ordering::Relaxed) == 0 =>
                {
                    let line = format!(
                        "taken over: another sender holds {} now (this run's lease on it \
                         ran out); this run stops and leaves the batch to it",
                        crate::output::shown(owner.as_str())
                    );
                    match &b {
                        Some(bar) => bar.println(line),
                        None => eprintln!("{line}"),
                    }
                }
                Progress::Stopped { reason } => {
                    let line = format!("stopped: {}", crate::output::shown(&reason.to_string()));
                    match &b {
                        Some(bar) => bar.println(line),
                        None => eprintln!("{line}"),
                    }
                }
                Progress::Finished { .. } if b.is_none() => eprintln!("{}", describe(&c)),
                _ => {}
            }
            if matches!(event, Progress::Sent { .. } | Progress::Failed { .. }) {
                match &b {
                    Some(bar) => {
                        bar.inc(1);
                        bar.set_message(describe(&c));
                    }
                    None => {
                        let mut last = c.last_line.lock().expect("progress lock");
                        if last.elapsed().as_secs_f64() >= 1.0 {
                            *last = Instant::now();
                            eprintln!("{}", describe(&c));
                        }
                    }
                }
            }
        });
    let result = run(control).await;
    watcher.abort();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

async fn watch_signals(stop: StopSignal) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
    }
    eprintln!("stopping: finishing the messages in flight; the rest stays pending for `resume`");
    stop.stop();
}
