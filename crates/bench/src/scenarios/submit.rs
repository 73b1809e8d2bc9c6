//! `bench submit`: `POST /api/v1/camera-angle/jobs` then `GET
//! /api/v1/jobs/{id}` of the submitted ids, at concurrency 1, 8 and 64, on
//! (a) the embedded backends (SQLite) and (b) SQS + DynamoDB on moto; then
//! (c) the same backend calls made straight to moto with the SDK — a
//! submit is a conditional `PutItem` of the record awaiting its message, a
//! `SendMessage` and the conditional `UpdateItem` that confirms it; a status
//! a consistent `GetItem` — which is the ceiling (b) can reach.
//!
//! Knobs: `BENCH_SUBMITS_EMBEDDED` (per level, 3000),
//! `BENCH_STATUS_EMBEDDED` (10000), `BENCH_SUBMITS_MOTO` (300),
//! `BENCH_STATUS_MOTO` (1000), `BENCH_LEVEL_SECS` (cap per level, 30),
//! `BENCH_SKIP_MOTO=1` (part (a) only), `MOTO_URL`.

use std::{sync::Arc, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;

use super::Verdict;
use crate::harness::{
    BoxError, aws,
    child::{Binary, Service},
    http::{self, Failure},
    jobs::CAMERA_ANGLE,
    knobs,
    load::{Level, level},
    report::Table,
    stats::mib,
};

const LEVELS: [usize; 3] = [1, 8, 64];
/// Queue depth is the cost on moto, so warm-up is short there.
const WARMUP: usize = 10;

struct Counts {
    submits: usize,
    statuses: usize,
}

/// One backend's levels, with the queue depth before each submit level.
struct Part {
    title: String,
    rows: Vec<(Level, Option<u64>)>,
    memory: Option<String>,
}

pub async fn run() -> Result<Verdict, BoxError> {
    let cap = knobs::seconds("BENCH_LEVEL_SECS", 30, 1..=3600)?;
    let embedded = Counts {
        submits: knobs::number("BENCH_SUBMITS_EMBEDDED", 3000, 1..=1_000_000)?,
        statuses: knobs::number("BENCH_STATUS_EMBEDDED", 10_000, 1..=1_000_000)?,
    };
    let on_moto = Counts {
        submits: knobs::number("BENCH_SUBMITS_MOTO", 300, 1..=100_000)?,
        statuses: knobs::number("BENCH_STATUS_MOTO", 1000, 1..=1_000_000)?,
    };
    let skip_moto = knobs::flag("BENCH_SKIP_MOTO");
    let moto = if skip_moto {
        None
    } else {
        Some(aws::moto().await?)
    };
    let client = http::client(64)?;
    println!("submit body: {}", CAMERA_ANGLE.body);

    let mut parts = vec![
        orchestrator_part(
            "(a) embedded: SQLite task table + SQLite queues",
            &client,
            &[],
            &embedded,
            cap,
            None,
        )
        .await?,
    ];
    if let Some(moto) = &moto {
        let backends = aws::JobBackends::create(moto, 3).await?;
        let title = format!("(b) SQS + DynamoDB on moto ({})", backends.table);
        let part = orchestrator_part(
            &title,
            &client,
            &backends.env,
            &on_moto,
            cap,
            Some(&backends),
        )
        .await;
        backends.delete().await;
        parts.push(part?);
        let backends = aws::JobBackends::create(moto, 3).await?;
        let part = ceiling(&backends, &on_moto, cap).await;
        backends.delete().await;
        parts.push(part?);
    }

    println!("\n=== orchestrator submit and status ===");
    let mut errors = 0;
    for part in &parts {
        println!("\n{}", part.title);
        let mut header = Level::HEADER.to_vec();
        header.push("queued before");
        let mut table = Table::new(&header);
        for (level, queued) in &part.rows {
            let mut row = level.cells();
            row.push(queued.map_or_else(|| "-".to_owned(), |q| q.to_string()));
            table.row(row);
            errors += level.errors;
        }
        table.print();
        if let Some(memory) = &part.memory {
            println!("{memory}");
        }
    }
    if let [_, b, c] = parts.as_slice() {
        println!("\norchestrator on moto as a share of the moto ceiling (req/s):");
        for ((s, _), (m, _)) in b.rows.iter().zip(&c.rows) {
            println!(
                "  {:<7} c={:<3} {:>8.1} / {:>8.1} = {:>5.1}%",
                s.label,
                s.concurrency,
                s.per_sec(),
                m.per_sec(),
                s.per_sec() / m.per_sec().max(1e-9) * 100.0
            );
        }
    }
    if errors > 0 {
        return Err(format!("{errors} request(s) failed").into());
    }
    Ok(Verdict::Done)
}

async fn orchestrator_part(
    title: &str,
    client: &reqwest::Client,
    env: &[(String, String)],
    counts: &Counts,
    cap: Duration,
    backends: Option<&aws::JobBackends>,
) -> Result<Part, BoxError> {
    println!("\n{title}");
    let mut service = Service::start(Binary::Orchestrator, env, client).await?;
    let (pid, base): (u32, Arc<str>) = (service.pid(), service.base().into());
    let submit = {
        let (client, base) = (client.clone(), base.clone());
        move |_| {
            let (client, base) = (client.clone(), base.clone());
            async move { http::submit(&client, &base, CAMERA_ANGLE).await }
        }
    };
    let (warm, mut ids) = level("warm-up", 4, WARMUP, cap, None, submit.clone()).await?;
    if warm.errors > 0 {
        return Err(format!(
            "warm-up submits failed: {}",
            warm.first_error.unwrap_or_default()
        )
        .into());
    }
    let mut rows = Vec::new();
    for concurrency in LEVELS {
        let queued = match backends {
            Some(b) => b.visible(&b.gpu_queue).await,
            None => None,
        };
        let (l, new) = level(
            "submit",
            concurrency,
            counts.submits,
            cap,
            Some(pid),
            submit.clone(),
        )
        .await?;
        ids.extend(new);
        rows.push((l, queued));
    }
    let after_submits = service.mem();
    let ids = Arc::new(ids);
    for concurrency in LEVELS {
        let (client, base, ids) = (client.clone(), base.clone(), ids.clone());
        let status = move |i: usize| {
            let (client, base, ids) = (client.clone(), base.clone(), ids.clone());
            async move { http::job_status(&client, &base, &ids[i % ids.len()]).await }
        };
        rows.push((
            level(
                "status",
                concurrency,
                counts.statuses,
                cap,
                Some(pid),
                status,
            )
            .await?
            .0,
            None,
        ));
    }
    service.check_running()?;
    let end = service.mem();
    Ok(Part {
        title: title.to_owned(),
        rows,
        memory: Some(format!(
            "service RSS {:.1} MiB at start-up, {:.1} after the submits, {:.1} at the end; peak {:.1} MiB",
            mib(service.boot_mem.rss_kib),
            mib(after_submits.rss_kib),
            mib(end.rss_kib),
            mib(end.hwm_kib)
        )),
    })
}

/// Part (c): the orchestrator's backend calls, straight to moto.
async fn ceiling(
    backends: &aws::JobBackends,
    counts: &Counts,
    cap: Duration,
) -> Result<Part, BoxError> {
    let title = "(c) moto ceiling: put+send+confirm = conditional PutItem + SendMessage + conditional UpdateItem, get = consistent GetItem";
    println!("\n{title}");
    let (dynamo, sqs) = (backends.dynamo().clone(), backends.sqs().clone());
    let (table, queue): (Arc<str>, Arc<str>) = (
        backends.table.as_str().into(),
        backends.gpu_queue.as_str().into(),
    );
    let put_send = {
        let (dynamo, table) = (dynamo.clone(), table.clone());
        move |_| {
            let (dynamo, sqs, table, queue) =
                (dynamo.clone(), sqs.clone(), table.clone(), queue.clone());
            async move { put_and_send(&dynamo, &sqs, &table, &queue).await }
        }
    };
    let (warm, mut ids) = level("warm-up", 1, WARMUP, cap, None, put_send.clone()).await?;
    if warm.errors > 0 {
        return Err(format!(
            "warm-up calls failed: {}",
            warm.first_error.unwrap_or_default()
        )
        .into());
    }
    let mut rows = Vec::new();
    for concurrency in LEVELS {
        let queued = backends.visible(&backends.gpu_queue).await;
        let (l, new) = level(
            "put+send+confirm",
            concurrency,
            counts.submits,
            cap,
            None,
            put_send.clone(),
        )
        .await?;
        ids.extend(new);
        rows.push((l, queued));
    }
    let ids = Arc::new(ids);
    for concurrency in LEVELS {
        let (dynamo, table, ids) = (dynamo.clone(), table.clone(), ids.clone());
        let get = move |i: usize| {
            let (dynamo, table, ids) = (dynamo.clone(), table.clone(), ids.clone());
            async move { get(&dynamo, &table, &ids[i % ids.len()]).await }
        };
        rows.push((
            level("get", concurrency, counts.statuses, cap, None, get)
                .await?
                .0,
            None,
        ));
    }
    Ok(Part {
        title: title.to_owned(),
        rows,
        memory: None,
    })
}

fn failed(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure {
        status: None,
        detail: format!("{what}: {e}"),
    }
}

/// A submit's three calls as the orchestrator makes them on AWS.
async fn put_and_send(
    dynamo: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    table: &str,
    queue: &str,
) -> Result<String, Failure> {
    let task_id = uuid::Uuid::new_v4().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let s = |v: &str| AttributeValue::S(v.to_owned());
    dynamo
        .put_item()
        .table_name(table)
        .item("task_id", s(&task_id))
        .item("status", s("pending"))
        .item("job_type", s(CAMERA_ANGLE.route))
        .item("kind", s(CAMERA_ANGLE.name))
        .item("queue", s("gpu"))
        .item("created_at", AttributeValue::N(now.clone()))
        .item("updated_at", AttributeValue::N(now))
        .item("awaiting_queue", AttributeValue::Bool(true))
        .condition_expression("attribute_not_exists(task_id)")
        .send()
        .await
        .map_err(|e| failed("PutItem", aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
    let body = serde_json::json!({
        "task_id": task_id,
        "api_path": CAMERA_ANGLE.route,
        "request_body": {"image_url": "https://cdn.example.test/images/s/a.png", "prompt": null,
            "vertical": 0, "horizontal": 0, "zoom": 0, "seed": null, "steps": 8},
    });
    sqs.send_message()
        .queue_url(queue)
        .message_body(body.to_string())
        .send()
        .await
        .map_err(|e| failed("SendMessage", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    dynamo
        .update_item()
        .table_name(table)
        .key("task_id", s(&task_id))
        .update_expression("REMOVE #awaiting")
        .condition_expression("#status = :pending")
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#awaiting", "awaiting_queue")
        .expression_attribute_values(":pending", s("pending"))
        .send()
        .await
        .map_err(|e| {
            failed(
                "UpdateItem",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e),
            )
        })?;
    Ok(task_id)
}

/// A status read as the orchestrator makes it.
async fn get(dynamo: &aws_sdk_dynamodb::Client, table: &str, id: &str) -> Result<(), Failure> {
    let out = dynamo
        .get_item()
        .table_name(table)
        .key("task_id", AttributeValue::S(id.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| failed("GetItem", aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
    out.item()
        .map(|_| ())
        .ok_or_else(|| failed("GetItem", format!("no item {id}")))
}
