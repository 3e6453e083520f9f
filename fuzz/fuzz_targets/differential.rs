//! Random queries (metrics, dimensions, nested filters, zones, ranges, comparisons, order,
//! pages) over the generated dataset on the real engine: the events path and every rollup
//! tier the planner can use must answer identically (`sightline_fuzz::differential`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_fuzz::differential::{check, DiffQuery};

fuzz_target!(|query: DiffQuery| {
    check(&query.body());
});
