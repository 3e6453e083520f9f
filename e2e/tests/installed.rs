//! Against Sightline as a platform team installs it: the chart installed by helm, a tenant
//! applied with kubectl, events sent through its collector by the tracker in a browser and
//! by curl (e2e/run.sh --full does all that, then runs this test, and again after a
//! Reprocess). Ignored by default: there is no cluster in CI.
//!
//! e2e/run.sh --full tells it, through the environment, where the tenant's query API is
//! (a port-forward), a read token issued from the tenant's signing Secret, the site, and
//! how many visitors and pageviews it sent.

use std::time::{Duration, Instant};

use serde_json::Value;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by e2e/run.sh --full"))
}

fn number(name: &str) -> u64 {
    env(name).parse().unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test]
#[ignore = "needs the cluster and the events of e2e/run.sh --full: run e2e/run.sh --full"]
async fn events_sent_through_the_installed_collector_are_counted() {
    let query = env("SIGHTLINE_E2E_QUERY_URL");
    let token = env("SIGHTLINE_E2E_READ_TOKEN");
    let site = env("SIGHTLINE_E2E_SITE");
    let (visitors, pageviews) = (number("SIGHTLINE_E2E_VISITORS"), number("SIGHTLINE_E2E_PAGEVIEWS"));
    // Yesterday and today (UTC, the site's zone): the events' day whichever side of
    // midnight the query falls on.
    let today = chrono::Utc::now().date_naive();
    let yesterday = today - chrono::Duration::days(1);
    let url = format!(
        "{query}/v1/sites/{site}/aggregate?period=custom&from={yesterday}&to={today}&metrics=visitors,pageviews"
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // The loader stores a batch within seconds; three minutes allow for a cold cluster.
    let deadline = Instant::now() + Duration::from_secs(180);
    let answer = loop {
        let answer: Value = match client.get(&url).bearer_auth(&token).send().await {
            Ok(r) if r.status() == 200 => r.json().await.expect("the query API's JSON"),
            Ok(r) => panic!("{url}: {} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => panic!("{url}: {e}"),
        };
        if answer["results"]["pageviews"].as_u64() >= Some(pageviews) || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(answer["results"]["pageviews"].as_u64(), Some(pageviews), "{answer}");
    assert_eq!(answer["results"]["visitors"].as_u64(), Some(visitors), "{answer}");
}
