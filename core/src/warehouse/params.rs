//! Query parameters bound by the engine (`{name:Type}` placeholders): user input travels
//! here and never in SQL text. Values are in ClickHouse's text form for their type.

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bind(mut self, name: &str, value: impl ToString) -> Self {
        self.push(name, value);
        self
    }

    pub fn push(&mut self, name: &str, value: impl ToString) {
        self.0.push((name.to_string(), value.to_string()));
    }

    /// An `Array(String)` (or `Array(UUID)`, ...) value: quoted, with quotes and backslashes
    /// escaped the way ClickHouse's text format reads them.
    pub fn array_of_strings<I, S>(values: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let items: Vec<String> = values
            .into_iter()
            .map(|v| format!("'{}'", escape(v.as_ref())))
            .collect();
        format!("[{}]", items.join(","))
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_escape_quotes() {
        assert_eq!(Params::array_of_strings(["a", "b'c", "d\\e"]), r"['a','b\'c','d\\e']");
        assert_eq!(Params::array_of_strings(Vec::<String>::new()), "[]");
    }
}
