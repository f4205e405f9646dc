//! The SMTP server of `benches/workers/run.sh`: it accepts every message, waits a
//! fixed delay before answering the end of its DATA (a relay's latency, so one worker
//! is bound by latency rather than by the machine's cores), and logs one line per
//! accepted message: the accept time, the Message-ID and the recipients.
//!
//! ```sh
//! cargo bench --bench workers_sink -- --port 2525 --delay-ms 20 --log accepted.tsv
//! ```
//!
//! Log lines are `SECONDS\tMESSAGE-ID\tRCPT[,RCPT…]` (seconds since the Unix epoch,
//! taken just before the `250` reply). The file is flushed whenever the writer has
//! caught up, so a `kill` of the sink loses at most the lines of the last moment;
//! the script stops it only after the workers have ended. Only what a bench needs of
//! SMTP is here (no TLS, no AUTH, no pipelining checks); lines longer than 64 KB end
//! the session.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

struct Args {
    port: u16,
    delay: Duration,
    log: String,
}

fn args() -> Args {
    let mut port = 2525;
    let mut delay_ms = 20u64;
    let mut log = String::from("accepted.tsv");
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--port" => port = it.next().and_then(|v| v.parse().ok()).expect("--port N"),
            "--delay-ms" => {
                delay_ms = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--delay-ms N")
            }
            "--log" => log = it.next().expect("--log FILE"),
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    Args {
        port,
        delay: Duration::from_millis(delay_ms),
        log,
    }
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(serve(args));
}

async fn serve(args: Args) {
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .expect("the port is free");
    let (lines, mut received) = mpsc::unbounded_channel::<String>();
    let mut file = tokio::fs::File::create(&args.log)
        .await
        .expect("the log file");
    tokio::spawn(async move {
        let mut buffer = Vec::new();
        while let Some(line) = received.recv().await {
            buffer.extend_from_slice(line.as_bytes());
            while let Ok(line) = received.try_recv() {
                buffer.extend_from_slice(line.as_bytes());
            }
            file.write_all(&buffer).await.expect("the log is written");
            file.flush().await.expect("the log is written");
            buffer.clear();
        }
    });
    println!("ready {}", args.port);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let lines = lines.clone();
        tokio::spawn(session(stream, args.delay, lines));
    }
}

/// One SMTP session; any I/O error just ends it.
async fn session(stream: TcpStream, delay: Duration, log: mpsc::UnboundedSender<String>) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    if write
        .write_all(b"220 workers-sink ESMTP\r\n")
        .await
        .is_err()
    {
        return;
    }
    let mut line = Vec::new();
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        line.clear();
        match read.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n > 65_536 => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let command = text.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-workers-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n"
        } else if command.starts_with("HELO") || command.starts_with("NOOP") {
            b"250 ok\r\n"
        } else if command.starts_with("MAIL FROM") || command.starts_with("RSET") {
            rcpts.clear();
            b"250 ok\r\n"
        } else if command.starts_with("RCPT TO") {
            let raw = text.trim_end();
            let address = raw[raw.find(':').map_or(0, |i| i + 1)..]
                .trim()
                .trim_start_matches('<');
            let address = address.split('>').next().unwrap_or_default();
            rcpts.push(address.to_owned());
            b"250 ok\r\n"
        } else if command == "DATA" {
            if write.write_all(b"354 go ahead\r\n").await.is_err() {
                return;
            }
            let Some(message_id) = read_data(&mut read).await else {
                return;
            };
            tokio::time::sleep(delay).await;
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let _ = log.send(format!("{at:.6}\t{message_id}\t{}\n", rcpts.join(",")));
            rcpts.clear();
            b"250 2.0.0 queued\r\n"
        } else if command.starts_with("QUIT") {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 not here\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Reads a message up to its lone `.` line; returns its Message-ID (empty when it has
/// none), `None` when the session ended first.
async fn read_data<R: AsyncBufReadExt + Unpin>(read: &mut R) -> Option<String> {
    let mut message_id = String::new();
    let mut in_headers = true;
    let mut line = Vec::new();
    loop {
        line.clear();
        match read.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if line == b".\r\n" || line == b".\n" {
            return Some(message_id);
        }
        if in_headers {
            if line == b"\r\n" || line == b"\n" {
                in_headers = false;
            } else if line.len() > 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
                message_id = String::from_utf8_lossy(&line[11..]).trim().to_owned();
            }
        }
    }
}
