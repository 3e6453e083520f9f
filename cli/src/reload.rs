//! Reloading the tenants directory while a role runs. In a cluster it is the tenant's
//! ConfigMap, mounted as a directory, which Kubernetes updates in place (an atomic swap of
//! a symlink); standalone users edit their files. Every `interval` the files' contents are
//! compared with the last ones read; when they differ they are parsed as at start-up and,
//! if valid, handed to `apply` (new sites, goals and limits take effect without a restart
//! and without failing a request). A file that does not parse keeps the previous tenants
//! and is logged: a typo never takes a running role down.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sightline_core::spec::{load_tenants, Tenant};

/// A digest of the YAML files of `path` (a file or a directory): names and contents.
pub fn fingerprint(path: &Path) -> std::io::Result<u64> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let p = entry?.path();
            if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file)?.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

/// Watches `path` until `stop`; calls `apply` with the tenants of each valid change.
pub fn spawn(
    path: PathBuf,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    apply: impl Fn(Vec<Tenant>) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = fingerprint(&path).ok();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = match fingerprint(&path) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "tenants not readable; keeping the ones loaded");
                    continue;
                }
            };
            if now == last {
                continue;
            }
            match load_tenants(&path) {
                Ok(tenants) => {
                    tracing::info!(path = %path.display(), tenants = tenants.len(), "tenants reloaded");
                    apply(tenants);
                    last = now;
                }
                Err(e) => {
                    // Kept as unread: a fix of the file is picked up at the next look.
                    tracing::error!(path = %path.display(), error = %e, "tenants changed but do not load; keeping the ones loaded");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_contents_not_times() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x: 1").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let first = fingerprint(dir.path()).unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x: 1").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "changed, still ignored").unwrap();
        assert_eq!(fingerprint(dir.path()).unwrap(), first);
        std::fs::write(dir.path().join("a.yaml"), "x: 2").unwrap();
        assert_ne!(fingerprint(dir.path()).unwrap(), first);
    }
}
