//! Store upkeep: `gc` removes what nothing live reaches, `verify` rehashes objects.

use std::collections::HashSet;
use std::fs;
use std::io;

use super::{remove_tree, tree_size, KeyRecord, Store};
use crate::hash::{BuildKey, Digest, OutputHash, SourceHash};

#[derive(Debug, Default)]
pub struct GcReport {
    pub keys: usize,
    pub objects: usize,
    pub sources: usize,
    pub logs: usize,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: usize,
    /// Objects whose bytes no longer hash to their name, dropped with their keys.
    pub corrupt: Vec<OutputHash>,
    pub keys_dropped: usize,
    pub sources_checked: usize,
    /// Sources whose bytes no longer have the hash they are filed under, removed.
    pub corrupt_sources: Vec<String>,
    /// Temporary files of killed processes, removed.
    pub leftovers: usize,
}

impl Store {
    fn keys(&self) -> io::Result<Vec<(BuildKey, Option<KeyRecord>)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("keys"))? {
            let e = e?;
            let Ok(key) = e.file_name().to_string_lossy().parse::<BuildKey>() else {
                continue;
            };
            let record = fs::read(e.path())
                .ok()
                .and_then(|t| serde_json::from_slice(&t).ok());
            out.push((key, record));
        }
        Ok(out)
    }

    /// Entries of `roots` (one output hash or build key per line) kept by every gc.
    fn roots(&self) -> (HashSet<BuildKey>, HashSet<OutputHash>) {
        let text = fs::read_to_string(self.root.join("roots")).unwrap_or_default();
        let mut keys = HashSet::new();
        let mut outputs = HashSet::new();
        for word in text.split_whitespace() {
            if let Ok(d) = word.parse::<Digest>() {
                keys.insert(BuildKey::new(d));
                outputs.insert(OutputHash::new(d));
            }
        }
        (keys, outputs)
    }

    /// Removes keys not in `live` (nor in the roots file), objects and logs no
    /// remaining key references, and sources not in `live_sources` (file names).
    pub fn gc(
        &self,
        live: &HashSet<BuildKey>,
        live_sources: &HashSet<String>,
        dry_run: bool,
    ) -> io::Result<GcReport> {
        if !dry_run {
            self.exclusive()?;
            self.remove_leftovers()?;
        }
        let (root_keys, root_outputs) = self.roots();
        let mut report = GcReport::default();
        let mut kept_outputs: HashSet<OutputHash> = root_outputs;
        let mut kept_keys: HashSet<BuildKey> = HashSet::new();
        for (key, record) in self.keys()? {
            if live.contains(&key) || root_keys.contains(&key) {
                if let Some(r) = record {
                    kept_outputs.insert(r.output);
                }
                kept_keys.insert(key);
            } else {
                report.keys += 1;
                if !dry_run {
                    fs::remove_file(self.key_path(&key))?;
                }
            }
        }
        for e in fs::read_dir(self.root.join("objects"))? {
            let e = e?;
            let keep = e
                .file_name()
                .to_string_lossy()
                .parse::<OutputHash>()
                .is_ok_and(|o| kept_outputs.contains(&o));
            if !keep {
                report.objects += 1;
                report.bytes += tree_size(&e.path());
                if !dry_run {
                    remove_tree(&e.path())?;
                }
            }
        }
        for e in fs::read_dir(self.root.join("logs"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let keep = name
                .strip_suffix(".log")
                .and_then(|k| k.parse::<BuildKey>().ok())
                .is_some_and(|k| kept_keys.contains(&k));
            if !keep {
                report.logs += 1;
                report.bytes += tree_size(&e.path());
                if !dry_run {
                    fs::remove_file(e.path())?;
                }
            }
        }
        // `bake check`'s reports, on trees this gc removes.
        if let Ok(reports) = fs::read_dir(self.root.join("checks")) {
            for e in reports.flatten() {
                report.logs += 1;
                report.bytes += tree_size(&e.path());
                if !dry_run {
                    remove_tree(&e.path())?;
                }
            }
        }
        for e in fs::read_dir(self.root.join("sources"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Dot entries are the fetcher's locks and partial downloads.
            if !live_sources.contains(&name) && !name.starts_with('.') {
                report.sources += 1;
                report.bytes += tree_size(&e.path());
                if !dry_run {
                    remove_tree(&e.path())?;
                }
            }
        }
        Ok(report)
    }

    /// Rehashes every object; drops corrupt ones and the keys that point at them,
    /// so they rebuild.
    pub fn verify(&self) -> io::Result<VerifyReport> {
        self.exclusive()?;
        let mut report = VerifyReport {
            leftovers: self.swept + self.remove_leftovers()?,
            ..VerifyReport::default()
        };
        for e in fs::read_dir(self.root.join("sources"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            // `<algo>-<hex>`; dot entries are the fetcher's locks and partial files.
            let Some(hash) = name
                .split_once('-')
                .and_then(|(algo, hex)| format!("{algo}:{hex}").parse::<SourceHash>().ok())
            else {
                continue;
            };
            report.sources_checked += 1;
            if crate::fetch::hash_file(&e.path(), hash.algo).ok() != Some(hash) {
                fs::remove_file(e.path())?;
                report.corrupt_sources.push(name);
            }
        }
        for e in fs::read_dir(self.root.join("objects"))? {
            let e = e?;
            let Ok(name) = e.file_name().to_string_lossy().parse::<OutputHash>() else {
                continue;
            };
            report.checked += 1;
            let ok = super::hash_tree(&e.path()).is_ok_and(|h| h == name);
            if !ok {
                report.corrupt.push(name);
                remove_tree(&e.path())?;
            }
        }
        if !report.corrupt.is_empty() {
            for (key, record) in self.keys()? {
                if record.is_some_and(|r| report.corrupt.contains(&r.output)) {
                    fs::remove_file(self.key_path(&key))?;
                    report.keys_dropped += 1;
                }
            }
        }
        Ok(report)
    }
}
