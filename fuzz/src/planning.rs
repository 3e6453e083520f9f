//! The rules every planned query obeys, checked on every query a target gets past parsing:
//! user input never becomes SQL text (the statements of a query are the same text when only
//! its literal values change), every placeholder of a statement is bound, array parameters
//! are quoted so that no value leaves its quotes, and the rest of planning (the comparison
//! period, the totals, the time buckets) takes whatever the parser let through.

use chrono::{Datelike, NaiveDate};
use sightline_core::spec::{Tenant, TenantSpec};
use sightline_core::warehouse::tiers::{Layout, StorageState};
use sightline_core::warehouse::Params;
use sightline_query::buckets;
use sightline_query::execute::{self, comparison_range, Storage};
use sightline_query::model::{Dimension, Filter, Metric, Query};
use sightline_query::plan::{choose_source, split_goal_filter, MergedHead, Plan, Source};
use sightline_query::QueryError;

/// The tenant the query targets plan for: open sites in Berlin time, and goals of both kinds
/// (an event, and a page pattern).
pub fn tenant() -> Tenant {
    let spec: TenantSpec = serde_json::from_value(serde_json::json!({
        "sites": {"open": true},
        "defaultTimezone": "Europe/Berlin",
        "goals": [
            {"name": "Signup", "event": "signup"},
            {"name": "Checkout", "page": "/checkout/**"},
            {"name": "Pricing", "page": "/pricing/*"}
        ]
    }))
    .expect("a valid spec");
    Tenant {
        name: "fuzz".into(),
        spec,
    }
}

/// A storage state chosen by one byte: the hourly layout, or the tiers with the daily tier
/// through a day around the fixed now and the monthly tier through a month's end before it
/// (or neither), built with the spec's timezones or not.
pub fn storage(tenant: &Tenant, byte: u8) -> Storage {
    let now = crate::now().date_naive();
    if byte & 0x80 != 0 {
        return Storage {
            state: StorageState::default(),
            daily_zones_current: true,
        };
    }
    let daily_through = (byte & 0x1f != 0x1f).then(|| now - chrono::Days::new(u64::from(byte & 0x1f) * 7));
    let monthly_through = daily_through.filter(|_| byte & 0x20 != 0).map(|through| {
        let first = NaiveDate::from_ymd_opt(through.year(), through.month(), 1).expect("a month");
        first - chrono::Days::new(1)
    });
    let state = StorageState {
        layout: Layout::Tiers,
        daily_through,
        daily_timezones: String::new(),
        monthly_through,
        generation: None,
    };
    let mut storage = Storage::new(tenant, state);
    storage.daily_zones_current = byte & 0x40 == 0;
    storage
}

/// Plans `query` as `execute::run` would (main statement, count, totals, comparison, time
/// buckets), checks every statement, and checks that the same query with other literal
/// values plans to the same SQL text.
pub fn check_query(tenant: &Tenant, storage: &Storage, query: &Query) {
    let Some(planned) = plan_all(tenant, storage, query) else {
        return;
    };
    for (sql, params) in &planned {
        check_statement(sql, params);
    }
    let blanked = blank_literals(query);
    let again = plan_all(tenant, storage, &blanked).expect("a query with other literal values plans too");
    assert_eq!(planned.len(), again.len(), "other literal values, other statements");
    for ((sql, params), (sql2, params2)) in planned.iter().zip(&again) {
        assert_eq!(sql, sql2, "literal values changed the SQL text");
        let names = |p: &Params| p.0.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(names(params), names(params2), "literal values changed the parameters");
    }
}

/// Every statement a query runs, or `None` when planning refuses it (as the API would).
fn plan_all(tenant: &Tenant, storage: &Storage, query: &Query) -> Option<Vec<(String, Params)>> {
    let site_tz = tenant.spec.site_timezone(&query.site_id);
    let source = match choose_source(query, site_tz, &storage.state, storage.daily_zones_current) {
        Ok(source) => source,
        Err(e) => {
            expect_refusal(&e, &["path", "tier"]);
            return None;
        }
    };
    let mut out = Vec::new();
    let (main_source, sql, params) =
        execute::main_statement(tenant, storage, query).expect("planned once, plans again");
    assert_eq!(main_source, source, "the same query, another source");
    out.push((sql, params));
    let db = tenant.database();
    let plan = Plan::new(&db, query, &query.range, &tenant.spec.goals, source).expect("a plan");
    out.push(plan.count_sql());
    // The query service's merged sealed range (`sightline_query::merges`): the fill of the
    // range's sealed part, and the main statement reading a fill instead of the tiers.
    if let Some(head) = plan.sealed_head() {
        let mut params = head.params.clone();
        params.push("merge_fill", 1);
        out.push((head.fill_sql, params));
        out.push(
            plan.with_merged_head(MergedHead { fill: 1, rows: 1 })
                .rows_sql(&[], None),
        );
    }
    if query.metrics.contains(&Metric::Percentage) {
        out.push(totals(tenant, storage, query, query.filter.clone(), &query.range));
    }
    if query.metrics.contains(&Metric::ConversionRate) {
        match split_goal_filter(query.filter.as_ref()) {
            Ok((rest, _)) => out.push(totals(tenant, storage, query, rest, &query.range)),
            Err(e) => {
                expect_refusal(&e, &["filters"]);
                return None;
            }
        }
    }
    let time = query.dimensions.iter().find_map(|d| match d {
        Dimension::Time(interval) => Some(*interval),
        _ => None,
    });
    if let Some(interval) = time {
        let labels = buckets::labels(&query.range, interval);
        assert!(!labels.is_empty(), "a range has at least one bucket");
    }
    if let Some(compare) = query.compare {
        match comparison_range(&query.range, compare) {
            Ok(range) => {
                let mut earlier = query.clone();
                earlier.range = range.clone();
                let earlier_source = match choose_source(&earlier, site_tz, &storage.state, storage.daily_zones_current)
                {
                    Ok(s) => s,
                    Err(e) => {
                        expect_refusal(&e, &["path", "tier"]);
                        return None;
                    }
                };
                let plan = Plan::new(&db, query, &range, &tenant.spec.goals, earlier_source).expect("a plan");
                out.push(plan.rows_sql(&[], None));
                if let Some(interval) = time {
                    let pairs = buckets::counterparts(&query.range, &range, interval);
                    assert_eq!(pairs.len(), buckets::labels(&query.range, interval).len());
                }
            }
            Err(e) => expect_refusal(&e, &["compare"]),
        }
    }
    Some(out)
}

fn totals(
    tenant: &Tenant,
    storage: &Storage,
    query: &Query,
    filter: Option<Filter>,
    range: &sightline_query::request::DateRange,
) -> (String, Params) {
    let total = Query {
        dimensions: Vec::new(),
        filter,
        metrics: vec![Metric::Visitors],
        compare: None,
        order_by: Vec::new(),
        range: range.clone(),
        ..query.clone()
    };
    let site_tz = tenant.spec.site_timezone(&query.site_id);
    let source: Source = choose_source(&total, site_tz, &storage.state, storage.daily_zones_current)
        .expect("the totals of a plannable query are plannable");
    Plan::new(&tenant.database(), &total, range, &tenant.spec.goals, source)
        .expect("a plan")
        .rows_sql(&[], None)
}

/// A refusal is a 400 naming one of `parameters`.
pub fn expect_refusal(e: &QueryError, parameters: &[&str]) {
    match e {
        QueryError::BadParameter { parameter, message } => {
            assert!(parameters.contains(parameter), "refusal naming {parameter}: {message}");
            assert!(!message.is_empty());
        }
        other => panic!("planning failed with {other:?}"),
    }
}

/// The query with every literal the client chose replaced: the site, prop keys, filter
/// values. Goal names stay: which goals a condition selects is the tenant's own SQL.
pub fn blank_literals(query: &Query) -> Query {
    fn dim(d: &Dimension) -> Dimension {
        match d {
            Dimension::Prop(_) => Dimension::Prop("key".into()),
            other => other.clone(),
        }
    }
    fn filter(f: &Filter) -> Filter {
        match f {
            Filter::Condition {
                dimension: Dimension::Goal,
                ..
            } => f.clone(),
            Filter::Condition { op, dimension, values } => Filter::Condition {
                op: *op,
                dimension: dim(dimension),
                values: vec!["value".to_string(); values.len()],
            },
            Filter::And(fs) => Filter::And(fs.iter().map(filter).collect()),
            Filter::Or(fs) => Filter::Or(fs.iter().map(filter).collect()),
            Filter::Not(f) => Filter::Not(Box::new(filter(f))),
        }
    }
    Query {
        site_id: "site.example".into(),
        dimensions: query.dimensions.iter().map(dim).collect(),
        filter: query.filter.as_ref().map(filter),
        ..query.clone()
    }
}

/// Every `{name:Type}` placeholder of `sql` is bound in `params`, names are bound once, no
/// brace is anything but a placeholder, and array values are well quoted.
pub fn check_statement(sql: &str, params: &Params) {
    let names: Vec<&str> = params.0.iter().map(|(k, _)| k.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "a parameter bound twice: {names:?}");
    let mut rest = sql;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').unwrap_or_else(|| panic!("an unclosed brace in {sql}"));
        let inside = &after[..close];
        let (name, ty) = inside
            .split_once(':')
            .unwrap_or_else(|| panic!("a brace that is no placeholder: {{{inside}}} in {sql}"));
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "placeholder name {name:?}"
        );
        assert!(
            ty.bytes().all(|b| b.is_ascii_alphanumeric() || b"(), '_".contains(&b)),
            "placeholder type {ty:?}"
        );
        assert!(names.contains(&name), "placeholder {name} is not bound in {sql}");
        if ty.starts_with("Array(String)") {
            let (_, value) = params.0.iter().find(|(k, _)| k == name).expect("bound");
            let items = parse_string_array(value).unwrap_or_else(|| panic!("{name} = {value:?} is no array"));
            assert_eq!(&Params::array_of_strings(&items), value, "{name} does not round-trip");
        }
        rest = &after[close + 1..];
    }
    assert!(!rest.contains('}'), "a stray closing brace in {sql}");
}

/// ClickHouse's text form of `Array(String)` as `Params::array_of_strings` writes it:
/// `['a','b\'c']`; `None` when a value leaves its quotes.
fn parse_string_array(text: &str) -> Option<Vec<String>> {
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        if chars.next()? != '\'' {
            return None;
        }
        let mut item = String::new();
        loop {
            match chars.next()? {
                '\\' => item.push(match chars.next()? {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    c @ ('\\' | '\'') => c,
                    _ => return None,
                }),
                '\'' => break,
                c => item.push(c),
            }
        }
        items.push(item);
        match chars.next() {
            None => break,
            Some(',') if chars.peek().is_some() => {}
            Some(_) => return None,
        }
    }
    Some(items)
}
