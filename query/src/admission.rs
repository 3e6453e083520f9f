//! How many queries one read token, and one tenant, may have in the warehouse at once. A
//! query enters the token's gate, then the tenant's; each gate runs `limit` at a time and
//! lets `queue` more wait (in arrival order) before it refuses new ones at once. A ticket is
//! released only when the engine has finished every statement of its query (the warehouse
//! keeps it until then), so a query cancelled at its deadline still counts while the engine
//! stops it.
//!
//! Why both: the token bound keeps one token (a leaked dashboard link, a script) from taking
//! every slot of its tenant; the tenant bound keeps one tenant from taking every reading
//! connection of the engine, so other tenants' queries find one free.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::QueryError;

/// Which bound refused a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Token,
    Tenant,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Token => "token",
            Scope::Tenant => "tenant",
        }
    }
}

/// The bounds, from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Queries of one token running at once.
    pub per_token: usize,
    /// Queries of one tenant (all its tokens) running at once.
    pub per_tenant: usize,
    /// Queries that may wait for a slot, per token and per tenant, beyond those running.
    pub queue: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            per_token: 2,
            per_tenant: 2,
            queue: 8,
        }
    }
}

pub struct Admission {
    config: AdmissionConfig,
    tokens: Arc<Gates>,
    tenants: Arc<Gates>,
}

/// The gates of one scope, by key; a gate exists while a query of its key is in flight.
struct Gates {
    scope: Scope,
    limit: usize,
    queue: usize,
    open: Mutex<HashMap<String, Gate>>,
}

struct Gate {
    slots: Arc<Semaphore>,
    /// Waiting plus running.
    in_flight: usize,
}

/// A query's right to run: dropped when its last statement has left the engine.
pub struct Ticket {
    _token: Entered,
    _tenant: Entered,
}

struct Entered {
    gates: Arc<Gates>,
    key: String,
    _slot: OwnedSemaphorePermit,
}

/// Counts a waiting query until it has its slot (or gave up waiting).
struct Waiting {
    gates: Arc<Gates>,
    key: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.gates.leave(&self.key);
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.gates.leave(&self.key);
    }
}

impl Gates {
    fn new(scope: Scope, limit: usize, queue: usize) -> Self {
        Self {
            scope,
            limit: limit.max(1),
            queue,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Joins the gate of `key` (or refuses at once when it is full), then waits for a slot
    /// until `wait` has passed.
    async fn enter(self: &Arc<Self>, key: &str, wait: Duration) -> Result<Entered, QueryError> {
        let slots = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let gate = open.entry(key.to_string()).or_insert_with(|| Gate {
                slots: Arc::new(Semaphore::new(self.limit)),
                in_flight: 0,
            });
            if gate.in_flight >= self.limit + self.queue {
                return Err(self.refusal());
            }
            gate.in_flight += 1;
            gate.slots.clone()
        };
        let waiting = Waiting {
            gates: self.clone(),
            key: key.to_string(),
        };
        let slot = match tokio::time::timeout(wait, slots.acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            // Waited the whole deadline (or the gate closed, which it never does).
            _ => return Err(self.refusal()),
        };
        // The count taken above passes from `waiting` to the entered query.
        std::mem::forget(waiting);
        Ok(Entered {
            gates: self.clone(),
            key: key.to_string(),
            _slot: slot,
        })
    }

    fn leave(&self, key: &str) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(gate) = open.get_mut(key) {
            gate.in_flight = gate.in_flight.saturating_sub(1);
            if gate.in_flight == 0 {
                open.remove(key);
            }
        }
    }

    fn refusal(&self) -> QueryError {
        QueryError::TooManyQueries {
            scope: self.scope,
            running: self.limit,
            waiting: self.queue,
        }
    }

    fn in_flight(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.values().map(|g| g.in_flight).sum()
    }
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            tokens: Arc::new(Gates::new(Scope::Token, config.per_token, config.queue)),
            tenants: Arc::new(Gates::new(Scope::Tenant, config.per_tenant, config.queue)),
        }
    }

    pub fn config(&self) -> AdmissionConfig {
        self.config
    }

    /// A ticket for one query of `token` (its signature: unique per token) in `tenant`,
    /// waiting at most `wait` for the slots; 429 `too_many_queries` naming the full gate.
    pub async fn admit(&self, tenant: &str, token: &str, wait: Duration) -> Result<Ticket, QueryError> {
        let started = tokio::time::Instant::now();
        let token_slot = self.tokens.enter(token, wait).await?;
        let left = wait.saturating_sub(started.elapsed());
        let tenant_slot = self.tenants.enter(tenant, left).await?;
        Ok(Ticket {
            _token: token_slot,
            _tenant: tenant_slot,
        })
    }

    /// Queries of all tenants waiting or running now (for `/metrics`).
    pub fn in_flight(&self) -> usize {
        self.tenants.in_flight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(per_token: usize, per_tenant: usize, queue: usize) -> Admission {
        Admission::new(AdmissionConfig {
            per_token,
            per_tenant,
            queue,
        })
    }

    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_token_runs_its_limit_then_waits_then_is_refused() {
        let a = admission(2, 10, 1);
        let one = a.admit("acme", "tok", WAIT).await.unwrap();
        let _two = a.admit("acme", "tok", WAIT).await.unwrap();
        // A third waits; with nobody leaving, it gives up at its deadline.
        let e = a.admit("acme", "tok", WAIT).await.err().unwrap();
        assert!(
            matches!(
                e,
                QueryError::TooManyQueries {
                    scope: Scope::Token,
                    ..
                }
            ),
            "{e}"
        );
        // While one waits, a fourth is refused at once (2 running + 1 waiting).
        let waiter = {
            let a = Arc::new(a);
            let waiting = tokio::spawn({
                let a = a.clone();
                async move { a.admit("acme", "tok", Duration::from_secs(5)).await.map(|_| ()) }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            let started = std::time::Instant::now();
            let e = a.admit("acme", "tok", Duration::from_secs(5)).await.err().unwrap();
            assert!(started.elapsed() < Duration::from_secs(1), "refused without waiting");
            assert!(matches!(
                e,
                QueryError::TooManyQueries {
                    scope: Scope::Token,
                    ..
                }
            ));
            // Another token of the same tenant is not affected by this token's gate.
            let _other = a.admit("acme", "other", WAIT).await.unwrap();
            drop(one);
            waiting
        };
        waiter.await.unwrap().expect("the waiting query gets the freed slot");
    }

    #[tokio::test]
    async fn a_tenant_is_bounded_across_its_tokens_and_others_are_not() {
        let a = admission(2, 2, 0);
        let _a1 = a.admit("acme", "t1", WAIT).await.unwrap();
        let _a2 = a.admit("acme", "t2", WAIT).await.unwrap();
        let e = a.admit("acme", "t3", WAIT).await.err().unwrap();
        assert!(
            matches!(
                e,
                QueryError::TooManyQueries {
                    scope: Scope::Tenant,
                    ..
                }
            ),
            "{e}"
        );
        // The refused query left no trace in its token's gate.
        assert_eq!(a.tokens.in_flight(), 2);
        let _b = a.admit("tiny", "t4", WAIT).await.unwrap();
        assert_eq!(a.in_flight(), 3);
    }

    #[tokio::test]
    async fn gates_are_forgotten_when_idle() {
        let a = admission(1, 1, 0);
        for i in 0..100 {
            drop(a.admit("acme", &format!("token-{i}"), WAIT).await.unwrap());
        }
        assert!(a.tokens.open.lock().unwrap().is_empty());
        assert!(a.tenants.open.lock().unwrap().is_empty());
    }
}
