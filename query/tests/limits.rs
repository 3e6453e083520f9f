//! Query limits against the real engine: a statement that runs too long or reads too much
//! is stopped by the engine and reported as a clear error, not a hang.

use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::Params;
use std::sync::Arc;

use sightline_query::{Limits, QueryError};

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_huge_statements_end_with_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 1).unwrap();
    // Hashing 10^12 numbers is minutes of work: stopped after about a second.
    let patient = Limits {
        timeout_secs: 1,
        max_rows_to_read: 10_000_000_000_000,
        max_threads: 0,
    };
    let hold: sightline_query::execute::Hold = Arc::new(());
    let started = std::time::Instant::now();
    let slow = patient
        .select(
            &wh,
            "SELECT sum(sipHash64(number)) AS n FROM numbers_mt(1000000000000)",
            &Params::new(),
            &hold,
        )
        .await;
    assert!(matches!(slow, Err(QueryError::Timeout(1))), "{slow:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // Reading more rows than allowed.
    let limits = Limits {
        timeout_secs: 10,
        max_rows_to_read: 1_000,
        max_threads: 1,
    };
    let huge = limits
        .select(&wh, "SELECT count() AS n FROM numbers(100000)", &Params::new(), &hold)
        .await;
    assert!(matches!(huge, Err(QueryError::TooManyRows(1_000))), "{huge:?}");
    let fine = limits
        .select(&wh, "SELECT count() AS n FROM numbers(10)", &Params::new(), &hold)
        .await
        .unwrap();
    assert_eq!(fine[0]["n"], 10);
}
