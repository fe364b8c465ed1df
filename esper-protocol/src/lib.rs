//! The Esper runtime contract as plain Rust: what the module sends, how it reads
//! the answer, and the configuration values it accepts. Nothing here knows about
//! nginx, so every rule is unit-tested without a server.

pub mod answer;
pub mod breaker;
pub mod challenge_metrics;
pub mod config;
pub mod enforcement;
pub mod entity_table;
pub mod metrics;
pub mod pass;
pub mod payload;
pub mod query;
pub mod response;
pub mod return_url;
pub mod throttle;
pub mod unwind;

pub use answer::{
    parse_answer, parse_verify_answer, Action, Decision, Failure, ProofCheck, Verdict,
};
pub use config::{ApiUrl, ConfigError};
pub use payload::{build_payload, verify_body, PayloadSettings, RequestView};
