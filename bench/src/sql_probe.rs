//! Times statements on an engine dir that query-bench left (`--engine-dir`): where a
//! query's time goes, branch by branch. Statements come from a file, separated by lines
//! holding only `;;`; a statement may start with a line `-- params: name=value|name=value`
//! (bound as the query service binds them) and a line `-- name: text` (its label).
//!
//!     cargo build --release --bin sql-probe
//!     ./target/release/sql-probe --engine-dir /work/bench-engine/q10m-monthly --runs 30 bench/sql/top-pages-90d.sql
//!     ./target/release/sql-probe --engine-dir /tmp/any-dir --runs 0 --show bench/sql/uniqcombined14-error.sql

use std::time::Instant;

use clap::Parser;
use sightline_bench::percentile;
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::{Params, Warehouse};

#[derive(Parser)]
struct Args {
    /// The engine's files (as query-bench's `--engine-dir` left them).
    #[arg(long)]
    engine_dir: std::path::PathBuf,
    /// Timed runs per statement (after one untimed run).
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Also print each statement's result rows (JSON, one a line) after the table.
    #[arg(long)]
    show: bool,
    /// The statements.
    file: std::path::PathBuf,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.file).expect("statement file");
    let engine = Embedded::open(&args.engine_dir, 2).expect("engine");
    println!("| statement | rows | min ms | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut results = Vec::new();
    for block in text.split("\n;;\n").map(str::trim).filter(|b| !b.is_empty()) {
        let mut params = Params::new();
        let mut name = String::new();
        let mut sql = Vec::new();
        for line in block.lines() {
            if let Some(list) = line.strip_prefix("-- params:") {
                for pair in list.trim().split('|') {
                    let (k, v) = pair.split_once('=').expect("params as name=value");
                    params = params.bind(k.trim(), v.trim());
                }
            } else if let Some(label) = line.strip_prefix("-- name:") {
                name = label.trim().to_string();
            } else {
                sql.push(line);
            }
        }
        let sql = sql.join("\n");
        let rows = engine
            .select(&sql, &params)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut times = Vec::with_capacity(args.runs);
        for _ in 0..args.runs {
            let t = Instant::now();
            engine.select(&sql, &params).await.expect("statement");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        // No timed run (`--runs 0`): the results only.
        let ms = |v: f64| {
            if times.is_empty() {
                "-".to_string()
            } else {
                format!("{v:.1}")
            }
        };
        println!(
            "| {name} | {} | {} | {} | {} |",
            rows.len(),
            ms(times.first().copied().unwrap_or(f64::NAN)),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        );
        if args.show {
            results.push((name, rows));
        }
    }
    for (name, rows) in results {
        println!("\n{name}:");
        for row in rows {
            println!("{row}");
        }
    }
}
