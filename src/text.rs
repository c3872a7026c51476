//! Columns that line up when they hold Chinese: padding by display width, not by characters.

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
