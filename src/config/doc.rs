//! A parsed TOML document that remembers where every key sits, so that every error — a syntax
//! error, an unknown key, a wrong type or a broken reference found later — can name the file,
//! line and key. Config files and firmware profiles are both read through it.
//!
//! Sections are deserialized one element at a time (each `[[device]]` on its own), so that one bad
//! device does not hide the errors of the next; unknown keys are collected with `serde_ignored`
//! rather than `deny_unknown_fields`, which would stop at the first.

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// One problem found in a file, located for the person who has to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, `device[2].bus`; empty for a syntax error outside any key.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every diagnostic of a load, in file and line order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn sorted(mut self) -> Self {
        self.0
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        self.0.dedup();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a key in a document, printed as `device[2].point.energy_import.register`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.into()));
        p
    }

    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(index));
        p
    }
}

impl From<&str> for KeyPath {
    fn from(key: &str) -> Self {
        KeyPath::root().key(key)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A TOML file parsed with the position of every key and value.
pub struct Document<'a> {
    file: String,
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Document<'a> {
    /// Parses `text`, recovering from syntax errors so that all of them are reported at once.
    pub fn parse(file: impl Into<String>, text: &'a str) -> (Self, Vec<Diagnostic>) {
        let (root, errors) = DeTable::parse_recoverable(text);
        let doc = Self {
            file: file.into(),
            text,
            root,
        };
        let diags = errors
            .iter()
            .map(|e| {
                let span = e.span().unwrap_or(0..0);
                let (line, column) = doc.line_col(span.start);
                Diagnostic {
                    file: doc.file.clone(),
                    line,
                    column,
                    key: String::new(),
                    message: format!("TOML syntax: {}", e.message()),
                }
            })
            .collect();
        (doc, diags)
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Replaces every `${NAME}` in string values with what `lookup` gives for NAME; a name it
    /// does not know is an error at that value (the string keeps its text).
    pub fn expand_env(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<Diagnostic> {
        let mut missing: Vec<(Range<usize>, String)> = Vec::new();
        expand_table(self.root.get_mut(), lookup, &mut missing);
        missing
            .into_iter()
            .map(|(span, msg)| self.diag_at_span(span, msg))
            .collect()
    }

    /// The top-level keys with their positions.
    pub fn top_keys(&self) -> Vec<(String, Range<usize>)> {
        self.root
            .get_ref()
            .iter()
            .map(|(k, _)| (k.get_ref().to_string(), k.span()))
            .collect()
    }

    pub fn get(&self, path: &KeyPath) -> Option<&Spanned<DeValue<'a>>> {
        let mut segs = path.0.iter();
        let first = match segs.next()? {
            Seg::Key(k) => self.root.get_ref().get(k.as_str())?,
            Seg::Index(_) => return None,
        };
        let mut cur = first;
        for seg in segs {
            cur = match (seg, cur.get_ref()) {
                (Seg::Key(k), DeValue::Table(t)) => t.get(k.as_str())?,
                (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Number of elements of a top-level array of tables (`[[device]]`), 0 if absent.
    pub fn array_len(&self, key: &str) -> usize {
        match self.root.get_ref().get(key).map(|v| v.get_ref()) {
            Some(DeValue::Array(a)) => a.len(),
            _ => 0,
        }
    }

    /// A diagnostic at the deepest existing part of `path` (the key itself when it exists).
    pub fn diag(&self, path: &KeyPath, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(self.locate(path).start, path, message.into())
    }

    /// A diagnostic for a byte range, naming the deepest key that contains it.
    pub fn diag_at_span(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let mut path = KeyPath::root();
        find_path(self.root.get_ref(), &span, &mut path);
        self.diagnostic(span.start, &path, message.into())
    }

    fn diagnostic(&self, offset: usize, path: &KeyPath, message: String) -> Diagnostic {
        let (line, column) = self.line_col(offset);
        Diagnostic {
            file: self.file.clone(),
            line,
            column,
            key: path.to_string(),
            message,
        }
    }

    /// Deserializes the value at `path` into `T`, reporting every unknown key and every type
    /// error with their positions. The value comes back despite unknown keys, so that later
    /// checks still see it; `None` if the path does not exist or a value has the wrong type.
    ///
    /// serde stops at the first wrong value; to find the next one, the offending key is taken
    /// out and the rest tried again (at most a few dozen times).
    pub fn deserialize<T: DeserializeOwned>(&self, path: &KeyPath) -> (Option<T>, Vec<Diagnostic>) {
        let mut value = if path.0.is_empty() {
            Spanned::new(
                self.root.span(),
                DeValue::Table(self.root.get_ref().clone()),
            )
        } else {
            match self.get(path) {
                Some(v) => v.clone(),
                None => return (None, Vec::new()),
            }
        };
        let mut diags: Vec<Diagnostic> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..32 {
            let mut unknown: Vec<Vec<Seg>> = Vec::new();
            let result: Result<T, toml::de::Error> =
                serde_ignored::deserialize(ValueDeserializer::from(value.clone()), |p| {
                    let mut segs = Vec::new();
                    ignored_segs(&p, &mut segs);
                    unknown.push(segs);
                });
            for segs in unknown {
                let mut full = path.clone();
                full.0.extend(segs);
                let name = match full.0.last() {
                    Some(Seg::Key(k)) => k.clone(),
                    _ => full.to_string(),
                };
                let d = self.diag(&full, format!("unknown key `{name}`"));
                if !diags.contains(&d) {
                    diags.push(d);
                }
            }
            let e = match result {
                // With an element of a list taken out, later checks would name the wrong
                // elements: what was found is all there is to say.
                Ok(_) if removed.iter().any(|k| k.starts_with('[')) => return (None, diags),
                // With wrong values taken out and defaulted, the rest can still be checked.
                Ok(v) => return (Some(v), diags),
                Err(e) => e,
            };
            // A required key we took out ourselves is missing, of course: not news.
            if removed
                .iter()
                .any(|k| e.message() == format!("missing field `{k}`"))
            {
                return (None, diags);
            }
            let span = e.span().unwrap_or_else(|| value.span());
            let mut d = self.diag_at_span(span.clone(), e.message().to_string());
            if d.key.is_empty() {
                d.key = path.to_string();
            }
            // A required key missing from the top of a file has no key around it to name: name
            // the one to add.
            if d.key.is_empty() {
                if let Some(field) = e
                    .message()
                    .strip_prefix("missing field `")
                    .and_then(|m| m.strip_suffix('`'))
                {
                    d.key = path.key(field).to_string();
                }
            }
            if !diags.contains(&d) {
                diags.push(d);
            }
            match remove_key_at(&mut value, &span) {
                Some(k) => removed.push(k),
                None => return (None, diags),
            }
        }
        (None, diags)
    }

    fn locate(&self, path: &KeyPath) -> Range<usize> {
        let mut best = 0..0;
        let mut cur: Option<&Spanned<DeValue<'a>>> = None;
        for (i, seg) in path.0.iter().enumerate() {
            let next = match (seg, cur.map(|c| c.get_ref())) {
                (Seg::Key(k), None) if i == 0 => self.root.get_ref().get_key_value(k.as_str()),
                (Seg::Key(k), Some(DeValue::Table(t))) => t.get_key_value(k.as_str()),
                (Seg::Index(n), Some(DeValue::Array(a))) => match a.get(*n) {
                    Some(v) => {
                        best = v.span();
                        cur = Some(v);
                        continue;
                    }
                    None => break,
                },
                _ => None,
            };
            match next {
                Some((k, v)) => {
                    best = k.span();
                    cur = Some(v);
                }
                None => break,
            }
        }
        best
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        (line, column)
    }
}

fn ignored_segs(p: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path;
    match p {
        Path::Root => {}
        Path::Seq { parent, index } => {
            ignored_segs(parent, out);
            out.push(Seg::Index(*index));
        }
        Path::Map { parent, key } => {
            ignored_segs(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_segs(parent, out),
    }
}

/// Finds the key whose value (or name) holds `span`, so that a type error points at its key.
/// Searches the whole tree: a `[table]`'s own span covers only its header, not its keys.
fn find_path(table: &DeTable<'_>, span: &Range<usize>, path: &mut KeyPath) -> bool {
    for (k, v) in table.iter() {
        path.0.push(Seg::Key(k.get_ref().to_string()));
        if find_in_value(v, span, path) || contains(&k.span(), span) {
            return true;
        }
        path.0.pop();
    }
    false
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

fn find_in_value(value: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &mut KeyPath) -> bool {
    match value.get_ref() {
        DeValue::Table(t) => find_path(t, span, path) || contains(&value.span(), span),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                path.0.push(Seg::Index(i));
                if find_in_value(item, span, path) {
                    return true;
                }
                path.0.pop();
            }
            contains(&value.span(), span)
        }
        _ => contains(&value.span(), span),
    }
}

/// Takes out of `value` the deepest key whose value holds `span` and returns its name; inside an
/// array of tables (`[[api.token]]`) the whole element goes, named `[i]`.
fn remove_key_at(value: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<String> {
    match value.get_mut() {
        DeValue::Table(t) => {
            let mut hit: Option<String> = None;
            for (k, v) in t.iter_mut() {
                let inside = contains(&v.span(), span) || contains(&k.span(), span) || {
                    let mut probe = KeyPath::root();
                    find_in_value(v, span, &mut probe)
                };
                if inside {
                    if let Some(inner) = remove_key_at(v, span) {
                        return Some(inner);
                    }
                    hit = Some(k.get_ref().to_string());
                    break;
                }
            }
            let key = hit?;
            t.remove(key.as_str());
            Some(key)
        }
        DeValue::Array(a) => {
            let i = a.iter().position(|item| {
                matches!(item.get_ref(), DeValue::Table(_))
                    && (contains(&item.span(), span)
                        || find_in_value(item, span, &mut KeyPath::root()))
            })?;
            let mut kept = toml::de::DeArray::new();
            for (j, item) in a.iter().enumerate() {
                if j != i {
                    kept.push(item.clone());
                }
            }
            *a = kept;
            Some(format!("[{i}]"))
        }
        _ => None,
    }
}

type Missing = Vec<(Range<usize>, String)>;

fn expand_table(
    table: &mut DeTable<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Missing,
) {
    for (_, v) in table.iter_mut() {
        expand_value(v, lookup, out);
    }
}

fn expand_value(
    value: &mut Spanned<DeValue<'_>>,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Missing,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains("${") => match expand_str(s, lookup) {
            Ok(expanded) => *s = expanded.into(),
            Err(msg) => out.push((span, msg)),
        },
        DeValue::Table(t) => expand_table(t, lookup, out),
        DeValue::Array(a) => {
            for item in a.iter_mut() {
                expand_value(item, lookup, out);
            }
        }
        _ => {}
    }
}

/// `${NAME}` → the variable; `$${` is a literal `${`.
pub fn expand_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err("unterminated `${` in string (write `$${` for a literal)".into());
            };
            let name = &tail[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable name"
                ));
            }
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn env_variables_expand_and_escapes_stay_literal() {
        assert_eq!(
            expand_str("Bearer ${TOKEN}", &env).unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(
            expand_str("$${TOKEN} costs $5", &env).unwrap(),
            "${TOKEN} costs $5"
        );
        assert!(expand_str("${NOPE}", &env)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(expand_str("${TOKEN", &env)
            .unwrap_err()
            .contains("unterminated"));
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Dev {
        id: String,
        unit: u8,
    }

    #[test]
    fn unknown_keys_and_type_errors_name_line_and_key() {
        let text = "[[device]]\nid = \"a\"\nunit = 1\n\n[[device]]\nid = \"b\"\nunit = \"x\"\ncolour = 1\n";
        let (doc, errs) = Document::parse("t.toml", text);
        assert!(errs.is_empty());
        let (ok, errs) = doc.deserialize::<Dev>(&KeyPath::from("device").index(0));
        assert_eq!(ok.unwrap().id, "a");
        assert!(errs.is_empty());
        let (bad, errs) = doc.deserialize::<Dev>(&KeyPath::from("device").index(1));
        assert!(bad.is_none());
        let shown: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("t.toml:8:1: device[1].colour: unknown key")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("t.toml:7:8: device[1].unit: invalid type")),
            "{shown:?}"
        );
    }

    #[test]
    fn every_syntax_error_is_reported_with_its_line() {
        let (_, errs) = Document::parse("bad.toml", "a = 1\nb = = 2\nc = \"ok\"\nd = [1,\n");
        assert!(errs.len() >= 2, "{errs:?}");
        assert_eq!(errs[0].line, 2);
        assert!(errs.iter().all(|e| e.message.starts_with("TOML syntax")));
    }

    #[test]
    fn missing_env_variable_points_at_the_value() {
        let (mut doc, _) =
            Document::parse("e.toml", "[uplink]\nurl = \"x\"\ntoken = \"${NOPE}\"\n");
        let errs = doc.expand_env(&env);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 3);
        assert_eq!(errs[0].key, "uplink.token");
    }
}
