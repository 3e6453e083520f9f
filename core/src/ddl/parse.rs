//! Reads the statements `schema` writes back into their parts, so that another form of a
//! statement (the cluster form, `super::cluster`) is built from parts instead of by editing
//! text. The grammar is the small one `schema` uses: every table and view named
//! `database.name`, tables created with their column list and an `ENGINE = …` clause,
//! materialized views with `TO`. Anything else is an error naming what was expected, never
//! a guess: a new kind of statement in `schema` shows up as a failing unit test of the
//! cluster form, not as a wrong statement on a cluster.

use std::fmt;

/// What did not parse, and where (the first characters of the text left).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Parsed<T> = Result<T, ParseError>;

/// `database.name`, as `schema` writes every table and view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qualified<'a> {
    pub database: &'a str,
    pub name: &'a str,
}

impl fmt::Display for Qualified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.database, self.name)
    }
}

/// One statement of the schema, in parts. Text parts (`elements`, `clauses`, `select`,
/// `actions`) are borrowed exactly as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement<'a> {
    CreateDatabase { if_not_exists: bool, database: &'a str },
    CreateTable(CreateTable<'a>),
    CreateView(CreateView<'a>),
    Alter(Alter<'a>),
    Drop(Drop<'a>),
    DropDatabase { if_exists: bool, database: &'a str },
}

/// `CREATE TABLE [IF NOT EXISTS] db.t (elements) ENGINE = Engine[(args)]clauses`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTable<'a> {
    pub if_not_exists: bool,
    pub table: Qualified<'a>,
    /// Between the parentheses: column and index definitions.
    pub elements: &'a str,
    /// The engine's name (`MergeTree`, `ReplacingMergeTree`, …).
    pub engine: &'a str,
    /// The engine's arguments without their parentheses; `None` when written bare.
    pub engine_args: Option<&'a str>,
    /// What follows the engine (`PARTITION BY`, `ORDER BY`, `TTL`, `SETTINGS`), with its
    /// leading whitespace.
    pub clauses: &'a str,
}

/// `CREATE MATERIALIZED VIEW [IF NOT EXISTS] db.v TO db.t AS select`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateView<'a> {
    pub if_not_exists: bool,
    pub view: Qualified<'a>,
    pub target: Qualified<'a>,
    pub select: &'a str,
}

/// `ALTER TABLE db.t actions`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alter<'a> {
    pub table: Qualified<'a>,
    pub actions: &'a str,
}

/// What an `ALTER` changes: the columns (the table's shape, which a `Distributed` table in
/// front of it must follow) or only how the rows are stored (TTL, settings, indexes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlterScope {
    Columns,
    Storage,
}

/// `DROP TABLE|VIEW [IF EXISTS] db.name`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drop<'a> {
    pub kind: DropKind,
    pub if_exists: bool,
    pub name: Qualified<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropKind {
    Table,
    View,
}

impl DropKind {
    pub fn keyword(self) -> &'static str {
        match self {
            DropKind::Table => "TABLE",
            DropKind::View => "VIEW",
        }
    }
}

/// Actions of an `ALTER` that change the columns.
const COLUMN_ACTIONS: &[&str] = &[
    "ADD COLUMN",
    "DROP COLUMN",
    "MODIFY COLUMN",
    "RENAME COLUMN",
    "COMMENT COLUMN",
];

/// Actions of an `ALTER` that change only the stored rows of the table itself.
const STORAGE_ACTIONS: &[&str] = &[
    "MODIFY TTL",
    "REMOVE TTL",
    "MATERIALIZE TTL",
    "MODIFY SETTING",
    "RESET SETTING",
    "ADD INDEX",
    "DROP INDEX",
    "MATERIALIZE INDEX",
    "CLEAR INDEX",
    "CLEAR COLUMN",
    "MATERIALIZE COLUMN",
];

impl<'a> Statement<'a> {
    /// Parses one statement of the grammar above.
    pub fn parse(sql: &'a str) -> Parsed<Self> {
        let mut c = Cursor::new(sql);
        if c.words(&["CREATE", "DATABASE"]) {
            let if_not_exists = c.words(&["IF", "NOT", "EXISTS"]);
            let database = c.ident()?;
            c.end()?;
            return Ok(Statement::CreateDatabase {
                if_not_exists,
                database,
            });
        }
        if c.words(&["CREATE", "TABLE"]) {
            let if_not_exists = c.words(&["IF", "NOT", "EXISTS"]);
            let table = c.qualified()?;
            let elements = c.group()?;
            c.expect(&["ENGINE", "="])?;
            let engine = c.ident()?;
            let engine_args = if c.peek_char() == Some('(') {
                Some(c.group()?)
            } else {
                None
            };
            return Ok(Statement::CreateTable(CreateTable {
                if_not_exists,
                table,
                elements,
                engine,
                engine_args,
                clauses: c.rest(),
            }));
        }
        if c.words(&["CREATE", "MATERIALIZED", "VIEW"]) {
            let if_not_exists = c.words(&["IF", "NOT", "EXISTS"]);
            let view = c.qualified()?;
            c.expect(&["TO"])?;
            let target = c.qualified()?;
            c.expect(&["AS"])?;
            let select = c.rest().trim_start();
            if select.is_empty() {
                return Err(c.error("a SELECT after AS"));
            }
            return Ok(Statement::CreateView(CreateView {
                if_not_exists,
                view,
                target,
                select,
            }));
        }
        if c.words(&["ALTER", "TABLE"]) {
            let table = c.qualified()?;
            let actions = c.rest().trim();
            if actions.is_empty() {
                return Err(c.error("the ALTER's actions"));
            }
            return Ok(Statement::Alter(Alter { table, actions }));
        }
        if c.words(&["DROP", "DATABASE"]) {
            let if_exists = c.words(&["IF", "EXISTS"]);
            let database = c.ident()?;
            c.end()?;
            return Ok(Statement::DropDatabase { if_exists, database });
        }
        for kind in [DropKind::Table, DropKind::View] {
            if c.words(&["DROP", kind.keyword()]) {
                let if_exists = c.words(&["IF", "EXISTS"]);
                let name = c.qualified()?;
                c.end()?;
                return Ok(Statement::Drop(Drop { kind, if_exists, name }));
            }
        }
        Err(c.error(
            "CREATE DATABASE, CREATE TABLE, CREATE MATERIALIZED VIEW, ALTER TABLE, DROP TABLE, DROP VIEW or DROP DATABASE",
        ))
    }

    /// The statement written back in its single-node form, with single spaces between the
    /// parts (the parts themselves as they were written).
    pub fn to_sql(&self) -> String {
        let ine = |b: bool| if b { "IF NOT EXISTS " } else { "" };
        let ie = |b: bool| if b { "IF EXISTS " } else { "" };
        match self {
            Statement::CreateDatabase {
                if_not_exists,
                database,
            } => format!("CREATE DATABASE {}{database}", ine(*if_not_exists)),
            Statement::CreateTable(t) => format!(
                "CREATE TABLE {}{} ({}) ENGINE = {}{}{}",
                ine(t.if_not_exists),
                t.table,
                t.elements,
                t.engine,
                t.engine_args.map(|a| format!("({a})")).unwrap_or_default(),
                t.clauses
            ),
            Statement::CreateView(v) => format!(
                "CREATE MATERIALIZED VIEW {}{} TO {} AS {}",
                ine(v.if_not_exists),
                v.view,
                v.target,
                v.select
            ),
            Statement::Alter(a) => format!("ALTER TABLE {} {}", a.table, a.actions),
            Statement::Drop(d) => format!("DROP {} {}{}", d.kind.keyword(), ie(d.if_exists), d.name),
            Statement::DropDatabase { if_exists, database } => {
                format!("DROP DATABASE {}{database}", ie(*if_exists))
            }
        }
    }
}

impl CreateTable<'_> {
    /// The names of the columns (index, projection and constraint definitions left out).
    pub fn columns(&self) -> Vec<&str> {
        split_top_level(self.elements, ',')
            .into_iter()
            .filter_map(|element| {
                let name = element.split_whitespace().next()?;
                let other = ["INDEX", "PROJECTION", "CONSTRAINT"]
                    .iter()
                    .any(|k| name.eq_ignore_ascii_case(k));
                (!other).then(|| name.trim_matches('`'))
            })
            .collect()
    }

    pub fn has_column(&self, column: &str) -> bool {
        self.columns().contains(&column)
    }
}

impl CreateView<'_> {
    /// Every `database.name` the SELECT reads, outside string literals, in order.
    pub fn sources(&self) -> Vec<Qualified<'_>> {
        qualified_names(self.select, self.view.database)
            .into_iter()
            .map(|(_, q)| q)
            .collect()
    }
}

impl<'a> Alter<'a> {
    /// Whether the actions change the columns or only the stored rows. Actions of both
    /// kinds in one statement, or actions outside the two lists, are an error: the cluster
    /// form sends the two kinds to different tables.
    pub fn scope(&self) -> Parsed<AlterScope> {
        let mut scope = None;
        let mut previous_was_ttl = false;
        for action in split_top_level(self.actions, ',') {
            let starts = |list: &[&str]| list.iter().any(|k| starts_with_words(action, k));
            let this = match (starts(COLUMN_ACTIONS), starts(STORAGE_ACTIONS)) {
                (true, _) => AlterScope::Columns,
                (false, true) => AlterScope::Storage,
                // A TTL lists its rules separated by commas.
                (false, false) if previous_was_ttl => continue,
                (false, false) => {
                    return Err(ParseError(format!(
                        "ALTER action {action:?}: expected one of {}",
                        [COLUMN_ACTIONS, STORAGE_ACTIONS].concat().join(", ")
                    )))
                }
            };
            previous_was_ttl = starts_with_words(action, "MODIFY TTL");
            match scope {
                None => scope = Some(this),
                Some(s) if s == this => {}
                Some(_) => {
                    return Err(ParseError(format!(
                        "ALTER TABLE {} mixes column changes with storage changes: write one ALTER for each",
                        self.table
                    )))
                }
            }
        }
        scope.ok_or_else(|| ParseError(format!("ALTER TABLE {} has no actions", self.table)))
    }

    /// The expression of `MODIFY TTL expression` when that is the statement's one action.
    pub fn modified_ttl(&self) -> Option<&'a str> {
        if !starts_with_words(self.actions, "MODIFY TTL") {
            return None;
        }
        let rest = self.actions.trim_start()["MODIFY".len()..].trim_start()["TTL".len()..].trim();
        (!rest.is_empty()).then_some(rest)
    }
}

/// Whether `text` starts with the words of `phrase` (case-insensitive, any whitespace
/// between them, a word boundary after the last).
fn starts_with_words(text: &str, phrase: &str) -> bool {
    let mut c = Cursor::new(text);
    let words: Vec<&str> = phrase.split(' ').collect();
    c.words(&words)
}

/// Every `database.name` in `text` outside string literals and quoted identifiers, with its
/// byte range, in order. A match must not continue an identifier or a longer qualified name.
pub(crate) fn qualified_names<'a>(text: &'a str, database: &str) -> Vec<(std::ops::Range<usize>, Qualified<'a>)> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut skip_until = 0;
    scan(text, |i, ch, _depth| {
        if i < skip_until || !text[i..].starts_with(database) {
            return false;
        }
        let before_ok = i == 0 || !(is_ident(bytes[i - 1] as char) || bytes[i - 1] == b'.');
        let after = i + database.len();
        if before_ok && bytes.get(after) == Some(&b'.') {
            let name_len = text[after + 1..].chars().take_while(|c| is_ident(*c)).count();
            let end = after + 1 + name_len;
            if name_len > 0 && bytes.get(end) != Some(&b'.') {
                found.push((
                    i..end,
                    Qualified {
                        database: &text[i..after],
                        name: &text[after + 1..end],
                    },
                ));
                skip_until = end;
            }
        }
        let _ = ch;
        false
    });
    found
}

/// The first `keyword` (a whole word, case-insensitive) outside parentheses, string
/// literals and quoted identifiers: its byte offset.
pub(crate) fn find_top_level_word(text: &str, keyword: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = None;
    scan(text, |i, _ch, depth| {
        let boundary_before = i == 0 || !is_ident(bytes[i - 1] as char);
        let end = i + keyword.len();
        let matches = depth == 0
            && boundary_before
            && text.get(i..end).is_some_and(|w| w.eq_ignore_ascii_case(keyword))
            && text[end..].chars().next().is_none_or(|c| !is_ident(c));
        if matches {
            at = Some(i);
        }
        matches
    });
    at
}

/// `text` split at `sep` outside parentheses, string literals and quoted identifiers,
/// each piece trimmed; empty pieces dropped.
pub(crate) fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    scan(text, |i, ch, depth| {
        if ch == sep && depth == 0 {
            pieces.push(&text[start..i]);
            start = i + ch.len_utf8();
        }
        false
    });
    pieces.push(&text[start..]);
    pieces.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

/// Calls `f(byte offset, char, depth)` for every character outside string literals
/// (`'…'` with `\` escapes and `''`) and quoted identifiers (`` `…` ``, `"…"`), with the
/// parenthesis depth before it; stops when `f` returns true. Returns the depth at the end
/// (`None` when a literal or identifier is left open).
fn scan(text: &str, mut f: impl FnMut(usize, char, usize) -> bool) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, ch) in text.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == q {
                // A doubled quote reads as a closing and an opening one: the same state.
                quote = None;
            }
            continue;
        }
        match ch {
            '\'' | '`' | '"' => {
                quote = Some(ch);
                continue;
            }
            _ => {}
        }
        if f(i, ch, depth) {
            return Some(depth);
        }
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    quote.is_none().then_some(depth)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A position in a statement, moved forward by the parsing functions.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self { rest: text }
    }

    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn error(&self, expected: &str) -> ParseError {
        let near: String = self.rest.trim_start().chars().take(40).collect();
        ParseError(format!("expected {expected} at {near:?}"))
    }

    /// Consumes the words (case-insensitive, whitespace between them) when all are there;
    /// otherwise consumes nothing.
    fn words(&mut self, words: &[&str]) -> bool {
        let saved = self.rest;
        for word in words {
            self.skip_ws();
            let matches = self
                .rest
                .get(..word.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
                && self.rest[word.len()..].chars().next().is_none_or(|c| !is_ident(c));
            if !matches {
                self.rest = saved;
                return false;
            }
            self.rest = &self.rest[word.len()..];
        }
        true
    }

    fn expect(&mut self, words: &[&str]) -> Parsed<()> {
        if self.words(words) {
            Ok(())
        } else {
            Err(self.error(&words.join(" ")))
        }
    }

    fn ident(&mut self) -> Parsed<&'a str> {
        self.skip_ws();
        let len = self.rest.chars().take_while(|c| is_ident(*c)).count();
        if len == 0 {
            return Err(self.error("a name"));
        }
        let (ident, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(ident)
    }

    fn qualified(&mut self) -> Parsed<Qualified<'a>> {
        let database = self.ident()?;
        if !self.rest.starts_with('.') {
            return Err(self.error("a name qualified by its database (database.name)"));
        }
        self.rest = &self.rest[1..];
        let name = self.ident()?;
        Ok(Qualified { database, name })
    }

    fn peek_char(&self) -> Option<char> {
        self.rest.trim_start().chars().next()
    }

    /// A parenthesised group: returns what is inside, consumes through the closing one.
    fn group(&mut self) -> Parsed<&'a str> {
        self.skip_ws();
        if !self.rest.starts_with('(') {
            return Err(self.error("'('"));
        }
        let mut close = None;
        scan(self.rest, |i, ch, depth| {
            if ch == ')' && depth == 1 {
                close = Some(i);
                return true;
            }
            false
        });
        let close = close.ok_or_else(|| self.error("a closing ')'"))?;
        let inside = &self.rest[1..close];
        self.rest = &self.rest[close + 1..];
        Ok(inside)
    }

    fn rest(&mut self) -> &'a str {
        std::mem::take(&mut self.rest)
    }

    fn end(&mut self) -> Parsed<()> {
        if self.rest.trim().is_empty() {
            Ok(())
        } else {
            Err(self.error("the end of the statement"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_in_parts() {
        let sql = "CREATE TABLE IF NOT EXISTS db.state (key String, value String DEFAULT 'a,(b', version UInt64, \
                   INDEX k key TYPE bloom_filter GRANULARITY 4) ENGINE = ReplacingMergeTree(version) ORDER BY key";
        let Statement::CreateTable(t) = Statement::parse(sql).unwrap() else {
            panic!("a table")
        };
        assert!(t.if_not_exists);
        assert_eq!(
            t.table,
            Qualified {
                database: "db",
                name: "state"
            }
        );
        assert_eq!(t.engine, "ReplacingMergeTree");
        assert_eq!(t.engine_args, Some("version"));
        assert_eq!(t.clauses, " ORDER BY key");
        assert_eq!(t.columns(), ["key", "value", "version"]);
        assert!(!t.has_column("site_id"));
        assert_eq!(Statement::parse(sql).unwrap().to_sql(), sql);

        let bare = "CREATE TABLE db.m (version UInt32) ENGINE = ReplacingMergeTree ORDER BY version";
        let Statement::CreateTable(t) = Statement::parse(bare).unwrap() else {
            panic!("a table")
        };
        assert!(!t.if_not_exists);
        assert_eq!(
            (t.engine, t.engine_args, t.clauses),
            ("ReplacingMergeTree", None, " ORDER BY version")
        );
    }

    #[test]
    fn views_alters_and_drops_in_parts() {
        let sql = "CREATE MATERIALIZED VIEW IF NOT EXISTS db.r_mv TO db.r AS SELECT site_id, ('db.x', 1) \
                   FROM db.events ARRAY JOIN [('a', toString(db_x.y))] AS d WHERE is_bot = 0";
        let Statement::CreateView(v) = Statement::parse(sql).unwrap() else {
            panic!("a view")
        };
        assert_eq!((v.view.name, v.target.name), ("r_mv", "r"));
        assert_eq!(
            v.sources(),
            [Qualified {
                database: "db",
                name: "events"
            }]
        );
        assert_eq!(Statement::parse(sql).unwrap().to_sql(), sql);

        let alter =
            "ALTER TABLE db.events ADD COLUMN IF NOT EXISTS sign Int8 DEFAULT 1, ADD COLUMN IF NOT EXISTS p String";
        let Statement::Alter(a) = Statement::parse(alter).unwrap() else {
            panic!("an alter")
        };
        assert_eq!(a.scope(), Ok(AlterScope::Columns));
        assert_eq!(a.modified_ttl(), None);
        let ttl = "ALTER TABLE db.events MODIFY TTL toDateTime(ts) + INTERVAL 30 DAY, ts + INTERVAL 1 DAY TO DISK 'x'";
        let Statement::Alter(a) = Statement::parse(ttl).unwrap() else {
            panic!("an alter")
        };
        assert_eq!(a.scope(), Ok(AlterScope::Storage));
        assert_eq!(
            a.modified_ttl(),
            Some("toDateTime(ts) + INTERVAL 30 DAY, ts + INTERVAL 1 DAY TO DISK 'x'")
        );
        let mixed = Statement::parse("ALTER TABLE db.e ADD COLUMN a UInt8, MODIFY TTL ts + INTERVAL 1 DAY").unwrap();
        let Statement::Alter(a) = mixed else { panic!("an alter") };
        assert!(a.scope().unwrap_err().0.contains("mixes"));
        let unknown = Statement::parse("ALTER TABLE db.e DELETE WHERE 1").unwrap();
        let Statement::Alter(a) = unknown else {
            panic!("an alter")
        };
        assert!(a.scope().unwrap_err().0.contains("DELETE WHERE 1"));

        assert_eq!(
            Statement::parse("DROP VIEW IF EXISTS db.r_mv").unwrap(),
            Statement::Drop(Drop {
                kind: DropKind::View,
                if_exists: true,
                name: Qualified {
                    database: "db",
                    name: "r_mv"
                }
            })
        );
        assert_eq!(
            Statement::parse("DROP DATABASE IF EXISTS db").unwrap(),
            Statement::DropDatabase {
                if_exists: true,
                database: "db"
            }
        );
        assert_eq!(
            Statement::parse("CREATE DATABASE IF NOT EXISTS db").unwrap().to_sql(),
            "CREATE DATABASE IF NOT EXISTS db"
        );
    }

    #[test]
    fn what_the_grammar_does_not_know_is_an_error_that_says_what_was_expected() {
        for (sql, expected) in [
            ("SELECT 1", "expected CREATE DATABASE"),
            (
                "CREATE TABLE events (a UInt8) ENGINE = MergeTree",
                "qualified by its database",
            ),
            ("CREATE TABLE db.t AS db.u ENGINE = MergeTree", "expected '('"),
            (
                "CREATE TABLE db.t (a String DEFAULT ')') ORDER BY a",
                "expected ENGINE =",
            ),
            ("CREATE TABLE db.t (a UInt8", "closing ')'"),
            ("CREATE MATERIALIZED VIEW db.v AS SELECT 1", "expected TO"),
            ("CREATE MATERIALIZED VIEW db.v TO db.t AS ", "a SELECT after AS"),
            ("DROP TABLE db.t SYNC", "the end of the statement"),
            ("CREATE DATABASE db ENGINE = Atomic", "the end of the statement"),
        ] {
            let e = Statement::parse(sql).unwrap_err();
            assert!(e.0.contains(expected), "{sql}: {e}");
        }
    }

    #[test]
    fn scanning_skips_literals_and_nested_groups() {
        assert_eq!(
            split_top_level("a, f(b, c), 'd,e', `x,y`", ','),
            ["a", "f(b, c)", "'d,e'", "`x,y`"]
        );
        let engine = "MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (site_id, ts) TTL toDateTime(ts) + toIntervalDay(30) SETTINGS index_granularity = 8192";
        assert_eq!(&engine[find_top_level_word(engine, "TTL").unwrap()..][..4], "TTL ");
        assert_eq!(find_top_level_word("MergeTree ORDER BY (ttl, a)", "TTL"), None);
        assert_eq!(find_top_level_word("MergeTree('x TTL y') ORDER BY a", "TTL"), None);
        assert_eq!(find_top_level_word("MergeTree ORDER BY my_ttl", "TTL"), None);
        let names = qualified_names("SELECT 1 FROM db.a JOIN xdb.b JOIN db.c.d JOIN 'db.e' JOIN db.f", "db");
        let names: Vec<&str> = names.iter().map(|(_, q)| q.name).collect();
        assert_eq!(names, ["a", "f"]);
    }
}
