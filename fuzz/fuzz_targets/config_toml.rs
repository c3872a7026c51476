//! Config and profile files: TOML, then every check the loader makes.
//!
//! Input: a selector (hub config or device profile), then the text. Properties: a file either
//! loads or is refused with diagnostics, each naming this file, a line inside it and a column;
//! once the TOML itself parses, every diagnostic also names the key it is about.

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use parkhub::config::{load_str, Diagnostic, Document};
use parkhub::profile::parse_profile;

static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    dir.keep()
});

const FILE: &str = "fuzz.toml";

fn check(text: &str, syntax_ok: bool, diags: &[Diagnostic]) {
    assert!(!diags.is_empty(), "refused without a diagnostic");
    let lines = text.lines().count().max(1) + 1;
    for d in diags {
        assert!(!d.message.is_empty());
        assert!(d.line >= 1 && d.column >= 1, "{d:?}");
        if d.file == FILE {
            assert!(d.line <= lines, "line {} of {lines}: {d:?}", d.line);
            if syntax_ok {
                assert!(!d.key.is_empty(), "no key: {d}");
            }
        }
        let _ = d.to_string();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let syntax_ok = Document::parse(FILE, &text).1.is_empty();
    if pick & 1 == 0 {
        let env = |k: &str| (k == "PARKHUB_FUZZ").then(|| "value".to_string());
        if let Err(d) = load_str(FILE, &text, &DIR, &env) {
            check(&text, syntax_ok, &d.0);
        }
    } else {
        let (doc, syntax) = Document::parse(FILE, &text);
        if !syntax.is_empty() {
            check(&text, false, &syntax);
        } else if let Err(d) = parse_profile(&doc) {
            check(&text, true, &d);
        }
    }
});
