//! What every `JobQueue` must do, written once and run on both
//! implementations: the embedded SQLite queue and SQS (moto). Each behaviour
//! is one function taking the backend set under test; the queue is the CPU
//! queue of an orchestrator started the way `main` starts it (no background
//! loops run, and nothing else reads that queue). Every queue here redrives
//! to its dead letters after `MAX_RECEIVES` receives.

mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use orchestrator::queue::{JobQueue, QueueDepth, QueueMessage};
use support::{MAX_RECEIVES, TestApp, TestAppBuilder};

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    aws: super::TestApp::aws();

    a_sent_message_is_received_once_with_its_body,
    a_received_message_is_hidden_for_its_visibility_then_comes_back,
    receive_count_grows_by_one_per_receive,
    zero_visibility_releases_a_message_at_once,
    extending_the_visibility_keeps_a_message_hidden,
    a_deleted_message_never_comes_back,
    after_max_receives_the_message_goes_to_the_dead_letters_with_its_count,
    dead_letter_moves_a_message_at_once,
    depth_counts_visible_and_in_flight_messages,
    receive_takes_at_most_max,
    a_waiting_receive_returns_when_a_message_arrives,
    an_empty_receive_waits_for_its_wait,
    nothing_dead_means_no_dead_letters,
    ping_answers,
);

/// Long enough that a message received with it stays hidden for the test.
const HIDDEN: Duration = Duration::from_secs(30);
/// SQS counts visibility in whole seconds: the shortest that still hides.
const SHORT: Duration = Duration::from_secs(1);
/// What a receive that expects a message waits for it at most.
const WAIT: Duration = Duration::from_secs(5);

struct Subject {
    _app: TestApp,
    queue: Arc<dyn JobQueue>,
}

async fn subject(builder: TestAppBuilder) -> Subject {
    let app = builder.start().await;
    let queue = app.app.cpu_queue.clone();
    Subject { _app: app, queue }
}

impl Subject {
    async fn send(&self, body: &str) {
        self.queue.send(body).await.expect("send");
    }

    /// Exactly one message, waiting for it up to `WAIT`.
    async fn receive_one(&self, visibility: Duration) -> QueueMessage {
        let mut messages = self
            .queue
            .receive(1, WAIT, visibility)
            .await
            .expect("receive");
        assert_eq!(messages.len(), 1, "expected one message: {messages:?}");
        messages.remove(0)
    }

    /// What a receive that does not wait gets right now.
    async fn receive_now(&self) -> Vec<QueueMessage> {
        self.queue
            .receive(10, Duration::ZERO, HIDDEN)
            .await
            .expect("receive")
    }

    async fn depth(&self) -> QueueDepth {
        self.queue.depth().await.expect("depth")
    }

    /// Received and released straight away, so the next receive counts one
    /// more: what a worker that cannot finish does.
    async fn receive_and_release(&self) -> QueueMessage {
        let message = self.receive_one(HIDDEN).await;
        self.queue
            .set_visibility(&message.receipt, Duration::ZERO)
            .await
            .expect("release");
        message
    }
}

fn depth(visible: u64, in_flight: u64) -> QueueDepth {
    QueueDepth { visible, in_flight }
}

async fn a_sent_message_is_received_once_with_its_body(builder: TestAppBuilder) {
    let q = subject(builder).await;
    let body = r#"{"task_id":"t-1","api_path":"/x","request_body":{"steps":8}}"#;
    q.send(body).await;
    let message = q.receive_one(HIDDEN).await;
    assert_eq!(message.body, body);
    assert_eq!(message.receive_count, 1);
    assert!(!message.message_id.is_empty());
    assert!(!message.receipt.is_empty());
    // Hidden now: a second receiver does not get it too.
    assert!(q.receive_now().await.is_empty());
}

async fn a_received_message_is_hidden_for_its_visibility_then_comes_back(builder: TestAppBuilder) {
    let q = subject(builder).await;
    q.send("comes back").await;
    let first = q.receive_one(SHORT).await;
    let received_at = Instant::now();
    assert!(q.receive_now().await.is_empty(), "visible while hidden");
    assert_eq!(q.depth().await, depth(0, 1));
    let again = q.receive_one(HIDDEN).await;
    let hidden_for = received_at.elapsed();
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.body, "comes back");
    assert!(
        hidden_for >= Duration::from_millis(800),
        "back after {hidden_for:?}, before its visibility of {SHORT:?} ended"
    );
}

async fn receive_count_grows_by_one_per_receive(builder: TestAppBuilder) {
    let q = subject(builder).await;
    q.send("counted").await;
    let first = q.receive_and_release().await;
    let second = q.receive_one(HIDDEN).await;
    assert_eq!(first.receive_count, 1);
    assert_eq!(second.receive_count, 2);
    assert_eq!(second.message_id, first.message_id);
    // Each receive has its own receipt.
    assert_ne!(second.receipt, first.receipt);
}

async fn zero_visibility_releases_a_message_at_once(builder: TestAppBuilder) {
    let q = subject(builder).await;
    q.send("released").await;
    let message = q.receive_one(HIDDEN).await;
    q.queue
        .set_visibility(&message.receipt, Duration::ZERO)
        .await
        .expect("release");
    assert_eq!(q.depth().await, depth(1, 0));
    let again = q.receive_now().await;
    assert_eq!(again.len(), 1, "not released: {again:?}");
    assert_eq!(again[0].message_id, message.message_id);
}

async fn extending_the_visibility_keeps_a_message_hidden(builder: TestAppBuilder) {
    let q = subject(builder).await;
    q.send("heartbeat").await;
    let message = q.receive_one(SHORT).await;
    q.queue
        .set_visibility(&message.receipt, HIDDEN)
        .await
        .expect("extend");
    // Past the first visibility: still hidden, as a running job's message
    // must be while its worker sends heartbeats.
    tokio::time::sleep(SHORT + Duration::from_millis(500)).await;
    assert!(q.receive_now().await.is_empty(), "came back while extended");
    assert_eq!(q.depth().await, depth(0, 1));
}

async fn a_deleted_message_never_comes_back(builder: TestAppBuilder) {
    let q = subject(builder).await;
    q.send("done").await;
    let message = q.receive_one(SHORT).await;
    q.queue.delete(&message.receipt).await.expect("delete");
    assert_eq!(q.depth().await, depth(0, 0));
    // Past its visibility it does not reappear.
    tokio::time::sleep(SHORT + Duration::from_millis(500)).await;
    assert!(q.receive_now().await.is_empty());
    assert!(q.queue.receive_dead(10).await.expect("dead").is_empty());
}

async fn after_max_receives_the_message_goes_to_the_dead_letters_with_its_count(
    builder: TestAppBuilder,
) {
    let q = subject(builder).await;
    q.send("always fails").await;
    for attempt in 1..=MAX_RECEIVES {
        let message = q.receive_and_release().await;
        assert_eq!(message.receive_count, attempt);
    }
    // The receive after the last allowed one moves it instead of
    // delivering it.
    assert!(q.receive_now().await.is_empty(), "delivered past its limit");
    assert_eq!(q.depth().await, depth(0, 0));
    let dead = q.queue.receive_dead(10).await.expect("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].body, "always fails");
    assert_eq!(dead[0].receive_count, MAX_RECEIVES);
    // A dead letter taken by one sweeper is hidden from the next one.
    assert!(q.queue.receive_dead(10).await.expect("dead").is_empty());
    q.queue
        .delete_dead(&dead[0].receipt)
        .await
        .expect("delete dead");
}

async fn dead_letter_moves_a_message_at_once(builder: TestAppBuilder) {
    let q = subject(builder).await;
    q.send("malformed").await;
    q.send("fine").await;
    let mut messages = [q.receive_one(HIDDEN).await, q.receive_one(HIDDEN).await];
    messages.sort_by(|a, b| a.body.cmp(&b.body));
    let (fine, malformed) = (&messages[0], &messages[1]);
    q.queue.dead_letter(malformed).await.expect("dead letter");
    // Gone from the queue at once, while the other is still in flight.
    assert_eq!(q.depth().await, depth(0, 1));
    let dead = q.queue.receive_dead(10).await.expect("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].body, "malformed");
    q.queue
        .set_visibility(&fine.receipt, Duration::ZERO)
        .await
        .expect("release");
    let back = q.receive_now().await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body, "fine");
}

async fn depth_counts_visible_and_in_flight_messages(builder: TestAppBuilder) {
    let q = subject(builder).await;
    assert_eq!(q.depth().await, depth(0, 0));
    for body in ["a", "b", "c"] {
        q.send(body).await;
    }
    assert_eq!(q.depth().await, depth(3, 0));
    let message = q.receive_one(HIDDEN).await;
    assert_eq!(q.depth().await, depth(2, 1));
    q.queue.delete(&message.receipt).await.expect("delete");
    assert_eq!(q.depth().await, depth(2, 0));
}

async fn receive_takes_at_most_max(builder: TestAppBuilder) {
    let q = subject(builder).await;
    for body in ["a", "b", "c"] {
        q.send(body).await;
    }
    let first = q.queue.receive(2, WAIT, HIDDEN).await.expect("receive");
    assert!(
        (1..=2).contains(&first.len()),
        "{} messages for max 2",
        first.len()
    );
    // The rest, and never one message twice.
    let mut bodies: Vec<String> = first.into_iter().map(|m| m.body).collect();
    while bodies.len() < 3 {
        let more = q.queue.receive(10, WAIT, HIDDEN).await.expect("receive");
        assert!(!more.is_empty(), "messages lost: got {bodies:?}");
        bodies.extend(more.into_iter().map(|m| m.body));
    }
    bodies.sort();
    assert_eq!(bodies, ["a", "b", "c"]);
}

async fn a_waiting_receive_returns_when_a_message_arrives(builder: TestAppBuilder) {
    let q = subject(builder).await;
    let queue = q.queue.clone();
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        queue
            .receive(1, Duration::from_secs(8), HIDDEN)
            .await
            .expect("receive")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.send("late").await;
    let got = waiting.await.expect("the receive task");
    assert_eq!(got.len(), 1, "the waiting receive missed the message");
    assert_eq!(got[0].body, "late");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "returned only after {:?}",
        started.elapsed()
    );
}

async fn an_empty_receive_waits_for_its_wait(builder: TestAppBuilder) {
    let q = subject(builder).await;
    let started = Instant::now();
    let got = q
        .queue
        .receive(1, Duration::from_secs(1), HIDDEN)
        .await
        .expect("receive");
    assert!(got.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "gave up after {:?}",
        started.elapsed()
    );
}

async fn nothing_dead_means_no_dead_letters(builder: TestAppBuilder) {
    let q = subject(builder).await;
    q.send("alive").await;
    let _ = q.receive_one(HIDDEN).await;
    assert!(q.queue.receive_dead(10).await.expect("dead").is_empty());
}

async fn ping_answers(builder: TestAppBuilder) {
    let q = subject(builder).await;
    q.queue.ping().await.expect("ping");
}

/// Where the two implementations disagree today. The behaviour is written
/// once like the others; the backend that does not have it is `#[ignore]`d
/// with the reason, so `cargo nextest run --run-ignored only` shows it fail.
mod divergences {
    use super::*;

    /// The trait: "`receive_count` is how many times the job was tried".
    /// A message that `dead_letter` moved after one receive was tried once.
    async fn an_at_once_dead_letter_keeps_its_real_receive_count(builder: TestAppBuilder) {
        let q = subject(builder).await;
        q.send("malformed").await;
        let message = q.receive_one(HIDDEN).await;
        q.queue.dead_letter(&message).await.expect("dead letter");
        let dead = q.queue.receive_dead(10).await.expect("dead");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].receive_count, 1, "tried once");
    }

    #[tokio::test]
    async fn embedded_an_at_once_dead_letter_keeps_its_real_receive_count() {
        an_at_once_dead_letter_keeps_its_real_receive_count(TestApp::embedded()).await;
    }

    #[tokio::test]
    async fn aws_an_at_once_dead_letter_keeps_its_real_receive_count() {
        if let Some(builder) = TestApp::aws().await {
            an_at_once_dead_letter_keeps_its_real_receive_count(builder).await;
        }
    }
}
