//! Every job kind the orchestrator accepts, in one table: its public route,
//! the queue it goes to, the `api_path` the adapter calls on its host, the
//! CPU adapter's `task_type`, and its request schema (defaults and ranges).
//! A new kind is one request type below plus one line in `job_kinds!`.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

pub use crate::domain::{JobKind, QueueName};

/// A field of a request out of range or malformed: 422 naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidField {
    pub field: String,
    pub problem: String,
}

impl InvalidField {
    pub fn new(field: &str, problem: impl std::fmt::Display) -> Self {
        Self {
            field: field.to_owned(),
            problem: problem.to_string(),
        }
    }
}

/// A job request: parsed with its defaults filled in, then checked.
pub trait JobRequest: DeserializeOwned + Serialize + ToSchema + Send + 'static {
    const KIND: JobKind;

    /// Range and format checks; 422 naming the field.
    fn validate(&self) -> Result<(), InvalidField>;
}

/// The table, handed to a macro: this file makes the `JobRequest` impls and
/// `KINDS` from it, `routes/submit.rs` one submit handler per line. Each
/// line: handler name => request type { … }.
macro_rules! with_job_kinds {
    ($callback:ident) => {
        $callback! {
        submit_camera_angle => CameraAngleJob {
            name: "camera-angle", route: "/api/v1/camera-angle/jobs", queue: Gpu,
            api_path: "/api/v1/camera-angle/jobs", task_type: None,
        },
        submit_qwen_image_edit => QwenImageEditJob {
            name: "qwen-image-edit", route: "/api/v1/qwen-image-edit/jobs", queue: Gpu,
            api_path: "/api/v1/qwen-image-edit/jobs", task_type: None,
        },
        submit_face_mask => FaceMaskTask {
            name: "face-mask", route: "/api/v1/face-mask/tasks", queue: Cpu,
            api_path: "/api/v1/face-mask/jobs", task_type: Some("face_mask"),
        },
        submit_face_swap => FaceSwapTask {
            name: "face-swap", route: "/api/v1/face-swap/tasks", queue: Cpu,
            api_path: "/api/v1/face-swap/jobs", task_type: Some("face_swap"),
        },
        submit_full_face_swap => FullFaceSwapTask {
            name: "full-face-swap", route: "/api/v1/full-face-swap/tasks", queue: Cpu,
            api_path: "/api/v1/full-face-swap/jobs", task_type: Some("full_face_swap"),
        },
            }
    };
}
pub(crate) use with_job_kinds;

macro_rules! job_requests {
    ($($handler:ident => $request:ident {
        name: $name:literal, route: $route:literal, queue: $queue:ident,
        api_path: $api_path:literal, task_type: $task_type:expr $(,)?
    }),* $(,)?) => {
        $(
            impl JobRequest for $request {
                const KIND: JobKind = JobKind {
                    name: $name,
                    route: $route,
                    queue: QueueName::$queue,
                    api_path: $api_path,
                    task_type: $task_type,
                };

                fn validate(&self) -> Result<(), InvalidField> {
                    self.check()
                }
            }
        )*

        /// Every kind, in table order.
        pub const KINDS: &[JobKind] = &[$(<$request as JobRequest>::KIND),*];
    };
}

with_job_kinds!(job_requests);

impl JobKind {
    /// The kind of this short name (`camera-angle`, `face-mask`, …).
    pub fn named(name: &str) -> Option<&'static JobKind> {
        KINDS.iter().find(|k| k.name == name)
    }
}

/// The `api_path`s of the GPU kinds (their records' `job_type`).
pub fn gpu_job_types() -> Vec<&'static str> {
    KINDS
        .iter()
        .filter(|k| k.queue == QueueName::Gpu)
        .map(|k| k.api_path)
        .collect()
}

fn in_range(field: &str, value: i64, min: i64, max: i64) -> Result<(), InvalidField> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

fn in_range_f(field: &str, value: f64, min: f64, max: f64) -> Result<(), InvalidField> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

/// The longest image URL accepted, in bytes.
const MAX_URL_LEN: usize = 4096;

/// Image URLs are fetched by the GPU/CPU hosts: absolute http(s) only.
fn image_url(field: &str, value: &str) -> Result<(), InvalidField> {
    let ok = (value.starts_with("https://") || value.starts_with("http://"))
        && value.len() <= MAX_URL_LEN
        && !value.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(field, "must be an absolute http(s) URL"))
    }
}

fn optional_url(field: &str, value: Option<&str>) -> Result<(), InvalidField> {
    value.map_or(Ok(()), |v| image_url(field, v))
}

/// What `image_url` accepts, as the OpenAPI documents say it, so a fuzzer
/// generates URLs that get past the check (`schema_with` on each URL field).
fn url_schema() -> utoipa::openapi::schema::Object {
    url_schema_of(utoipa::openapi::schema::Type::String.into())
}

fn optional_url_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::Type;
    url_schema_of([Type::String, Type::Null].into_iter().collect())
}

fn url_schema_of(
    schema_type: utoipa::openapi::schema::SchemaType,
) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(schema_type)
        .description(Some(
            "An absolute http(s) URL the host can fetch, without whitespace",
        ))
        .pattern(Some(r"^https?://\S+$"))
        .max_length(Some(MAX_URL_LEN))
        .build()
}

fn text(field: &str, value: Option<&str>) -> Result<(), InvalidField> {
    match value {
        Some(v) if v.len() > 10_000 => Err(InvalidField::new(field, "is longer than 10000 bytes")),
        _ => Ok(()),
    }
}

const fn eight() -> i64 {
    8
}
const fn four() -> i64 {
    4
}
const fn one() -> f64 {
    1.0
}
fn sa_solver() -> String {
    "sa_solver".to_owned()
}
fn beta() -> String {
    "beta".to_owned()
}
fn seedream() -> String {
    "seedream".to_owned()
}

/// A new camera angle of one image (GPU).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CameraAngleJob {
    #[schema(schema_with = url_schema)]
    pub image_url: String,
    #[serde(default)]
    pub prompt: Option<String>,
    /// -2..2
    #[serde(default)]
    #[schema(minimum = -2, maximum = 2)]
    pub vertical: i64,
    /// -2..2
    #[serde(default)]
    #[schema(minimum = -2, maximum = 2)]
    pub horizontal: i64,
    /// -1..1
    #[serde(default)]
    #[schema(minimum = -1, maximum = 1)]
    pub zoom: i64,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default = "eight")]
    #[schema(default = 8, minimum = 1, maximum = 100)]
    pub steps: i64,
}

impl CameraAngleJob {
    fn check(&self) -> Result<(), InvalidField> {
        image_url("image_url", &self.image_url)?;
        text("prompt", self.prompt.as_deref())?;
        in_range("vertical", self.vertical, -2, 2)?;
        in_range("horizontal", self.horizontal, -2, 2)?;
        in_range("zoom", self.zoom, -1, 1)?;
        in_range("steps", self.steps, 1, 100)
    }
}

/// A prompt-driven edit of up to three images (GPU).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QwenImageEditJob {
    #[schema(schema_with = url_schema)]
    pub image_url: String,
    pub prompt: String,
    #[schema(schema_with = optional_url_schema)]
    #[serde(default)]
    pub image2_url: Option<String>,
    #[schema(schema_with = optional_url_schema)]
    #[serde(default)]
    pub image3_url: Option<String>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default = "four")]
    #[schema(default = 4, minimum = 1, maximum = 100)]
    pub steps: i64,
    #[serde(default = "one")]
    #[schema(default = 1.0, minimum = 0.0, maximum = 30.0)]
    pub cfg: f64,
    #[serde(default = "sa_solver")]
    #[schema(default = "sa_solver")]
    pub sampler_name: String,
    #[serde(default = "beta")]
    #[schema(default = "beta")]
    pub scheduler: String,
    #[serde(default = "one")]
    #[schema(default = 1.0, minimum = 0.0, maximum = 1.0)]
    pub denoise: f64,
}

impl QwenImageEditJob {
    fn check(&self) -> Result<(), InvalidField> {
        image_url("image_url", &self.image_url)?;
        optional_url("image2_url", self.image2_url.as_deref())?;
        optional_url("image3_url", self.image3_url.as_deref())?;
        text("prompt", Some(&self.prompt))?;
        in_range("steps", self.steps, 1, 100)?;
        in_range_f("cfg", self.cfg, 0.0, 30.0)?;
        in_range_f("denoise", self.denoise, 0.0, 1.0)?;
        text("sampler_name", Some(&self.sampler_name))?;
        text("scheduler", Some(&self.scheduler))
    }
}

/// Masks a face in an image (CPU).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FaceMaskTask {
    #[schema(schema_with = url_schema)]
    pub image_url: String,
    #[serde(default)]
    pub face_position_prompt: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    pub face_index: i64,
}

impl FaceMaskTask {
    fn check(&self) -> Result<(), InvalidField> {
        image_url("image_url", &self.image_url)?;
        text("face_position_prompt", self.face_position_prompt.as_deref())?;
        in_range("face_index", self.face_index, 0, 100)
    }
}

/// Swaps a face into a masked image (CPU).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FaceSwapTask {
    #[schema(schema_with = url_schema)]
    pub masked_image_url: String,
    #[schema(schema_with = url_schema)]
    pub target_face_url: String,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub size: Option<String>,
}

impl FaceSwapTask {
    fn check(&self) -> Result<(), InvalidField> {
        image_url("masked_image_url", &self.masked_image_url)?;
        image_url("target_face_url", &self.target_face_url)?;
        text("prompt", self.prompt.as_deref())?;
        text("size", self.size.as_deref())
    }
}

/// Masks and swaps a face in one go (CPU).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FullFaceSwapTask {
    #[schema(schema_with = url_schema)]
    pub source_image_url: String,
    #[schema(schema_with = url_schema)]
    pub target_face_url: String,
    #[serde(default = "seedream")]
    #[schema(default = "seedream")]
    pub model: String,
    #[serde(default)]
    pub face_position_prompt: Option<String>,
    #[serde(default)]
    pub expression_prompt: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    pub face_index: i64,
    /// e.g. `"auto"`.
    #[serde(default)]
    pub size: Option<String>,
}

impl FullFaceSwapTask {
    fn check(&self) -> Result<(), InvalidField> {
        image_url("source_image_url", &self.source_image_url)?;
        image_url("target_face_url", &self.target_face_url)?;
        text("model", Some(&self.model))?;
        text("face_position_prompt", self.face_position_prompt.as_deref())?;
        text("expression_prompt", self.expression_prompt.as_deref())?;
        in_range("face_index", self.face_index, 0, 100)?;
        text("size", self.size.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_the_contract() {
        let table: Vec<_> = KINDS
            .iter()
            .map(|k| (k.route, k.queue, k.api_path, k.task_type))
            .collect();
        assert_eq!(
            table,
            [
                (
                    "/api/v1/camera-angle/jobs",
                    QueueName::Gpu,
                    "/api/v1/camera-angle/jobs",
                    None
                ),
                (
                    "/api/v1/qwen-image-edit/jobs",
                    QueueName::Gpu,
                    "/api/v1/qwen-image-edit/jobs",
                    None
                ),
                (
                    "/api/v1/face-mask/tasks",
                    QueueName::Cpu,
                    "/api/v1/face-mask/jobs",
                    Some("face_mask")
                ),
                (
                    "/api/v1/face-swap/tasks",
                    QueueName::Cpu,
                    "/api/v1/face-swap/jobs",
                    Some("face_swap")
                ),
                (
                    "/api/v1/full-face-swap/tasks",
                    QueueName::Cpu,
                    "/api/v1/full-face-swap/jobs",
                    Some("full_face_swap")
                ),
            ]
        );
    }
}
