//! `bench upload`: canvas-service with zero configuration (SQLite and a
//! local directory). Small uploads (a 16 KiB PNG) at concurrency 1, 8 and
//! 64, then one large upload (`BENCH_BIG_MIB`, default 256 MiB) streamed
//! while the service's RSS is sampled every 20 ms: memory must not grow
//! with the file (goal: peak under 64 MiB). `MAX_CONCURRENT_UPLOADS` is
//! off, so concurrency 64 reaches the service rather than its 503.
//!
//! Knobs: `BENCH_SMALL_UPLOADS` (per level, 5000), `BENCH_LEVEL_SECS`
//! (cap per level, 20), `BENCH_BIG_MIB` (256, at most 300).

use std::{sync::Arc, time::Duration};

use super::Verdict;
use crate::{
    cells,
    harness::{
        BoxError,
        child::{Binary, Service},
        http, images, knobs,
        load::{Level, level},
        report::Table,
        sampling::{self, PeakSampler},
        stats::{mib, pct, rate},
    },
};

const LEVELS: [usize; 3] = [1, 8, 64];
const BIG_TIMEOUT: Duration = Duration::from_secs(600);
const RSS_GOAL_KIB: u64 = 64 * 1024;

pub async fn run() -> Result<Verdict, BoxError> {
    let uploads = knobs::number("BENCH_SMALL_UPLOADS", 5000, 1..=1_000_000)?;
    let cap = knobs::seconds("BENCH_LEVEL_SECS", 20, 1..=3600)?;
    let big_mib: u64 = knobs::number("BENCH_BIG_MIB", 256, 1..=300)?;
    let client = http::client(64)?;
    let env = [
        ("MAX_UPLOAD_BYTES".to_owned(), (300u64 << 20).to_string()),
        // Concurrency 64 measures the service, not its upload slots (16).
        ("MAX_CONCURRENT_UPLOADS".to_owned(), "0".to_owned()),
    ];
    let mut service = Service::start(Binary::Canvas, &env, &client).await?;
    let png = images::small_png(64);
    println!(
        "{uploads} uploads of a {} byte PNG per level (cap {} s), one session per level",
        png.len(),
        cap.as_secs()
    );

    small_level(&client, &service, &png, 4, 20, cap, "warm-up").await?;
    let mut levels = Vec::new();
    for concurrency in LEVELS {
        levels
            .push(small_level(&client, &service, &png, concurrency, uploads, cap, "upload").await?);
    }
    let after_small = service.mem();

    // The large upload, on a settled process.
    let session = http::new_session(&client, service.base()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = service.mem();
    let reset = sampling::reset_peak(service.pid());
    let sampler = PeakSampler::start(service.pid(), Duration::from_millis(20), BIG_TIMEOUT);
    let started = std::time::Instant::now();
    let total = big_mib << 20;
    let stored = http::upload(
        &client,
        service.base(),
        &session,
        images::big_png_part(total),
        BIG_TIMEOUT,
    )
    .await;
    let took = started.elapsed();
    let after = service.mem();
    let (sampled_peak, samples) = sampler.stop();
    service.check_running()?;
    let stored_len = stored.as_ref().ok().and_then(|key| {
        std::fs::metadata(service.dir().join("objects").join(key))
            .ok()
            .map(|m| m.len())
    });

    println!("\n=== canvas-service uploads (SQLite + local directory) ===");
    let mut header: Vec<&str> = Level::HEADER.to_vec();
    header.push("MiB/s");
    let mut table = Table::new(&header);
    for l in &levels {
        let mut row = l.cells();
        row.push(format!(
            "{:.1}",
            rate(l.ok, l.elapsed) * png.len() as f64 / f64::from(1u32 << 20)
        ));
        table.row(row);
    }
    table.print();
    println!(
        "RSS after the small uploads {:.1} MiB (peak so far {:.1} MiB)",
        mib(after_small.rss_kib),
        mib(after_small.hwm_kib)
    );
    let peak = after.hwm_kib.max(sampled_peak);
    let mut big = Table::new(&["large upload", "value"]);
    big.row(cells!["size", format!("{big_mib} MiB")]);
    big.row(cells![
        "answer",
        match (&stored, stored_len) {
            (Ok(_), Some(len)) if len == total => "200, stored size matches".to_owned(),
            (Ok(_), other) => format!("200, but stored {other:?} bytes"),
            (Err(e), _) => format!("FAILED: {e}"),
        }
    ]);
    big.row(cells![
        "time",
        format!(
            "{:.2} s ({:.0} MiB/s)",
            took.as_secs_f64(),
            big_mib as f64 / took.as_secs_f64()
        )
    ]);
    big.row(cells![
        "RSS at start-up / idle before",
        format!(
            "{:.1} / {:.1} MiB",
            mib(service.boot_mem.rss_kib),
            mib(idle.rss_kib)
        )
    ]);
    big.row(cells![
        if reset {
            "peak RSS during (VmHWM reset before)"
        } else {
            "peak RSS (VmHWM NOT reset)"
        },
        format!("{:.1} MiB ({samples} samples)", mib(peak))
    ]);
    big.row(cells![
        "RSS after",
        format!("{:.1} MiB", mib(after.rss_kib))
    ]);
    big.row(cells![
        "goal: peak < 64 MiB",
        if peak < RSS_GOAL_KIB { "met" } else { "MISSED" }
    ]);
    big.print();
    println!(
        "service CPU per level: {}",
        levels
            .iter()
            .map(|l| pct(l.cpu.service))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let errors: usize = levels.iter().map(|l| l.errors).sum();
    if errors > 0 || stored.is_err() {
        return Err(format!(
            "{errors} small upload(s) failed; the large upload {}",
            if stored.is_ok() { "passed" } else { "failed" }
        )
        .into());
    }
    Ok(Verdict::Done)
}

async fn small_level(
    client: &reqwest::Client,
    service: &Service,
    png: &bytes::Bytes,
    concurrency: usize,
    count: usize,
    cap: Duration,
    label: &str,
) -> Result<Level, BoxError> {
    let session: Arc<str> = http::new_session(client, service.base()).await?.into();
    let (client, base, png) = (
        client.clone(),
        Arc::<str>::from(service.base()),
        png.clone(),
    );
    let op = move |_| {
        let (client, base, session, file) = (
            client.clone(),
            base.clone(),
            session.clone(),
            images::png_part(&png),
        );
        async move { http::upload(&client, &base, &session, file, http::REQUEST_TIMEOUT).await }
    };
    let (level, _) = level(label, concurrency, count, cap, Some(service.pid()), op).await?;
    if label == "warm-up" && level.errors > 0 {
        return Err(format!(
            "warm-up uploads failed: {}",
            level.first_error.unwrap_or_default()
        )
        .into());
    }
    Ok(level)
}
