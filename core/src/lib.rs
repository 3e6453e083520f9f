//! Sightline's core: the tenant spec, raw and processed events, the processor, the schema
//! and SQL, and the warehouse with its backends. Everything both planes share lives here.

pub mod ddl;
pub mod error;
pub mod event;
pub mod geo;
pub mod intake;
pub mod processor;
pub mod rate;
pub mod registry;
pub mod reprocess;
pub mod schema;
pub mod secret;
pub mod spec;
pub mod token;
pub mod warehouse;
pub mod watermark;

pub use error::{Error, Result};
