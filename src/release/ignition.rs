//! The provisioning snippet for one image: Butane (what people paste) and the
//! Ignition config it stands for (what the machine reads), in the shape that
//! works, unlike the bakery's published one (SYSEXT.md).
//!
//! Butane `variant: flatcar` `version: 1.0.0` translates to Ignition spec 3.3.0:
//! every Flatcar release with Ignition 2.14 or later accepts it (3.4.0 needs
//! Ignition 2.15), and the snippet uses nothing 3.4.0 added.

use base64::Engine as _;
use serde_json::{json, Value};

/// Butane's variant and version, and the Ignition spec they translate to.
const BUTANE_VARIANT: &str = "flatcar";
const BUTANE_VERSION: &str = "1.0.0";
const IGNITION_VERSION: &str = "3.3.0";

/// Where systemd-sysupdate (through systemd-pull) finds the keys it checks
/// `SHA256SUMS.gpg` with: a binary keyring.
pub const PUBRING: &str = "/etc/systemd/import-pubring.gpg";

/// What one image's snippet installs.
pub struct Snippet<'a> {
    pub name: &'a str,
    pub file: &'a str,
    pub sha256: &'a str,
    pub base_url: &'a str,
    /// The release's public key (binary), for signed releases.
    pub pubkey: Option<&'a [u8]>,
}

impl Snippet<'_> {
    fn url(&self, file: &str) -> String {
        format!("{}/{file}", self.base_url.trim_end_matches('/'))
    }

    /// The key as the `data:` URL both Butane and Ignition carry it in.
    fn pubkey_url(&self) -> Option<String> {
        self.pubkey.map(|k| {
            format!(
                "data:;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(k)
            )
        })
    }

    /// The systemd-sysupdate.service drop-in that updates this extension and asks
    /// for a reboot when the image changed.
    fn dropin(&self) -> String {
        let name = self.name;
        format!(
            "[Service]\n\
             ExecStartPre=/usr/bin/sh -c \"readlink --canonicalize /etc/extensions/{name}.raw > /run/{name}\"\n\
             ExecStartPre=/usr/lib/systemd/systemd-sysupdate -C {name} update\n\
             ExecStartPost=/usr/bin/sh -c \"readlink --canonicalize /etc/extensions/{name}.raw > /run/{name}-new\"\n\
             ExecStartPost=/usr/bin/sh -c \"if ! cmp --silent /run/{name} /run/{name}-new; then touch /run/reboot-required; fi\"\n"
        )
    }

    /// The Butane snippet (variant flatcar, version 1.0.0).
    pub fn butane(&self) -> String {
        let (name, file) = (self.name, self.file);
        let dropin: String = self
            .dropin()
            .lines()
            .map(|l| format!("            {l}\n"))
            .collect();
        let key = self
            .pubkey_url()
            .map(|url| format!("    - path: {PUBRING}\n      mode: 0644\n      contents:\n        source: {url}\n"))
            .unwrap_or_default();
        format!(
            "variant: {BUTANE_VARIANT}\nversion: {BUTANE_VERSION}\nstorage:\n  files:\n\
             \x20   - path: /opt/extensions/{name}/{file}\n      mode: 0644\n      contents:\n        source: {url}\n\
             \x20       verification:\n          hash: sha256-{sha256}\n\
             \x20   - path: /etc/sysupdate.{name}.d/{name}.conf\n      contents:\n        source: {conf}\n\
             \x20   - path: /etc/sysupdate.d/noop.conf\n      contents:\n        source: {noop}\n\
             {key}\
             \x20 links:\n    - target: /opt/extensions/{name}/{file}\n      path: /etc/extensions/{name}.raw\n      hard: false\n\
             systemd:\n  units:\n    - name: systemd-sysupdate.timer\n      enabled: true\n\
             \x20   - name: systemd-sysupdate.service\n      dropins:\n        - name: {name}.conf\n          contents: |\n{dropin}",
            url = self.url(file),
            sha256 = self.sha256,
            conf = self.url(&format!("{name}.conf")),
            noop = self.url("noop.conf"),
        )
    }

    /// The Ignition config (spec 3.3.0) the Butane snippet translates to.
    pub fn ignition(&self) -> Value {
        let (name, file) = (self.name, self.file);
        let mut files = vec![
            json!({
                "path": format!("/opt/extensions/{name}/{file}"),
                "mode": 0o644,
                "contents": {
                    "source": self.url(file),
                    "verification": { "hash": format!("sha256-{}", self.sha256) }
                }
            }),
            json!({
                "path": format!("/etc/sysupdate.{name}.d/{name}.conf"),
                "contents": { "source": self.url(&format!("{name}.conf")) }
            }),
            json!({
                "path": "/etc/sysupdate.d/noop.conf",
                "contents": { "source": self.url("noop.conf") }
            }),
        ];
        if let Some(url) = self.pubkey_url() {
            files.push(json!({ "path": PUBRING, "mode": 0o644, "contents": { "source": url } }));
        }
        json!({
            "ignition": { "version": IGNITION_VERSION },
            "storage": {
                "files": files,
                "links": [
                    {
                        "path": format!("/etc/extensions/{name}.raw"),
                        "target": format!("/opt/extensions/{name}/{file}"),
                        "hard": false
                    }
                ]
            },
            "systemd": {
                "units": [
                    { "name": "systemd-sysupdate.timer", "enabled": true },
                    {
                        "name": "systemd-sysupdate.service",
                        "dropins": [ { "name": format!("{name}.conf"), "contents": self.dropin() } ]
                    }
                ]
            }
        })
    }
}
