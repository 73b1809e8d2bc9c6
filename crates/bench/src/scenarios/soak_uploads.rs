//! `bench soak-uploads`: the upload soak (issue 9, item 7, "likewise for
//! uploads"). `SOAK_UPLOADS` uploads of a 16 KiB PNG at `SOAK_CONCURRENCY`
//! against canvas-service on Postgres (a fresh database) and S3 (moto)
//! through a fault proxy, which is cut for `SOAK_CUT_SECS` after a third of
//! them. After `SOAK_SETTLE_SECS` (the service deletes the objects of
//! failed uploads in the background for ~30 s) rows and objects are
//! reconciled with every answer: an upload answered 200 must have its row
//! and its object, and no row may lack its object nor an object its row.

use std::{collections::HashSet, sync::Arc, time::Duration};

use testkit::FaultProxy;

use super::Verdict;
use crate::harness::{
    BoxError, aws,
    child::{Binary, Service},
    cut::{Cut, Ledger, Recovery, SoakSettings, add_failures_by_code},
    http, images,
    load::Load,
    postgres::Database,
    stats::{Latencies, mib, ms, rate},
};

pub async fn run() -> Result<Verdict, BoxError> {
    let settings = SoakSettings::from_env("SOAK_UPLOADS", 3000)?;
    let moto = aws::moto().await?;
    println!(
        "upload soak: {}",
        settings.describe("uploads of a 16 KiB PNG", "S3 (moto)")
    );
    let bucket = aws::Bucket::create(&moto).await?;
    let database = Database::create().await?;
    let result = soak(&settings, &moto, &bucket, &database).await;
    database.drop_database().await;
    bucket.delete().await;
    result
}

async fn soak(
    settings: &SoakSettings,
    moto: &str,
    bucket: &aws::Bucket,
    database: &Database,
) -> Result<Verdict, BoxError> {
    let client = http::client(settings.concurrency)?;
    let (proxy, _) = FaultProxy::in_front_of(moto).await;
    let proxy = Arc::new(proxy);
    let mut env = aws::through(&testkit::emulator_env(), &proxy.url());
    env.extend([
        ("DATABASE_URL".to_owned(), database.url.clone()),
        ("S3_BUCKET".to_owned(), bucket.name.clone()),
        // The soak counts what the parts do, not the upload slots.
        ("MAX_CONCURRENT_UPLOADS".to_owned(), "0".to_owned()),
    ]);
    let mut service = Service::start(Binary::Canvas, &env, &client).await?;
    let mut sessions = Vec::new();
    for _ in 0..settings.concurrency {
        sessions.push(http::new_session(&client, service.base()).await?);
    }
    let sessions = Arc::new(sessions);
    let png = images::small_png(64);

    let load = Load::new(
        settings.concurrency,
        settings.count,
        Duration::from_secs(3600),
    )
    .reporting(Duration::from_secs(15));
    let cut = Cut::schedule(proxy.clone(), load.answered(), settings);
    let base: Arc<str> = service.base().into();
    let run = load
        .run_backing_off(
            move |i| {
                let (client, base, sessions) = (client.clone(), base.clone(), sessions.clone());
                let file = images::png_part(&png);
                async move {
                    let session = &sessions[i % sessions.len()];
                    http::upload(&client, &base, session, file, http::REQUEST_TIMEOUT).await
                }
            },
            settings.backoff,
        )
        .await?;
    let window = cut.finish().await?;
    service.check_running()?;
    println!(
        "{} uploads answered in {:.1} s; settling {} s before the check",
        run.calls.len(),
        run.elapsed.as_secs_f64(),
        settings.settle.as_secs()
    );
    tokio::time::sleep(settings.settle).await;

    let rows = database.image_keys().await?;
    let row_keys: HashSet<&str> = rows.iter().map(String::as_str).collect();
    let objects = bucket.keys().await?;
    let stored: Vec<&str> = run
        .calls
        .iter()
        .filter_map(|c| c.outcome.as_ref().ok().map(String::as_str))
        .collect();

    let mut ledger = Ledger::default();
    ledger.count("uploads", run.calls.len());
    ledger.count("200", stored.len());
    add_failures_by_code(&mut ledger, &run.calls);
    ledger.count("rows (images)", rows.len());
    ledger.count("objects", objects.len());
    ledger.loss(
        "200 without row",
        stored.iter().filter(|k| !row_keys.contains(**k)).count(),
    );
    ledger.loss(
        "200 without object",
        stored.iter().filter(|k| !objects.contains(**k)).count(),
    );
    ledger.loss(
        "rows without object",
        row_keys.iter().filter(|k| !objects.contains(**k)).count(),
    );
    ledger.loss(
        "objects without row",
        objects
            .iter()
            .filter(|k| !row_keys.contains(k.as_str()))
            .count(),
    );
    ledger.count("rows holding a key twice", rows.len() - row_keys.len());

    let ok = |o: &Result<String, http::Failure>| o.is_ok();
    let unavailable = |o: &Result<String, http::Failure>| {
        o.as_ref()
            .err()
            .is_some_and(|f| f.status.is_some_and(|s| s.as_u16() == 503))
    };
    if let Some(window) = &window {
        Recovery::of(&run.calls, window, ok, unavailable).add_to(&mut ledger, "200");
    }
    let ok_latency: Latencies = run
        .calls
        .iter()
        .filter(|c| {
            c.outcome.is_ok() && window.is_none_or(|w| c.answered() < w.from || c.started >= w.to)
        })
        .map(|c| c.took)
        .collect();
    ledger.figure(
        "200 latency outside the cut, p50 / p99",
        format!(
            "{:.0} / {:.0} ms",
            ms(ok_latency.p(50.0)),
            ms(ok_latency.p(99.0))
        ),
    );
    ledger.figure(
        "uploads per second (whole run)",
        format!("{:.1}", rate(run.calls.len(), run.elapsed)),
    );
    ledger.figure(
        "canvas-service peak RSS (VmHWM)",
        format!("{:.1} MiB", mib(service.mem().hwm_kib)),
    );

    println!(
        "\n=== upload soak: {} ===",
        settings.describe("uploads", "S3")
    );
    ledger.print();
    service.print_log_summary();
    Ok(Verdict::from_losses(ledger.losses()))
}
