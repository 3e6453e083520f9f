//! The HTTP backend: a ClickHouse server (or cluster front) through the official `clickhouse`
//! crate. Same SQL text as the embedded backend; parameters travel as the server's
//! `param_<name>` fields and are bound by the server; inserts are the RowBinary bytes the
//! ingest path built, LZ4-compressed on the wire.

use async_trait::async_trait;
use clickhouse::{Client, Compression};
use serde_json::Value;

use super::embedded::parse_json_each_row;
use super::{InsertFormat, Params, SelectLimits, StatementHold, Warehouse};
use crate::{Error, Result};

/// Where the server is and who we are to it.
#[derive(Clone, Debug, Default)]
pub struct HttpConfig {
    /// `http://host:8123` or `https://host:8443`.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// LZ4 on request and response bodies (on unless a proxy in between cannot pass it).
    pub compression: bool,
}

pub struct Http {
    client: Client,
}

impl Http {
    pub fn new(config: &HttpConfig) -> Self {
        let mut client = Client::default()
            .with_url(config.url.trim_end_matches('/'))
            .with_compression(if config.compression {
                Compression::Lz4
            } else {
                Compression::None
            })
            // The embedded engine returns 64-bit integers as JSON numbers; a server quotes
            // them by default. Callers read numbers either way.
            .with_setting("output_format_json_quote_64bit_integers", "0")
            // A SELECT whose client went away (a deadline passed, the requester left) is
            // cancelled by the server instead of running to its end.
            .with_setting("cancel_http_readonly_queries_on_client_close", "1");
        if let Some(user) = &config.user {
            client = client.with_user(user);
        }
        if let Some(password) = &config.password {
            client = client.with_password(password);
        }
        Self { client }
    }

    /// The server's version: a cheap round trip that proves the URL and credentials.
    pub async fn server_version(&self) -> Result<String> {
        let rows = self.select("SELECT version() AS v", &Params::new()).await?;
        Ok(rows
            .first()
            .and_then(|r| r["v"].as_str())
            .unwrap_or_default()
            .to_string())
    }

    /// `query_raw`: our SQL has no client-side `?` placeholders (a `?` in it is literal);
    /// values go as server-side parameters.
    fn query(&self, sql: &str, params: &Params) -> clickhouse::query::Query {
        params.0.iter().fold(self.client.query_raw(sql), |q, (name, value)| {
            q.with_setting(format!("param_{name}"), value.clone())
        })
    }
}

fn failed(sql: &str, e: clickhouse::error::Error) -> Error {
    match e {
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => Error::Unreachable(e.to_string()),
        e => Error::Query {
            sql: sql.to_string(),
            message: e.to_string(),
        },
    }
}

#[async_trait]
impl Warehouse for Http {
    async fn execute(&self, sql: &str, params: &Params) -> Result<()> {
        self.query(sql, params).execute().await.map_err(|e| failed(sql, e))
    }

    async fn select(&self, sql: &str, params: &Params) -> Result<Vec<Value>> {
        let mut cursor = self
            .query(sql, params)
            .fetch_bytes("JSONEachRow")
            .map_err(|e| failed(sql, e))?;
        let bytes = cursor.collect().await.map_err(|e| failed(sql, e))?;
        parse_json_each_row(&bytes)
    }

    async fn select_within(
        &self,
        sql: &str,
        params: &Params,
        limits: &SelectLimits,
        hold: StatementHold,
    ) -> Result<Vec<Value>> {
        // Dropped with this future: past the deadline the request's connection is closed,
        // which cancels the statement on the server (see `new`).
        let _hold = hold;
        let query = limits
            .settings()
            .into_iter()
            .fold(self.query(sql, params), |q, (name, value)| q.with_setting(name, value));
        let fetch = async {
            let mut cursor = query.fetch_bytes("JSONEachRow").map_err(|e| failed(sql, e))?;
            cursor.collect().await.map_err(|e| failed(sql, e))
        };
        match tokio::time::timeout(limits.deadline(), fetch).await {
            Ok(bytes) => parse_json_each_row(&bytes?),
            Err(_) => Err(Error::DeadlineExceeded(limits.deadline())),
        }
    }

    async fn execute_within(
        &self,
        sql: &str,
        params: &Params,
        limits: &SelectLimits,
        hold: StatementHold,
    ) -> Result<()> {
        let _hold = hold;
        let query = limits
            .settings()
            .into_iter()
            .fold(self.query(sql, params), |q, (name, value)| q.with_setting(name, value));
        match tokio::time::timeout(limits.deadline(), query.execute()).await {
            Ok(done) => done.map_err(|e| failed(sql, e)),
            Err(_) => Err(Error::DeadlineExceeded(limits.deadline())),
        }
    }

    async fn select_row_binary(&self, sql: &str, params: &Params) -> Result<Vec<u8>> {
        let mut cursor = self
            .query(sql, params)
            .fetch_bytes("RowBinary")
            .map_err(|e| failed(sql, e))?;
        let bytes = cursor.collect().await.map_err(|e| failed(sql, e))?;
        Ok(bytes.to_vec())
    }

    async fn insert(&self, table: &str, columns: &str, format: InsertFormat, rows: Vec<u8>) -> Result<()> {
        let sql = format!("INSERT INTO {table} ({columns}) FORMAT {}", format.name());
        let mut insert = self.client.insert_formatted_with(sql.clone());
        insert.send(rows.into()).await.map_err(|e| failed(&sql, e))?;
        insert.end().await.map_err(|e| failed(&sql, e))
    }

    fn backend(&self) -> &'static str {
        "http"
    }
}
