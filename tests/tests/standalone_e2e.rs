//! End to end through HTTP on the real embedded engine: a known set of events across sites,
//! hours, referrers, user agents and a midnight in the site's timezone; every query endpoint
//! must return the exact expected numbers.

use sightline_tests::known_events::known_events_give_exact_numbers;
use sightline_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn known_events_give_exact_numbers_on_every_endpoint() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    known_events_give_exact_numbers(&server, &server).await;
}
