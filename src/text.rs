//! Text for people: columns that line up when they hold Chinese (padding by display width, not
//! by characters), and outside values quoted safely in error messages.

use unicode_width::UnicodeWidthStr;

/// `s` left-aligned in `width` terminal columns (never cut).
pub fn pad(s: &str, width: usize) -> String {
    let w = s.width();
    format!("{s}{}", " ".repeat(width.saturating_sub(w)))
}

/// `s` right-aligned in `width` terminal columns.
pub fn pad_left(s: &str, width: usize) -> String {
    let w = s.width();
    format!("{}{s}", " ".repeat(width.saturating_sub(w)))
}

/// Quotes an outside value for a message, shortened so that a hostile payload cannot flood
/// the log (or a peer's buffer).
pub fn clip(s: &str) -> String {
    let short: String = s.chars().take(40).collect();
    if short.len() < s.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

/// What kind of JSON value `v` is, as an error message says it.
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_characters_take_two_columns() {
        assert_eq!(pad("电表", 6), "电表  ");
        assert_eq!(pad("abc", 5), "abc  ");
        assert_eq!(pad_left("A相", 5), "  A相");
        assert_eq!(pad("too long", 3), "too long");
    }
}
