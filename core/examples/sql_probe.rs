//! Probes engine behaviour the query planner relies on (diagnostics).
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::{Params, Warehouse};

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("e"), 1).unwrap();
    let p = Params::new()
        .bind("a", "['x','y']")
        .bind("re", "['^/bl.*','z']")
        .bind("k", "plan");
    for sql in [
        "SELECT 'x' IN {a:Array(String)} AS n",
        "SELECT multiSearchAnyCaseInsensitiveUTF8('aXb', {a:Array(String)}) AS n",
        "SELECT multiMatchAny('/blog', {re:Array(String)}) AS n",
        "SELECT arrayExists(r -> match('/blog', r), {re:Array(String)}) AS n",
        "SELECT sumMap(['EUR','USD','EUR'], [toDecimal128('1.10', 6), toDecimal128('2', 6), toDecimal128('3.005', 6)]) AS r",
        "SELECT CAST(sumMap(['EUR','USD'], [toDecimal128('1.10', 6), toDecimal128('2', 6)]), 'Map(String, String)') AS r",
        "SELECT map('plan','pro')[{k:String}] AS n",
        "SELECT arrayJoin(arrayFilter(g -> g != '', [if(1, 'A', ''), if(0, 'B', ''), if(1, 'C', '')])) AS g",
    ] {
        match wh.select(sql, &p).await {
            Ok(rows) => println!("{sql}\n  -> {rows:?}"),
            Err(e) => println!("{sql}\n  !! {e:?}"),
        }
    }
}
