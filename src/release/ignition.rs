//! The provisioning snippet for one image: Butane (what people paste) and the
//! Ignition config it stands for (what the machine reads), in the shape that
//! works, unlike the bakery's published one (SYSEXT.md).

use serde_json::{json, Value};

/// The systemd-sysupdate.service drop-in that updates this extension and asks
/// for a reboot when the image changed.
fn dropin(name: &str) -> String {
    format!(
        "[Service]\n\
         ExecStartPre=/usr/bin/sh -c \"readlink --canonicalize /etc/extensions/{name}.raw > /run/{name}\"\n\
         ExecStartPre=/usr/lib/systemd/systemd-sysupdate -C {name} update\n\
         ExecStartPost=/usr/bin/sh -c \"readlink --canonicalize /etc/extensions/{name}.raw > /run/{name}-new\"\n\
         ExecStartPost=/usr/bin/sh -c \"if ! cmp --silent /run/{name} /run/{name}-new; then touch /run/reboot-required; fi\"\n"
    )
}

fn join(base: &str, file: &str) -> String {
    format!("{}/{file}", base.trim_end_matches('/'))
}

/// Butane (variant flatcar, version 1.0.0) installing `file` from `url`.
pub fn butane(name: &str, file: &str, url: &str, sha256: &str, base_url: &str) -> String {
    let dropin: String = dropin(name)
        .lines()
        .map(|l| format!("            {l}\n"))
        .collect();
    format!(
        "variant: flatcar\nversion: 1.0.0\nstorage:\n  files:\n\
         \x20   - path: /opt/extensions/{name}/{file}\n      mode: 0644\n      contents:\n        source: {url}\n\
         \x20       verification:\n          hash: sha256-{sha256}\n\
         \x20   - path: /etc/sysupdate.{name}.d/{name}.conf\n      contents:\n        source: {conf}\n\
         \x20   - path: /etc/sysupdate.d/noop.conf\n      contents:\n        source: {noop}\n\
         \x20 links:\n    - target: /opt/extensions/{name}/{file}\n      path: /etc/extensions/{name}.raw\n      hard: false\n\
         systemd:\n  units:\n    - name: systemd-sysupdate.timer\n      enabled: true\n\
         \x20   - name: systemd-sysupdate.service\n      dropins:\n        - name: {name}.conf\n          contents: |\n{dropin}",
        conf = join(base_url, &format!("{name}.conf")),
        noop = join(base_url, "noop.conf"),
    )
}

/// The Ignition config (spec 3.4.0) the Butane snippet translates to.
pub fn ignition(name: &str, file: &str, url: &str, sha256: &str, base_url: &str) -> Value {
    json!({
        "ignition": { "version": "3.4.0" },
        "storage": {
            "files": [
                {
                    "path": format!("/opt/extensions/{name}/{file}"),
                    "mode": 0o644,
                    "contents": {
                        "source": url,
                        "verification": { "hash": format!("sha256-{sha256}") }
                    }
                },
                {
                    "path": format!("/etc/sysupdate.{name}.d/{name}.conf"),
                    "contents": { "source": join(base_url, &format!("{name}.conf")) }
                },
                {
                    "path": "/etc/sysupdate.d/noop.conf",
                    "contents": { "source": join(base_url, "noop.conf") }
                }
            ],
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
                    "dropins": [ { "name": format!("{name}.conf"), "contents": dropin(name) } ]
                }
            ]
        }
    })
}
