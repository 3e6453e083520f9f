//! Each tenant's storage state as the planner sees it (`tiers::StorageState`: layout, the
//! days the daily tier holds and with which timezones), read from the warehouse at most once
//! a second per tenant. A state a second old is safe: the sealer writes a tier before it
//! says so, and the hourly tables retire only seconds after the layout switch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sightline_core::spec::Tenant;
use sightline_core::warehouse::tiers::{self, StorageState};
use sightline_core::warehouse::Warehouse;

use crate::execute::Storage;

/// How long a state read from the warehouse is used.
const FRESH_FOR: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct StorageStates {
    by_tenant: Mutex<HashMap<String, (Instant, Arc<Storage>)>>,
}

impl StorageStates {
    /// The tenant's state, read again when the last read is older than a second. A database
    /// without the state table yet (before its migration) reads as the hourly layout.
    pub async fn get(&self, wh: &dyn Warehouse, tenant: &Tenant) -> Arc<Storage> {
        if let Some((read, storage)) = self.lock().get(&tenant.name) {
            if read.elapsed() < FRESH_FOR {
                return storage.clone();
            }
        }
        let state = match tiers::read_state(wh, &tenant.database()).await {
            Ok(state) => state,
            Err(e) => {
                tracing::debug!(tenant = %tenant.name, error = %e, "no storage state; the hourly layout answers");
                StorageState::default()
            }
        };
        let storage = Arc::new(Storage::new(tenant, state));
        self.lock()
            .insert(tenant.name.clone(), (Instant::now(), storage.clone()));
        storage
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<Storage>)>> {
        self.by_tenant.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
