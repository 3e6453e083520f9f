//! The tenant's topics as specs for the shared provisioning code (`ingest::kafka::provision`).

use sightline_ingest::kafka::provision::{topic_specs, TopicSpec};

use crate::validate::Validated;

pub fn build(v: &Validated) -> Vec<TopicSpec> {
    topic_specs(&v.tenant)
}
