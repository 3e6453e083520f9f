//! `sightline token issue`: prints a signed token for one site and scope.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use clap::Subcommand;
use sightline_core::secret::MasterSecret;
use sightline_core::spec::{load_tenants, valid_site_id, valid_tenant_name};
use sightline_core::token::{self, Claims, Scope};

/// The longest a token may live: 10 years (as `humantime` counts them, so `--ttl 10y`
/// passes). Tokens cannot be revoked one by one, only all at once by rotating the secret.
const MAX_TTL: Duration = Duration::from_secs(3653 * 86_400);

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Print a token for (tenant, site, scope).
    Issue {
        #[arg(long)]
        tenant: String,
        /// The site; admin tokens are for the whole tenant and name none.
        #[arg(long)]
        site: Option<String>,
        /// write (collector), read (query API) or admin (a standalone server's admin
        /// endpoint, `sightline reprocess --server`).
        #[arg(long)]
        scope: String,
        /// How long the token is valid, e.g. 30d, 12h; at most 10 years.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Where the secret lives (ignored when SIGHTLINE_SECRET is set).
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// Tenant YAML file or directory: when given, the site must be allowed by the tenant.
        #[arg(long)]
        tenants: Option<PathBuf>,
    },
}

pub fn run(command: TokenCommand) -> Result<(), String> {
    match command {
        TokenCommand::Issue {
            tenant,
            site,
            scope,
            ttl,
            data,
            tenants,
        } => {
            let claims = claims(&tenant, site, &scope, ttl)?;
            if let Some(path) = &tenants {
                let all = load_tenants(path).map_err(|e| e.to_string())?;
                let t = all
                    .iter()
                    .find(|t| t.name == tenant)
                    .ok_or_else(|| format!("--tenant {tenant:?} is not in {}", path.display()))?;
                if claims.scope != Scope::Admin && t.spec.site(&claims.site).is_none() {
                    return Err(format!("--site {:?} is not allowed by tenant {tenant:?}", claims.site));
                }
            }
            let secret = MasterSecret::load_or_create(&data).map_err(|e| e.to_string())?;
            println!("{}", token::issue(&secret.tenant_key(&tenant), &claims));
            Ok(())
        }
    }
}

/// The claims of a token from the command line's words, checked: the scope, a tenant name,
/// a site for read and write tokens (none for admin ones), a TTL of 1 s to 10 years. Shared
/// by `sightline token issue` and `kubectl sightline token issue`.
pub fn claims(tenant: &str, site: Option<String>, scope: &str, ttl: Duration) -> Result<Claims, String> {
    let scope: Scope = scope.parse().map_err(|e| format!("--scope: {e}"))?;
    if !valid_tenant_name(tenant) {
        return Err(format!("--tenant {tenant:?}: use lowercase letters, digits and '-'"));
    }
    let site = match (scope, site) {
        (Scope::Admin, None) => token::ALL_SITES.to_string(),
        (Scope::Admin, Some(site)) if site == token::ALL_SITES => site,
        (Scope::Admin, Some(site)) => {
            return Err(format!(
                "--site {site:?}: admin tokens are for the whole tenant; leave --site out"
            ))
        }
        (_, None) => return Err("--site is required for write and read tokens".into()),
        (_, Some(site)) => site,
    };
    if scope != Scope::Admin && !valid_site_id(&site) {
        return Err(format!("--site {site:?}: use 1-128 letters, digits, '.', '-' or '_'"));
    }
    if ttl > MAX_TTL {
        return Err(format!(
            "--ttl {}: at most 10 years (issue a new token before it expires)",
            humantime::format_duration(ttl)
        ));
    }
    let ttl_secs = i64::try_from(ttl.as_secs()).map_err(|_| "--ttl is too long".to_string())?;
    if ttl_secs == 0 {
        return Err("--ttl must be at least one second".into());
    }
    Ok(Claims {
        tenant: tenant.to_string(),
        site,
        scope,
        expires: Utc::now().timestamp() + ttl_secs,
    })
}
