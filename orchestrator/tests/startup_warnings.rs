//! What the real binary says at start-up about a setup that cannot work as
//! the operator probably expects: embedded queues with no consumer accept
//! jobs that will wait forever, so each such queue gets a WARN line naming
//! the setting that fixes it.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// The start-up log lines until the server listens (or 20 s pass).
fn startup_lines(extra: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    command
        // No `.env` of the checkout's is read.
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", "127.0.0.1")
        .env("PORT", testkit::free_port().to_string())
        .env("DATA_DIR", dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the orchestrator starts");
    let stdout = child.stdout.take().unwrap();
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        let listening = line.contains("listening");
        seen.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

fn warned_about(lines: &[String], queue: &str) -> bool {
    lines.iter().any(|l| {
        l.contains("WARN") && l.contains(&format!("embedded {queue} queue has no consumer"))
    })
}

#[test]
fn embedded_queues_without_a_consumer_are_named_at_start_up() {
    let lines = startup_lines(&[]);
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:#?}");
    assert!(warned_about(&lines, "gpu"), "{lines:#?}");
    assert!(warned_about(&lines, "cpu"), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("GPU_BACKEND_URL")),
        "the warning names the setting: {lines:#?}"
    );
}

#[test]
fn a_queue_with_a_local_worker_is_not_named() {
    let lines = startup_lines(&[("GPU_BACKEND_URL", "http://127.0.0.1:9")]);
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:#?}");
    assert!(!warned_about(&lines, "gpu"), "{lines:#?}");
    assert!(warned_about(&lines, "cpu"), "{lines:#?}");
}
