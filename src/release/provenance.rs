//! The provenance of an image: an in-toto Statement (v1) whose subject is the
//! image's sha256, with a SLSA v1 provenance predicate: the recipe and target as
//! external parameters, the build key as an internal one, the sources and
//! toolchains with their hashes as resolved dependencies, and bake's version.

use serde_json::{json, Map, Value};

use super::bill::{Bill, ComponentKind};

/// What kind of build the predicate describes (SLSA's `buildType`).
pub const BUILD_TYPE: &str = "urn:bake:buildtype:sysext:v1";
/// Who built it (SLSA's `builder.id`).
pub const BUILDER: &str = "urn:bake:builder:local";

/// The statement for the image `bill` describes, whose bytes hash to `sha256`.
pub fn statement(bill: &Bill, sha256: &str) -> Value {
    let dependencies: Vec<Value> = bill
        .components
        .iter()
        .filter(|c| c.kind != ComponentKind::Build)
        .map(|c| {
            let mut digest = Map::new();
            let mut d = json!({ "name": c.id });
            if let Some(h) = &c.hash {
                digest.insert(h.algo.name().to_string(), json!(h.hex));
            }
            if let Some(id) = c.digest {
                // A toolchain's identity: blake3 over bake's fingerprint of its files.
                digest.insert("blake3".into(), json!(id.to_hex()));
            }
            d["digest"] = Value::Object(digest);
            if let Some(u) = &c.url {
                d["uri"] = json!(u);
            }
            let mut notes = Map::new();
            if let Some(v) = &c.version {
                notes.insert("version".into(), json!(v));
            }
            if let Some(t) = &c.target {
                notes.insert("target".into(), json!(t));
            }
            if let Some(l) = &c.license {
                notes.insert("license".into(), json!(l));
            }
            if !notes.is_empty() {
                d["annotations"] = Value::Object(notes);
            }
            d
        })
        .collect();
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [ { "name": bill.image, "digest": { "sha256": sha256 } } ],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": { "recipe": bill.recipe, "target": bill.instance },
                "internalParameters": { "buildKey": bill.build_key },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER,
                    "version": { "bake": env!("CARGO_PKG_VERSION") },
                },
                "metadata": { "invocationId": bill.build_key },
            },
        },
    })
}
