//! The README's "Trying it on one machine" commands, run as written: the lines of its
//! `readme-test` blocks, read from README.md, in a fresh directory holding the repository's
//! example tenant, with `sightline` on the PATH, against the test broker (noida-db or
//! Tansu) and the ClickHouse HTTP front of the test support. Only addresses are replaced:
//! the README's broker (127.0.0.1:9092), ClickHouse (127.0.0.1:8123) and listeners by the
//! test's, on free ports. What the README promises is checked: the collector takes the event
//! with a browser's User-Agent, every role becomes ready, and the query role counts one
//! visitor and one pageview.

use std::time::{Duration, Instant};

use serde_json::Value;
use sightline_tests::clickhouse_front::ClickHouseFront;
use sightline_tests::readme::{block, free_address, readme_path, with_addresses, Shell};
use sightline_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_distributed_trial_runs_as_written() {
    let readme = std::fs::read_to_string(readme_path()).expect("README.md");
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let front = ClickHouseFront::start(&dir.path().join("clickhouse"), Some(("default", "trial"))).await;
    // The repository's example tenant, where the README's commands expect it.
    let examples = dir.path().join("repo/manifests/examples");
    std::fs::create_dir_all(&examples).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/tenant.yaml"),
        examples.join("tenant.yaml"),
    )
    .unwrap();
    let repo = dir.path().join("repo");

    let addresses = vec![
        ("http://127.0.0.1:8123", front.url()),
        ("127.0.0.1:9092", broker.bootstrap.clone()),
        ("127.0.0.1:8080", free_address()),
        ("127.0.0.1:8081", free_address()),
        ("127.0.0.1:9191", free_address()),
        ("127.0.0.1:9192", free_address()),
        ("127.0.0.1:9193", free_address()),
    ];
    let trial = with_addresses(&block(&readme, "distributed-trial"), &addresses);
    let query = with_addresses(&block(&readme, "distributed-trial-query"), &addresses[3..4]);
    let bin_dir = binary().parent().unwrap().to_path_buf();
    let quiet = [("RUST_LOG", "warn")];

    // Topics, tokens, the three roles in the background, their readiness, one event.
    let mut roles = Shell::start(&trial, &repo, &bin_dir, &quiet, &dir.path().join("trial.log"));
    let output = roles.wait(Duration::from_secs(180));
    assert!(
        output.contains(r#""accepted":1"#),
        "the collector did not take the event:\n{output}"
    );
    for ops in &addresses[4..] {
        assert!(
            output.contains(&format!("ready {}", ops.1)),
            "{} never ready:\n{output}",
            ops.1
        );
    }

    // The query role counts it once the loader stored it and storage was looked at again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut asking = Shell::start(&query, &repo, &bin_dir, &quiet, &dir.path().join("query.log"));
        let answer = asking.wait(Duration::from_secs(30));
        drop(asking);
        let metrics = serde_json::from_str::<Value>(answer.trim())
            .ok()
            .map(|v| v["results"].clone());
        if metrics
            .as_ref()
            .is_some_and(|m| m["visitors"] == 1 && m["pageviews"] == 1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the query role did not count the event within a minute: {answer}\nroles:\n{}",
            roles.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Nothing in the roles' logs was an error (the trial ran at RUST_LOG=warn).
    let logs = roles.output();
    assert!(!logs.contains(" ERROR "), "errors in the trial's logs:\n{logs}");
}
