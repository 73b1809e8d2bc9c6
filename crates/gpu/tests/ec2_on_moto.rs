//! `Ec2GpuHost` and the controller against EC2 as moto emulates it. moto
//! completes every transition at once, so the in-between states are covered
//! by the scripted host in `controller.rs`; here the point is that the real
//! EC2 calls are made and read correctly.
//!
//! Needs moto at `MOTO_URL` (default http://127.0.0.1:5000). Skips loudly
//! when it is not reachable, unless `REQUIRE_LIVE_BACKENDS=1`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::aws::AwsSettings;
use gpu::{Ec2GpuHost, GpuController, GpuHost, GpuSettings, GpuWork, InstanceState, WorkSnapshot};
use tokio_util::sync::CancellationToken;

async fn moto() -> Option<AwsSettings> {
    let url = std::env::var("MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    let authority = url
        .split("://")
        .last()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let reachable = matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&authority)
        )
        .await,
        Ok(Ok(_))
    );
    if reachable {
        return Some(AwsSettings::emulator(&url));
    }
    if std::env::var("REQUIRE_LIVE_BACKENDS").as_deref() == Ok("1") {
        panic!("moto is not reachable at {url} and REQUIRE_LIVE_BACKENDS=1");
    }
    eprintln!(
        "\n*** SKIPPED: moto is not reachable at {url}; the EC2 tests did not run. \
         Start it with `moto_server -H 127.0.0.1 -p 5000` or set MOTO_URL. ***\n"
    );
    None
}

/// A fresh instance of its own for each test, so tests never see each
/// other's state (and moto is never reset under someone else's feet).
struct TestInstance {
    ec2: aws_sdk_ec2::Client,
    id: String,
}

impl TestInstance {
    async fn launch(aws: &AwsSettings) -> Self {
        let ec2 = aws_sdk_ec2::Client::new(&aws.sdk_config().await);
        let launched = ec2
            .run_instances()
            .image_id("ami-12345678")
            .instance_type(aws_sdk_ec2::types::InstanceType::G5Xlarge)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .unwrap();
        let id = launched.instances()[0].instance_id().unwrap().to_owned();
        Self { ec2, id }
    }

    async fn launch_stopped(aws: &AwsSettings) -> Self {
        let instance = Self::launch(aws).await;
        instance
            .ec2
            .stop_instances()
            .instance_ids(&instance.id)
            .send()
            .await
            .unwrap();
        instance
    }

    /// The state as EC2 reports it, read without the code under test.
    async fn state(&self) -> String {
        let described = self
            .ec2
            .describe_instances()
            .instance_ids(&self.id)
            .send()
            .await
            .unwrap();
        described.reservations()[0].instances()[0]
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap()
    }

    /// Polls (real time, bounded) until the instance is in `wanted`.
    async fn reaches(&self, wanted: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.state().await == wanted {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn terminate(self) {
        let _ = self
            .ec2
            .terminate_instances()
            .instance_ids(&self.id)
            .send()
            .await;
    }
}

struct FixedWork(Mutex<WorkSnapshot>);

impl FixedWork {
    fn new(snapshot: WorkSnapshot) -> Arc<Self> {
        Arc::new(Self(Mutex::new(snapshot)))
    }

    fn set(&self, snapshot: WorkSnapshot) {
        *self.0.lock().unwrap() = snapshot;
    }
}

#[async_trait::async_trait]
impl GpuWork for FixedWork {
    async fn snapshot(&self) -> Result<WorkSnapshot, gpu::WorkError> {
        Ok(self.0.lock().unwrap().clone())
    }
}

fn fast(idle_timeout: Duration) -> GpuSettings {
    GpuSettings {
        poll_interval: Duration::from_millis(100),
        idle_timeout,
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        transition_poll_interval: Duration::from_millis(100),
    }
}

#[tokio::test]
async fn describe_start_and_stop_a_real_instance() {
    let Some(aws) = moto().await else { return };
    let instance = TestInstance::launch_stopped(&aws).await;
    let host = Ec2GpuHost::new(&aws, &instance.id).await;
    assert_eq!(host.instance_id(), Some(instance.id.as_str()));

    let view = host.describe().await.unwrap();
    assert_eq!(view.state, InstanceState::Stopped);

    host.start().await.unwrap();
    let view = host.describe().await.unwrap();
    assert_eq!(view.state, InstanceState::Running);
    assert!(view.private_ip.is_some(), "{view:?}");
    // Idempotent, as two orchestrators need.
    host.start().await.unwrap();

    host.stop().await.unwrap();
    assert_eq!(instance.state().await, "stopped");
    host.stop().await.unwrap();
    assert_eq!(host.describe().await.unwrap().state, InstanceState::Stopped);

    instance.terminate().await;
}

#[tokio::test]
async fn an_unknown_instance_is_a_permanent_error_with_ec2s_code() {
    let Some(aws) = moto().await else { return };
    let host = Ec2GpuHost::new(&aws, "i-0000000000000dead").await;
    let err = host.describe().await.unwrap_err();
    assert!(err.code.starts_with("InvalidInstanceID"), "{err:?}");
    assert!(!err.transient);
}

#[tokio::test]
async fn work_arriving_starts_the_stopped_instance() {
    let Some(aws) = moto().await else { return };
    let instance = TestInstance::launch_stopped(&aws).await;
    let host = Arc::new(Ec2GpuHost::new(&aws, &instance.id).await);
    let work = FixedWork::new(WorkSnapshot::default());
    let shutdown = CancellationToken::new();
    let gpu = GpuController::spawn(
        host,
        work,
        fast(Duration::from_secs(30 * 60)),
        shutdown.clone(),
    );

    assert!(instance.reaches("stopped", Duration::from_secs(1)).await);
    gpu.work_arrived();
    assert!(
        instance.reaches("running", Duration::from_secs(5)).await,
        "not started; status: {:?}",
        gpu.status()
    );

    shutdown.cancel();
    instance.terminate().await;
}

#[tokio::test]
async fn an_idle_instance_is_stopped_and_a_busy_one_is_not() {
    let Some(aws) = moto().await else { return };
    let instance = TestInstance::launch(&aws).await;
    let host = Arc::new(Ec2GpuHost::new(&aws, &instance.id).await);
    let work = FixedWork::new(WorkSnapshot {
        processing: 1,
        ..WorkSnapshot::default()
    });
    let shutdown = CancellationToken::new();
    let gpu = GpuController::spawn(
        host,
        work.clone(),
        fast(Duration::from_millis(200)),
        shutdown.clone(),
    );

    // Five idle timeouts under a running job: still running.
    assert!(!instance.reaches("stopped", Duration::from_secs(1)).await);
    assert_eq!(gpu.status().state, "running");

    work.set(WorkSnapshot::default());
    assert!(
        instance.reaches("stopped", Duration::from_secs(5)).await,
        "not stopped; status: {:?}",
        gpu.status()
    );

    shutdown.cancel();
    instance.terminate().await;
}
