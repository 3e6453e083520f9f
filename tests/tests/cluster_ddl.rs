//! The cluster form of the DDL, read by the real engine: every statement the operator's
//! plan and core run on a ClickHouse cluster (`spec.clickhouse.cluster`) is parsed by
//! libchdb (`formatQuery`), so a typo in the cluster form fails here, not on a customer's
//! cluster. Nothing runs ON CLUSTER: there is no cluster here, and the single-node form is
//! what the other tests execute.

use sightline_core::ddl::Form;
use sightline_core::schema;
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::{Params, Warehouse};
use sightline_operator::build::ddl;
use sightline_operator::crd::{AnalyticsTenant, AnalyticsTenantSpec};
use sightline_operator::validate::{validate, OperatorConfig};

/// A tenant object as the API would hand it over.
fn object(name: &str, spec: &str) -> AnalyticsTenant {
    let mut t = AnalyticsTenant::new(
        name,
        AnalyticsTenantSpec {
            tenant: serde_yaml::from_str(spec).unwrap(),
        },
    );
    t.metadata.uid = Some(format!("uid-{name}"));
    t.metadata.generation = Some(1);
    t
}

/// The engine's own reading of `sql`, or its parse error.
async fn formatted(wh: &Embedded, sql: &str) -> Result<String, String> {
    let rows = wh
        // An array parameter, whose items the helper escapes (statements span lines).
        .select(
            "SELECT formatQuerySingleLine({q:Array(String)}[1]) AS f",
            &Params::new().bind("q", Params::array_of_strings([sql])),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows[0]["f"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_cluster_statement_parses_in_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 1).unwrap();

    // The check can fail: the engine refuses what does not parse.
    let typo = "CREATE TABLE IF NOT EXISTS db.t_local ON CLUSTER main (a UInt8) ENGINE = ReplicatedMergeTree('/p', '{replica}' ORDER BY a";
    assert!(formatted(&wh, typo).await.is_err());

    let config = OperatorConfig::example("analytics");
    for (name, spec, cluster, db) in [
        (
            "acme",
            "sites: { open: true }\nclickhouse: { cluster: analytics }",
            "analytics",
            "sightline_acme",
        ),
        (
            "shop-eu",
            "sites: { open: true }\nretention: { rawDays: 400, rollupDays: 800 }\n\
             clickhouse: { cluster: eu-west-1, database: shop_analytics }",
            "`eu-west-1`",
            "shop_analytics",
        ),
    ] {
        let v = validate(&object(name, spec), &config).unwrap();
        let plan = ddl::build(&v).unwrap();
        let form = Form::of(&v.tenant).unwrap();
        // The plan the operator applies, and what core runs beside it in the same form: the
        // spec's retention, the retirement of the hourly layout, the operator's drop.
        let mut statements: Vec<String> = plan.statements().cloned().collect();
        let beside = schema::spec_statements(&v.tenant, schema::latest_version())
            .into_iter()
            .chain(schema::legacy::retire(db))
            .chain([format!("DROP DATABASE IF EXISTS {db}")]);
        for sql in beside {
            statements.extend(form.statements(&sql).unwrap());
        }
        assert!(statements.len() > 40, "{}", statements.len());
        let on_cluster = format!("ON CLUSTER {cluster}");
        for sql in &statements {
            let reading = formatted(&wh, sql)
                .await
                .unwrap_or_else(|e| panic!("the engine does not parse:\n{sql}\n{e}"));
            assert!(reading.contains(&on_cluster), "{reading}");
            // The engine reads the parts where we put them.
            if reading.starts_with("CREATE TABLE") {
                let sharded = reading.contains("_local ON CLUSTER");
                let everywhere = reading.contains("'/clickhouse/tables/all/");
                let front = reading.contains(&format!("ENGINE = Distributed({cluster}, {db}, "));
                assert!(
                    [sharded, everywhere, front].iter().filter(|b| **b).count() == 1,
                    "one kind of table: {reading}"
                );
                if sharded {
                    assert!(
                        reading.contains(&format!("'/clickhouse/tables/{{shard}}/{db}/")),
                        "{reading}"
                    );
                    assert!(reading.contains("ENGINE = Replicated"), "{reading}");
                }
                if front {
                    assert!(reading.ends_with("_local, sipHash64(site_id))"), "{reading}");
                }
            }
            if reading.starts_with("CREATE MATERIALIZED VIEW") {
                assert!(reading.contains("_local AS SELECT"), "{reading}");
                assert!(reading.contains(&format!("FROM {db}.events_local")), "{reading}");
            }
        }
    }
}
