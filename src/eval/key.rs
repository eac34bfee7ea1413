//! Derivation keys: blake3 over a canonical, versioned encoding of what a step is.
//!
//! The encoding is length-prefixed fields in a fixed order, so no two different
//! derivations encode alike and formatting of the recipe never matters. The node's
//! name and axis values are not part of it: two instances that would run the very
//! same step share a key. The same encoding gives the eval key (dependencies by
//! their eval keys) and the build key (builds by their output hashes).

use super::{Dep, Spec};
use crate::hash::Digest;

/// Change whenever the encoding below changes.
const VERSION: &str = "bake-derivation-v1";

struct Encoder(blake3::Hasher);

impl Encoder {
    fn new(kind: &str) -> Self {
        let mut e = Encoder(blake3::Hasher::new());
        e.str(VERSION);
        e.str(kind);
        e
    }

    fn str(&mut self, s: &str) {
        self.0.update(&(s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.0.update(&[1]);
                self.str(s);
            }
            None => {
                self.0.update(&[0]);
            }
        }
    }

    fn flag(&mut self, b: bool) {
        self.0.update(&[u8::from(b)]);
    }

    fn digest(&mut self, d: &Digest) {
        self.0.update(&d.0);
    }

    fn pairs(&mut self, pairs: &[(String, String)]) {
        let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
        sorted.sort();
        self.0.update(&(sorted.len() as u64).to_le_bytes());
        for (k, v) in sorted {
            self.str(k);
            self.str(v);
        }
    }

    fn finish(self) -> Digest {
        Digest::from(self.0.finalize())
    }
}

/// The key of a derivation given how to key each of its dependencies.
pub fn derivation_key(
    name: &str,
    spec: &Spec,
    deps: &[Dep],
    mut dep_key: impl FnMut(&Dep) -> Digest,
) -> Digest {
    let mut e = match spec {
        Spec::Source(s) => {
            let mut e = Encoder::new("source");
            // Where the bytes come from does not matter: the hash is the identity.
            e.str(&s.hash.to_string());
            e.flag(s.unpack);
            e
        }
        Spec::Toolchain(t) => {
            let mut e = Encoder::new("toolchain");
            e.str(&t.target);
            e.digest(&t.identity);
            e.pairs(&t.env);
            e.opt(t.cache.as_deref());
            e
        }
        Spec::Build(b) => {
            let mut e = Encoder::new("build");
            e.str(&b.script);
            e.pairs(&b.env);
            e
        }
        Spec::Sysext(s) => {
            let mut e = Encoder::new("sysext");
            // The image's file name carries the node's name.
            e.str(name);
            e.digest(&s.files_digest);
            e.str(&s.version);
            e.str(&s.arch);
            e.str(&s.os);
            e.opt(s.sysext_level.as_deref());
            e.flag(s.reload_manager);
            e.str(s.format.name());
            e
        }
        Spec::Release(r) => {
            let mut e = Encoder::new("release");
            e.str(name);
            e.opt(r.base_url.as_deref());
            e
        }
    };
    // Dependencies in a canonical order: by role, then by name, then as gathered.
    let mut sorted: Vec<&Dep> = deps.iter().collect();
    sorted.sort_by(|a, b| (a.role, &a.name).cmp(&(b.role, &b.name)));
    e.0.update(&(sorted.len() as u64).to_le_bytes());
    for d in sorted {
        e.str(&format!("{:?}", d.role));
        e.str(&d.name);
        e.digest(&dep_key(d));
    }
    e.finish()
}
