//! Leader election on a `coordination.k8s.io` Lease (crate `kube-lease-manager`), so two
//! operator replicas are safe: only the holder reconciles; a replica that loses the lease
//! stops its controller at once and waits to win it again.

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Where the lease is and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per replica: the pod name.
    pub identity: String,
    /// Seconds a lease stays valid after its last renewal ...
    pub duration_secs: u64,
    /// ... and how long before expiry the holder renews it.
    pub grace_secs: u64,
}

/// Runs `work` while this replica holds the lease. `work` gets a future that resolves when
/// the lease is lost (or `stop` is raised); it must return soon after. Returns when `stop`
/// is raised.
pub async fn run_while_leader<W, F>(
    client: Client,
    lease: LeaseConfig,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
    mut work: W,
) -> Result<(), kube_lease_manager::LeaseManagerError>
where
    W: FnMut(std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>) -> F,
    F: Future<Output = ()>,
{
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_secs)
        .with_grace(lease.grace_secs)
        .build()
        .await?;
    let (leading, task) = manager.watch().await;
    loop {
        // Wait to lead (or to stop).
        let mut waiting = leading.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            won = waiting.wait_for(|l| *l) => if won.is_err() { break },
        }
        tracing::info!(identity = %lease.identity, lease = %lease.name, "leading: reconciling");
        metrics.leader.set(1);
        let mut lost = leading.clone();
        let mut stopping = stop.clone();
        let until: std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        });
        work(until).await;
        metrics.leader.set(0);
        if *stop.borrow() {
            break;
        }
        tracing::warn!(identity = %lease.identity, lease = %lease.name, "lease lost: reconciling stopped");
        // A moment before competing again, so a flapping API does not spin.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Dropping the receiver makes the manager release the lease and end.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(Ok(_))) => tracing::info!("lease released"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "lease release failed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "lease task failed"),
        Err(_) => tracing::warn!("lease release timed out"),
    }
    Ok(())
}
