//! `bench <scenario>`: benchmarks and soaks of canvas-service and the
//! orchestrator, each started from its release binary as a child process on
//! loopback (see `bench help` and the README's "Benchmarks").

mod harness;
mod scenarios;

use std::process::ExitCode;

fn usage() {
    println!("usage: bench <scenario>\n\nscenarios:");
    for (name, what) in scenarios::SCENARIOS {
        println!("  {name:<13} {what}");
    }
    println!(
        "\nThe binaries are taken from next to this one (target/release), or from ORCHESTRATOR_BIN / CANVAS_BIN.\nKnobs are environment variables; scripts/bench-*.sh list them."
    );
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(name) = std::env::args().nth(1) else {
        usage();
        return ExitCode::from(64);
    };
    if matches!(name.as_str(), "help" | "-h" | "--help") {
        usage();
        return ExitCode::SUCCESS;
    }
    // Ctrl-C or SIGTERM drops the scenario, and with it the child (killed)
    // and its dir.
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        eprintln!("bench: cannot listen for SIGTERM");
        return ExitCode::FAILURE;
    };
    let outcome = tokio::select! {
        outcome = scenarios::run(&name) => outcome,
        _ = tokio::signal::ctrl_c() => Some(Err("interrupted".into())),
        _ = terminate.recv() => Some(Err("terminated".into())),
    };
    match outcome {
        None => {
            eprintln!("bench: no scenario {name:?}");
            usage();
            ExitCode::from(64)
        }
        Some(Ok(scenarios::Verdict::Done)) => ExitCode::SUCCESS,
        Some(Ok(scenarios::Verdict::Losses(n))) => {
            eprintln!("bench {name}: {n} lost (see the loss counters above)");
            ExitCode::from(2)
        }
        Some(Err(e)) => {
            eprintln!("bench {name}: {e}");
            ExitCode::FAILURE
        }
    }
}
