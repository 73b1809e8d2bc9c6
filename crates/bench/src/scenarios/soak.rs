//! `bench soak`: the submit soak (issue 9, item 7). `SOAK_SUBMITS` submits
//! of all five kinds at `SOAK_CONCURRENCY` against the orchestrator on SQS +
//! DynamoDB (moto) through a fault proxy, which is cut for `SOAK_CUT_SECS`
//! after a third of them. No worker runs: the bench takes each message off
//! the queue as it arrives and records it, touching no job record
//! (`SOAK_KEEP_MESSAGES=1` leaves them queued until the check instead —
//! far slower on moto, whose calls walk the whole queue).
//! After `SOAK_SETTLE_SECS` every answer is reconciled with the store and
//! the queues: a 202 must have its record and its message, a record left by
//! a refused submit must be `failed`. A refused submit's answer carries no
//! job id, so its record is found as one whose id no 202 named (the table
//! is fresh and only this run submits to it); each is then read id by id.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use testkit::FaultProxy;

use super::Verdict;
use crate::harness::{
    BoxError, aws,
    child::{Binary, Service},
    cut::{Cut, Ledger, Recovery, SoakSettings, add_failures_by_code},
    http, jobs, knobs,
    load::Load,
    stats::{Latencies, mib, ms, rate},
};

/// Receives before a message is dead-lettered: the count's one receive per
/// message must not move any to a DLQ.
const MAX_RECEIVES: u32 = 100;

pub async fn run() -> Result<Verdict, BoxError> {
    let settings = SoakSettings::from_env("SOAK_SUBMITS", 10_000)?;
    let moto = aws::moto().await?;
    println!(
        "submit soak: {}",
        settings.describe("submits of the 5 kinds", "moto (SQS + DynamoDB)")
    );
    let backends = Arc::new(aws::JobBackends::create(&moto, MAX_RECEIVES).await?);
    let result = soak(&settings, &moto, &backends).await;
    backends.delete().await;
    result
}

async fn soak(
    settings: &SoakSettings,
    moto: &str,
    backends: &Arc<aws::JobBackends>,
) -> Result<Verdict, BoxError> {
    let keep = knobs::flag("SOAK_KEEP_MESSAGES");
    let client = http::client(settings.concurrency)?;
    let (proxy, _) = FaultProxy::in_front_of(moto).await;
    let proxy = Arc::new(proxy);
    let mut service = Service::start(
        Binary::Orchestrator,
        &aws::through(&backends.env, &proxy.url()),
        &client,
    )
    .await?;

    let load = Load::new(
        settings.concurrency,
        settings.count,
        Duration::from_secs(3600),
    )
    .reporting(Duration::from_secs(15));
    let cut = Cut::schedule(proxy.clone(), load.answered(), settings);
    let collector = (!keep).then(|| backends.collect());
    let base: Arc<str> = service.base().into();
    let run = load
        .run_backing_off(move |i| {
            let (client, base) = (client.clone(), base.clone());
            async move { http::submit(&client, &base, &jobs::KINDS[i % jobs::KINDS.len()]).await }
        }, settings.backoff)
        .await?;
    let window = cut.finish().await?;
    service.check_running()?;
    println!(
        "{} submits answered in {:.1} s; settling {} s before the check",
        run.calls.len(),
        run.elapsed.as_secs_f64(),
        settings.settle.as_secs()
    );
    tokio::time::sleep(settings.settle).await;

    // Every message sent: those collected, and any left in the queues.
    let mut sent = match collector {
        Some(collector) => collector.finish().await?,
        None => Vec::new(),
    };
    for queue in [&backends.gpu_queue, &backends.cpu_queue] {
        sent.extend(backends.drain(queue).await?);
    }
    let message_count = sent.len();
    let mut messages: HashMap<String, usize> = HashMap::new();
    let mut unreadable = 0;
    for id in sent {
        match id {
            Some(id) => *messages.entry(id).or_default() += 1,
            None => unreadable += 1,
        }
    }
    let records = backends.jobs().await?;
    let accepted: HashSet<&str> = run
        .calls
        .iter()
        .filter_map(|c| c.outcome.as_ref().ok().map(String::as_str))
        .collect();

    // Records no 202 named: left by refused (or unanswered) submits. Read
    // again one by one, consistently.
    let mut refused_pending = 0;
    let mut refused_not_failed = 0;
    let mut refused_statuses: HashMap<String, usize> = HashMap::new();
    for id in records.keys().filter(|id| !accepted.contains(id.as_str())) {
        let status = backends
            .status_of(id)
            .await?
            .unwrap_or_else(|| "gone".to_owned());
        refused_pending += usize::from(status == "pending");
        refused_not_failed += usize::from(status != "failed");
        *refused_statuses.entry(status).or_default() += 1;
    }

    let mut ledger = Ledger::default();
    ledger.count("submits", run.calls.len());
    ledger.count("202", accepted.len());
    add_failures_by_code(&mut ledger, &run.calls);
    ledger.count("items (job records)", records.len());
    ledger.count("messages", message_count);
    ledger.loss(
        "202 without item",
        accepted
            .iter()
            .filter(|id| !records.contains_key(**id))
            .count(),
    );
    ledger.loss(
        "202 without message",
        accepted
            .iter()
            .filter(|id| !messages.contains_key(**id))
            .count(),
    );
    ledger.loss(
        "pending without message",
        records
            .iter()
            .filter(|(id, status)| *status == "pending" && !messages.contains_key(*id))
            .count(),
    );
    ledger.loss("non-2xx that left a pending item", refused_pending);
    ledger.loss("non-2xx whose record is not failed", refused_not_failed);
    ledger.count(
        "records of non-2xx submits",
        records.len()
            - records
                .keys()
                .filter(|id| accepted.contains(id.as_str()))
                .count(),
    );
    let mut statuses: Vec<(String, usize)> = refused_statuses.into_iter().collect();
    statuses.sort();
    for (status, n) in statuses {
        ledger.count(&format!("  of them `{status}`"), n);
    }
    ledger.count(
        "messages whose submit was not 202",
        messages
            .keys()
            .filter(|id| !accepted.contains(id.as_str()))
            .count(),
    );
    ledger.count(
        "duplicate messages",
        messages.values().map(|n| n.saturating_sub(1)).sum(),
    );
    ledger.count("messages without a task_id", unreadable);

    let ok = |o: &Result<String, http::Failure>| o.is_ok();
    let unavailable = |o: &Result<String, http::Failure>| {
        o.as_ref()
            .err()
            .is_some_and(|f| f.status.is_some_and(|s| s.as_u16() == 503))
    };
    if let Some(window) = &window {
        Recovery::of(&run.calls, window, ok, unavailable).add_to(&mut ledger, "202");
    }
    let accepted_latency: Latencies = run
        .calls
        .iter()
        .filter(|c| {
            c.outcome.is_ok() && window.is_none_or(|w| c.answered() < w.from || c.started >= w.to)
        })
        .map(|c| c.took)
        .collect();
    ledger.figure(
        "202 latency outside the cut, p50 / p99",
        format!(
            "{:.0} / {:.0} ms",
            ms(accepted_latency.p(50.0)),
            ms(accepted_latency.p(99.0))
        ),
    );
    ledger.figure(
        "submits per second (whole run)",
        format!("{:.1}", rate(run.calls.len(), run.elapsed)),
    );
    ledger.figure(
        "orchestrator peak RSS (VmHWM)",
        format!("{:.1} MiB", mib(service.mem().hwm_kib)),
    );

    println!(
        "\n=== submit soak: {} ===",
        settings.describe("submits", "moto")
    );
    ledger.print();
    service.print_log_summary();
    Ok(Verdict::from_losses(ledger.losses()))
}
