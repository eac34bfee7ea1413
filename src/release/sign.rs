//! Detached OpenPGP signatures with GnuPG, as systemd-sysupdate checks them:
//! `SHA256SUMS.gpg` against `/etc/systemd/import-pubring.gpg` (a binary keyring).
//!
//! The key comes from the user's keyring (`--sign-key KEYID`) or from a file
//! (`--sign-key FILE`), imported into a private GnuPG home that is removed
//! afterwards. A passphrase is never an argument: gpg-agent asks for it, or
//! gpg reads it from the file given as `--passphrase-file`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::ReleaseError;

/// The key a release is signed with, as the user named it.
#[derive(Clone, Debug)]
pub enum SignKey {
    /// A key id, fingerprint or user id in the user's keyring.
    KeyId(String),
    /// An exported secret key (armored or binary).
    File(PathBuf),
}

impl SignKey {
    /// A path to an existing file is a key file; anything else names a key.
    pub fn parse(arg: &str) -> SignKey {
        let path = Path::new(arg);
        if path.is_file() {
            SignKey::File(path.to_path_buf())
        } else {
            SignKey::KeyId(arg.to_string())
        }
    }
}

/// A key ready to sign with: its GnuPG home and fingerprint.
pub struct Signer {
    /// `None`: the user's own GnuPG home (GNUPGHOME or ~/.gnupg).
    home: Option<tempfile::TempDir>,
    fingerprint: String,
    passphrase_file: Option<PathBuf>,
}

impl Signer {
    /// Finds the key (importing a key file into a private home) and checks that
    /// it can sign.
    pub fn new(key: &SignKey, passphrase_file: Option<&Path>) -> Result<Signer, ReleaseError> {
        if let Some(p) = passphrase_file {
            fs::metadata(p).map_err(|e| {
                ReleaseError::Sign(format!(
                    "cannot read the passphrase file {}: {e}",
                    p.display()
                ))
            })?;
        }
        let mut signer = Signer {
            home: None,
            fingerprint: String::new(),
            passphrase_file: passphrase_file.map(Path::to_path_buf),
        };
        let query = match key {
            SignKey::KeyId(id) => id.clone(),
            SignKey::File(file) => {
                let home = tempfile::Builder::new()
                    .prefix("bake-gnupg.")
                    .tempdir()
                    .map_err(|e| ReleaseError::Sign(format!("cannot make a GnuPG home: {e}")))?;
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700))?;
                signer.home = Some(home);
                let out = signer.gpg().arg("--import").arg(file).output();
                signer.check(out, &format!("cannot import the key {}", file.display()))?;
                String::new()
            }
        };
        let mut list = signer.gpg();
        list.args(["--with-colons", "--list-secret-keys"]);
        if !query.is_empty() {
            list.arg("--").arg(&query);
        }
        let listing = signer.check(
            list.output(),
            &match key {
                SignKey::KeyId(id) => format!("no secret key `{id}` in the GnuPG keyring"),
                SignKey::File(f) => format!("{} holds no secret key", f.display()),
            },
        )?;
        let fingerprints = primary_fingerprints(&String::from_utf8_lossy(&listing.stdout));
        signer.fingerprint = match fingerprints.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(ReleaseError::Sign(format!(
                    "no secret key found for `{}`",
                    key_name(key)
                )))
            }
            many => {
                return Err(ReleaseError::Sign(format!(
                    "`{}` matches {} secret keys ({}): name one by its fingerprint",
                    key_name(key),
                    many.len(),
                    many.join(", ")
                )))
            }
        };
        Ok(signer)
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.args(["--batch", "--no-tty", "--quiet"]);
        if let Some(home) = &self.home {
            cmd.arg("--homedir").arg(home.path());
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn check(&self, out: io::Result<Output>, what: &str) -> Result<Output, ReleaseError> {
        match out {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ReleaseError::Sign(
                "gpg is not installed: apt-get install gnupg (./setup does)".into(),
            )),
            Err(e) => Err(ReleaseError::Sign(format!("cannot run gpg: {e}"))),
            Ok(o) if o.status.success() => Ok(o),
            Ok(o) => Err(ReleaseError::Sign(format!(
                "{what}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))),
        }
    }

    /// Writes the detached binary signature of `file` to `signature`.
    pub fn sign(&self, file: &Path, signature: &Path) -> Result<(), ReleaseError> {
        let tmp = signature.with_extension("sig.tmp");
        let _ = fs::remove_file(&tmp);
        let mut cmd = self.gpg();
        cmd.args(["--local-user", &format!("{}!", self.fingerprint)]);
        if let Some(p) = &self.passphrase_file {
            cmd.args(["--pinentry-mode", "loopback", "--passphrase-file"])
                .arg(p);
        }
        cmd.args(["--detach-sign", "--output"]).arg(&tmp).arg(file);
        if let Err(e) = self.check(cmd.output(), &format!("cannot sign {}", file.display())) {
            let _ = fs::remove_file(&tmp);
            return Err(match (e, &self.passphrase_file) {
                (ReleaseError::Sign(m), None) => ReleaseError::Sign(format!(
                    "{m}\n(a key with a passphrase needs --passphrase-file FILE, or unlocking in gpg-agent first)"
                )),
                (e, _) => e,
            });
        }
        fs::rename(&tmp, signature)?;
        Ok(())
    }

    /// The public key: binary (a keyring systemd-importd and gpgv read) or armored.
    pub fn export(&self, armor: bool) -> Result<Vec<u8>, ReleaseError> {
        let mut cmd = self.gpg();
        if armor {
            cmd.arg("--armor");
        }
        cmd.args(["--export", &self.fingerprint]);
        let out = self.check(cmd.output(), "cannot export the public key")?;
        if out.stdout.is_empty() {
            return Err(ReleaseError::Sign(format!(
                "gpg exported nothing for {}",
                self.fingerprint
            )));
        }
        Ok(out.stdout)
    }
}

impl Drop for Signer {
    /// A private home's gpg-agent would outlive its directory: stop it.
    fn drop(&mut self) {
        if let Some(home) = &self.home {
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(home.path())
                .args(["--kill", "all"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Checks `signature` over `file` with `gpgv` against the binary `keyring`, as a
/// host will: a release is not written with a signature its own key rejects.
pub fn verify(keyring: &Path, signature: &Path, file: &Path) -> Result<(), ReleaseError> {
    let out = Command::new("gpgv")
        .arg("--keyring")
        .arg(keyring)
        .arg(signature)
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ReleaseError::Sign(format!("cannot run gpgv: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ReleaseError::Sign(format!(
            "the signature {} does not verify with {}: {}",
            signature.display(),
            keyring.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn key_name(key: &SignKey) -> String {
    match key {
        SignKey::KeyId(id) => id.clone(),
        SignKey::File(f) => f.display().to_string(),
    }
}

/// The fingerprints of the primary secret keys in `gpg --with-colons` output:
/// each `sec` line's first `fpr` line.
fn primary_fingerprints(listing: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut want = false;
    for line in listing.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.first() {
            Some(&"sec") => want = true,
            Some(&"ssb") => want = false,
            Some(&"fpr") if want => {
                if let Some(fpr) = fields.get(9).filter(|f| !f.is_empty()) {
                    out.push(fpr.to_string());
                }
                want = false;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_fingerprints_skip_subkeys() {
        let listing = "sec:u:255:22:AAAA:1:::u:::scESC:::+:::23::0:\n\
                       fpr:::::::::1111222233334444555566667777888899990000:\n\
                       grp:::::::::ABC:\n\
                       uid:u::::1::X::bake test::::::::::0:\n\
                       ssb:u:255:18:BBBB:1::::::e:::+:::23:\n\
                       fpr:::::::::FFFF222233334444555566667777888899990000:\n";
        assert_eq!(
            primary_fingerprints(listing),
            ["1111222233334444555566667777888899990000"]
        );
    }
}
