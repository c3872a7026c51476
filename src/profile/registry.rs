//! All profiles the hub knows: the bundled ones compiled into the binary (so `probe` and `demo`
//! work anywhere), then those of `hub.profiles_dir`, which may add models or replace a bundled one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rust_embed::Embed;

use super::{parse_profile, Profile};
use crate::config::{Diagnostic, Document};

#[derive(Embed)]
#[folder = "firmware-profiles/"]
#[include = "*.toml"]
struct Bundled;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    Bundled,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub profile: Arc<Profile>,
    pub source: ProfileSource,
}

#[derive(Debug, Clone, Default)]
pub struct ProfileRegistry {
    entries: BTreeMap<String, Entry>,
}

impl ProfileRegistry {
    /// The profiles compiled into this binary. A broken bundled profile is a build defect;
    /// the test suite loads them all, so here it is only reported.
    pub fn bundled() -> Result<Self, Vec<Diagnostic>> {
        let mut reg = Self::default();
        let mut diags = Vec::new();
        let mut names: Vec<_> = Bundled::iter().collect();
        names.sort();
        for name in names {
            let Some(file) = Bundled::get(&name) else {
                continue;
            };
            let text = String::from_utf8_lossy(&file.data);
            let label = format!("firmware-profiles/{name}");
            match parse_text(&label, &text) {
                Ok(p) => reg.insert(p, ProfileSource::Bundled),
                Err(mut d) => diags.append(&mut d),
            }
        }
        if diags.is_empty() {
            Ok(reg)
        } else {
            Err(diags)
        }
    }

    /// Adds every `*.toml` of `dir`, replacing bundled profiles of the same id.
    pub fn load_dir(&mut self, dir: &Path) -> Vec<Diagnostic> {
        let mut diags = Vec::new();
        let read = match std::fs::read_dir(dir) {
            Ok(r) => r,
            Err(e) => {
                diags.push(file_error(
                    dir,
                    format!("cannot read profiles directory: {e}"),
                ));
                return diags;
            }
        };
        let mut paths: Vec<PathBuf> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            match crate::config::read_text(&path) {
                Ok(text) => match parse_text(&path.display().to_string(), &text) {
                    Ok(p) => self.insert(p, ProfileSource::File(path)),
                    Err(mut d) => diags.append(&mut d),
                },
                Err(e) => diags.push(file_error(&path, format!("cannot read profile: {e}"))),
            }
        }
        diags
    }

    fn insert(&mut self, profile: Profile, source: ProfileSource) {
        self.entries.insert(
            profile.id.clone(),
            Entry {
                profile: Arc::new(profile),
                source,
            },
        );
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Profile>> {
        self.entries.get(id).map(|e| &e.profile)
    }

    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_text(file: &str, text: &str) -> Result<Profile, Vec<Diagnostic>> {
    let (doc, syntax) = Document::parse(file, text);
    if !syntax.is_empty() {
        return Err(syntax);
    }
    parse_profile(&doc)
}

fn file_error(path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        file: path.display().to_string(),
        line: 1,
        column: 1,
        key: String::new(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_FILE_BYTES;

    #[test]
    fn a_profile_file_over_the_size_cap_is_refused_by_name_and_the_others_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let bundled = Bundled::get("mqtt-water-leak.toml").unwrap();
        let good = String::from_utf8_lossy(&bundled.data)
            .replace("id = \"mqtt-water-leak\"", "id = \"site-water-leak\"");
        std::fs::write(dir.path().join("site-water-leak.toml"), &good).unwrap();
        let huge = format!("{good}\n{}", "#\n".repeat(MAX_FILE_BYTES / 2));
        std::fs::write(dir.path().join("huge.toml"), huge).unwrap();
        let mut reg = ProfileRegistry::default();
        let diags = reg.load_dir(dir.path());
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(diags[0].file.ends_with("huge.toml"), "{diags:?}");
        assert!(diags[0].message.contains("larger than"), "{diags:?}");
        assert!(reg.get("site-water-leak").is_some());
    }
}
