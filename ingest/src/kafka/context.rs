//! What every Sightline Kafka client does with librdkafka's logs and errors, and what they
//! say about the brokers.
//!
//! librdkafka reports one failure twice: as a log line (facility `FAIL`, level error) and as
//! an error event; and while a broker is away it reports the same failure at every
//! reconnection attempt (an outage of 10 s gave 55 ERROR lines). Here each error event is
//! logged once when it starts and then at most once a minute with how often it repeated;
//! librdkafka's error-level log lines, which repeat an error event, go to DEBUG; its
//! warnings and notices are logged once a minute per facility.
//!
//! `BrokerHealth` follows whether the brokers answer: librdkafka's AllBrokersDown error
//! marks them down at once, and whoever sees an answer (a delivery, a probe, a fetch) marks
//! them up. A broker that refuses the client's TLS or SASL (a certificate not accepted,
//! wrong credentials) is down for that reason, which `reason` and the readiness log then
//! give instead of librdkafka's bare "1/1 brokers are down". The collector answers 503 at once and is not ready while they are down; the
//! loader is not ready.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A repeated error or log line is logged again at most this often (with its count).
const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// The reason a client's brokers are down before it reached one.
const NOT_CONTACTED: &str = "not contacted yet";

/// Whether the brokers answer, as far as one client knows.
#[derive(Debug, Default)]
pub struct BrokerHealth {
    /// Since when they are down, and the last reason; `None` while they answer.
    down: Mutex<Option<(Instant, String)>>,
}

impl BrokerHealth {
    /// Health of a client that has not reached a broker yet: down until one answers.
    pub fn not_contacted() -> Self {
        Self {
            down: Mutex::new(Some((Instant::now(), NOT_CONTACTED.into()))),
        }
    }

    pub fn reachable(&self) -> bool {
        self.lock().is_none()
    }

    /// How long the brokers have been unreachable (`None` while they answer).
    pub fn down_for(&self) -> Option<Duration> {
        self.lock().as_ref().map(|(since, _)| since.elapsed())
    }

    /// How long the brokers are known to have been unreachable: like `down_for`, but `None`
    /// too before the client tried them (a request then tries; it is not refused).
    pub fn known_down_for(&self) -> Option<Duration> {
        self.lock()
            .as_ref()
            .filter(|(_, why)| why != NOT_CONTACTED)
            .map(|(since, _)| since.elapsed())
    }

    /// Why they are unreachable, while they are.
    pub fn reason(&self) -> Option<String> {
        self.lock().as_ref().map(|(_, why)| why.clone())
    }

    /// The brokers did not answer (`why` says how); logged once per outage.
    pub fn mark_down(&self, client: &str, why: &str) {
        let mut down = self.lock();
        match down.as_mut() {
            // Down since the start, and now for a reason: that is news once.
            Some((_, last)) if last == NOT_CONTACTED => {
                tracing::warn!(client, reason = why, "Kafka brokers unreachable");
                *last = why.to_string();
            }
            Some((_, last)) => *last = why.to_string(),
            None => {
                tracing::warn!(client, reason = why, "Kafka brokers unreachable");
                *down = Some((Instant::now(), why.to_string()));
            }
        }
    }

    /// A broker answered.
    pub fn mark_up(&self, client: &str) {
        match self.lock().take() {
            Some((_, why)) if why == NOT_CONTACTED => tracing::info!(client, "Kafka brokers reachable"),
            Some((since, _)) => tracing::info!(
                client,
                down_ms = since.elapsed().as_millis() as u64,
                "Kafka brokers reachable again"
            ),
            None => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How often one error (or log facility) was seen since it was last logged.
struct Repeats {
    logged: Instant,
    since: u64,
}

/// The `ClientContext` of Sightline's Kafka clients (see the module comment). Clones share
/// their state: a client keeps one to report what it sees (`answered`).
#[derive(Clone)]
pub struct KafkaContext {
    /// Which client this is in the logs: `collector`, `loader acme`, ...
    client: Arc<str>,
    health: Arc<BrokerHealth>,
    repeats: Arc<Mutex<HashMap<String, Repeats>>>,
    /// Why a broker last refused the connection (TLS or SASL), until one answers.
    refused: Arc<Mutex<Option<String>>>,
}

impl KafkaContext {
    pub fn new(client: impl Into<String>, health: Arc<BrokerHealth>) -> Self {
        Self {
            client: Arc::from(client.into()),
            health,
            repeats: Arc::default(),
            refused: Arc::default(),
        }
    }

    pub fn health(&self) -> &Arc<BrokerHealth> {
        &self.health
    }

    /// Whether a line keyed `key` is logged now; `Some(n)` with how many repeats were not.
    fn admit(&self, key: String) -> Option<u64> {
        let mut repeats = self.repeats.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match repeats.get_mut(&key) {
            Some(seen) if now.duration_since(seen.logged) < REPEAT_EVERY => {
                seen.since += 1;
                None
            }
            Some(seen) => {
                let skipped = seen.since;
                *seen = Repeats { logged: now, since: 0 };
                Some(skipped)
            }
            None => {
                // The keys are librdkafka's error codes and log facilities: a small fixed set.
                repeats.insert(key, Repeats { logged: now, since: 0 });
                Some(0)
            }
        }
    }

    /// A new outage logs its errors again at once.
    fn forget_repeats(&self) {
        self.repeats.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Errors librdkafka recovers from by itself (it reconnects, retries, moves coordinators):
/// warnings, not errors.
pub fn transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::NetworkException
            | C::MessageTimedOut
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::CoordinatorLoadInProgress
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
    )
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            // The same failure reaches `error` as an event: logged there, once.
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Debug => {
                tracing::debug!(client = %self.client, facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning | RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                if let Some(repeated) = self.admit(format!("log:{facility}")) {
                    if matches!(level, RDKafkaLogLevel::Warning) {
                        tracing::warn!(client = %self.client, facility, repeated, "librdkafka: {message}");
                    } else {
                        tracing::info!(client = %self.client, facility, repeated, "librdkafka: {message}");
                    }
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.report(&error, reason);
    }
}

impl KafkaContext {
    /// Logs a client error (an error event, or one a consumer's poll returned) as the module
    /// comment says, and notes brokers that are all down.
    pub fn report(&self, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        match code {
            Some(RDKafkaErrorCode::SSL | RDKafkaErrorCode::Authentication) => {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
                self.health.mark_down(&self.client, reason);
            }
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match refused {
                    Some(why) => self.health.mark_down(&self.client, &format!("{reason}: {why}")),
                    None => self.health.mark_down(&self.client, reason),
                }
            }
            _ => {}
        }
        let key = code.map(|c| format!("{c:?}")).unwrap_or_else(|| "other".into());
        let Some(repeated) = self.admit(format!("error:{key}")) else {
            return;
        };
        if code.is_some_and(transient) {
            tracing::warn!(client = %self.client, error = %key, repeated, "Kafka: {reason}");
        } else {
            tracing::error!(client = %self.client, error = %error, repeated, "Kafka: {reason}");
        }
    }

    /// A request to the brokers went unanswered (`why`): they count as down until one answers.
    pub fn unanswered(&self, why: &str) {
        self.health.mark_down(&self.client, why);
    }

    /// A broker answered: health is up, and the next outage is logged from its start.
    pub fn answered(&self) {
        if !self.health.reachable() {
            self.forget_repeats();
        }
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.health.mark_up(&self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_logged_once_then_once_a_minute_with_its_count() {
        let context = KafkaContext::new("test", Arc::default());
        assert_eq!(context.admit("error:AllBrokersDown".into()), Some(0));
        for _ in 0..54 {
            assert_eq!(context.admit("error:AllBrokersDown".into()), None);
        }
        assert_eq!(context.admit("error:BrokerTransportFailure".into()), Some(0));
        // A minute later the next one is logged with the count of those that were not.
        context
            .repeats
            .lock()
            .unwrap()
            .get_mut("error:AllBrokersDown")
            .unwrap()
            .logged -= REPEAT_EVERY;
        assert_eq!(context.admit("error:AllBrokersDown".into()), Some(54));
    }

    #[test]
    fn all_brokers_down_marks_them_down_and_an_answer_up() {
        let health = Arc::new(BrokerHealth::not_contacted());
        let context = KafkaContext::new("test", health.clone());
        // Before any attempt: not reachable (not ready), yet not known to be down (a request
        // tries rather than being refused).
        assert!(!health.reachable());
        assert_eq!(health.known_down_for(), None);
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert!(!health.reachable());
        assert!(health.known_down_for().is_some());
        assert_eq!(health.reason().as_deref(), Some("1/1 brokers are down"));
        context.answered();
        assert!(health.reachable());
        // Its repeats are forgotten: the next outage is logged from its start.
        assert_eq!(context.admit("error:AllBrokersDown".into()), Some(0));
    }

    #[test]
    fn a_refused_handshake_is_the_reason_the_brokers_are_down() {
        let health = Arc::new(BrokerHealth::not_contacted());
        let context = KafkaContext::new("test", health.clone());
        let refused = "ssl://k:9093/bootstrap: SSL handshake failed: certificate verify failed";
        context.error(KafkaError::Global(RDKafkaErrorCode::SSL), refused);
        assert_eq!(health.reason().as_deref(), Some(refused));
        assert!(health.known_down_for().is_some());
        // librdkafka's AllBrokersDown that follows keeps the cause.
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(health.reason().unwrap(), format!("1/1 brokers are down: {refused}"));
        context.answered();
        assert!(health.reachable());
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(health.reason().as_deref(), Some("1/1 brokers are down"));
    }
}
