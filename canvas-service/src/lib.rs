//! canvas-service: canvas sessions, image uploads and their positions.
//!
//! The library holds the whole service so tests drive exactly what `main`
//! runs: [`CanvasConfig`] is read once, [`App::from_config`] opens the
//! database and object store it names, and [`router`] serves them.

pub mod app;
pub mod config;
pub mod db;
mod image_kind;
mod keys;
mod routes;
mod spool;
pub mod storage;
pub mod telemetry;

pub use app::App;
pub use config::CanvasConfig;
pub use routes::{openapi, router};
