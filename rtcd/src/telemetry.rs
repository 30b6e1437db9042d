//! Logging: console (stdout) and file targets, each plain or JSON with its own level, built
//! from `[logger]`. Third-party crates are capped at INFO so DEBUG/TRACE stay about rtcd.

use std::{fs::OpenOptions, path::Path, sync::Mutex};

use tracing_subscriber::{
    Layer, Registry,
    filter::{LevelFilter, Targets},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::config::{LoggerConfig, validate_parse_level};

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log file cannot be created or opened for appending.
    #[error("cannot open log file {path} (logger.file_location): {source}")]
    File {
        /// The configured path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A global subscriber was already installed.
    #[error("logging already initialised: {0}")]
    Init(String),
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn filter(level: &str) -> Targets {
    let level = validate_parse_level(level).map_or(LevelFilter::INFO, LevelFilter::from_level);
    Targets::new()
        .with_target("rtcd", level)
        .with_default(level.min(LevelFilter::INFO))
}

/// Installs the global subscriber described by `cfg` (which must be validated).
pub fn init(cfg: &LoggerConfig) -> Result<(), TelemetryError> {
    let mut layers: Vec<BoxedLayer> = Vec::new();
    if cfg.enable_console {
        let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
        let layer: BoxedLayer = if cfg.console_json {
            Box::new(
                layer
                    .json()
                    .flatten_event(true)
                    .with_filter(filter(&cfg.console_level)),
            )
        } else {
            Box::new(
                layer
                    .with_ansi(cfg.enable_color)
                    .with_filter(filter(&cfg.console_level)),
            )
        };
        layers.push(layer);
    }
    if cfg.enable_file {
        let path = Path::new(&cfg.file_location);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| TelemetryError::File {
                path: cfg.file_location.clone(),
                source,
            })?;
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(Mutex::new(file))
            .with_ansi(false);
        let layer: BoxedLayer = if cfg.file_json {
            Box::new(
                layer
                    .json()
                    .flatten_event(true)
                    .with_filter(filter(&cfg.file_level)),
            )
        } else {
            Box::new(layer.with_filter(filter(&cfg.file_level)))
        };
        layers.push(layer);
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| TelemetryError::Init(e.to_string()))
}
