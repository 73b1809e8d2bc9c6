//! `cargo run` fails fast: when either service cannot start, neither keeps
//! running, the message names the service and the address, and the exit
//! code is not 0. The real binary is run, as a developer would.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

/// Runs the launcher with `env` (and an empty data directory, loopback
/// only), waiting at most `limit` for it to exit by itself.
fn run_within(limit: Duration, env: &[(&str, String)]) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_canvas-backend"))
        .current_dir(data.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", "127.0.0.1")
        .env("DATA_DIR", data.path())
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the launcher kept running with a service that could not start; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(env: &[(&str, String)]) -> Output {
    run_within(Duration::from_secs(30), env)
}

#[test]
fn a_taken_port_stops_both_and_names_service_and_address() {
    for (taken_by, other) in [
        ("CANVAS_PORT", "ORCHESTRATOR_PORT"),
        ("ORCHESTRATOR_PORT", "CANVAS_PORT"),
    ] {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        let free = testkit::free_port();
        let output = run(&[(taken_by, taken.to_string()), (other, free.to_string())]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{taken_by}: {stderr}");
        let service = if taken_by == "CANVAS_PORT" {
            "canvas-service"
        } else {
            "orchestrator"
        };
        assert!(
            stderr.contains(&format!(
                "{service}: cannot listen on 127.0.0.1:{taken}: address already in use"
            )),
            "{stderr}"
        );
        // The other service did not stay up.
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", free)).is_err(),
            "the other service is still listening"
        );
    }
}

#[test]
fn a_bad_setting_names_the_service_and_the_variable() {
    let output = run(&[
        ("CANVAS_PORT", testkit::free_port().to_string()),
        ("ORCHESTRATOR_PORT", testkit::free_port().to_string()),
        ("MAX_GPU_BACKLOG", "lots".to_owned()),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("orchestrator:"), "{stderr}");
    assert!(stderr.contains("MAX_GPU_BACKLOG"), "{stderr}");
}

#[test]
fn an_unreachable_database_at_start_up_stops_both() {
    // A port nothing listens on: the canvas cannot reach its database. It
    // retries its migrations for about half a minute first (a task often
    // starts before its database is reachable), then gives up.
    let dead = testkit::free_port();
    let orchestrator = testkit::free_port();
    let output = run_within(
        Duration::from_secs(120),
        &[
            ("CANVAS_PORT", testkit::free_port().to_string()),
            ("ORCHESTRATOR_PORT", orchestrator.to_string()),
            (
                "DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:{dead}/postgres"),
            ),
            ("DATABASE_TIMEOUT_SECONDS", "1".to_owned()),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("canvas-service: cannot start"), "{stderr}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", orchestrator)).is_err());
}
