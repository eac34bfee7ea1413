//! Content hashes and the newtypes that give them meaning.
//!
//! Every key in bake is a blake3 digest; the newtypes keep an eval key from being
//! used where a build key or an output hash is meant.

use std::fmt;
use std::str::FromStr;

/// Lowercase hex of any bytes: digests of other algorithms (SHA-1, SHA-256)
/// as formats outside bake write them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first 16 of `bytes` in a UUID's text form, as they are.
pub fn uuid(bytes: &[u8]) -> String {
    let h = hex(&bytes[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The first 16 of `bytes` as a version 4 (random) UUID: its version and
/// variant bits set.
pub fn uuid_v4(bytes: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid(&b)
}

/// A raw 32-byte blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Digest(*h.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

/// Hex in text formats (the store's JSON records), 32 raw bytes in binary ones
/// (the evaluation cache).
impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(Digest)
        }
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        blake3::Hash::from_hex(s)
            .map(Digest::from)
            .map_err(|e| format!("not a blake3 hex digest: {e}"))
    }
}

macro_rules! digest_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(Digest);

        impl $name {
            pub fn new(digest: Digest) -> Self {
                $name(digest)
            }

            pub fn digest(&self) -> Digest {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Digest::deserialize(d).map($name)
            }
        }
    };
}

digest_newtype!(
    /// What `bake eval` prints: known before anything is built.
    EvalKey
);
digest_newtype!(
    /// The store's index: like the eval key, but over the inputs' output hashes.
    BuildKey
);
digest_newtype!(
    /// blake3 over the canonical serialisation of an output tree.
    OutputHash
);

impl EvalKey {
    /// Sources and toolchains are what they declare: their eval key is their build key.
    pub fn as_build_key(self) -> BuildKey {
        BuildKey(self.0)
    }
}

/// The digest algorithms a `source` may declare (`sha256:`, `sha512:`, `blake3:`).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
pub enum HashAlgo {
    Sha256,
    Sha512,
    Blake3,
}

impl HashAlgo {
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
            HashAlgo::Blake3 => "blake3",
        }
    }

    /// Length of the digest in hex characters.
    pub fn hex_len(self) -> usize {
        match self {
            HashAlgo::Sha256 | HashAlgo::Blake3 => 64,
            HashAlgo::Sha512 => 128,
        }
    }
}

/// A source's declared identity, e.g. `sha256:6afd...`: the hex is lowercase and of
/// the algorithm's length.
#[derive(
    Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct SourceHash {
    pub algo: HashAlgo,
    pub hex: String,
}

impl fmt::Display for SourceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

impl FromStr for SourceHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| "expected ALGO:HEX, e.g. sha256:6afd...".to_string())?;
        let algo = match algo {
            "sha256" => HashAlgo::Sha256,
            "sha512" => HashAlgo::Sha512,
            "blake3" => HashAlgo::Blake3,
            other => {
                return Err(format!(
                    "unknown hash algorithm `{other}`; use sha256, sha512 or blake3"
                ))
            }
        };
        if hex.len() != algo.hex_len() {
            return Err(format!(
                "a {} digest has {} hex digits, this one has {}",
                algo.name(),
                algo.hex_len(),
                hex.len()
            ));
        }
        if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(format!("`{c}` is not a hex digit"));
        }
        Ok(SourceHash {
            algo,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_read_as_uuids() {
        let bytes: Vec<u8> = (0u8..16).collect();
        assert_eq!(uuid(&bytes), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        // Version 4, variant 1: the 13th digit is 4, the 17th one of 8, 9, a, b.
        assert_eq!(uuid_v4(&bytes), "00010203-0405-4607-8809-0a0b0c0d0e0f");
    }

    #[test]
    fn source_hash_round_trips_and_rejects_bad_input() {
        let h: SourceHash =
            "sha256:6AFD95DDB7D3E0D3B8B8E5B3A489144131B61A01B06D29E883D0C44ACC8A36BF"
                .parse()
                .unwrap();
        assert_eq!(h.algo, HashAlgo::Sha256);
        assert_eq!(
            h.to_string(),
            "sha256:6afd95ddb7d3e0d3b8b8e5b3a489144131b61a01b06d29e883d0c44acc8a36bf"
        );
        assert!("md5:abc".parse::<SourceHash>().is_err());
        assert!("sha256:abc".parse::<SourceHash>().is_err());
        assert!("sha256".parse::<SourceHash>().is_err());
        assert!(format!("sha256:{}", "g".repeat(64))
            .parse::<SourceHash>()
            .is_err());
    }

    #[test]
    fn digest_hex_round_trips() {
        let d = Digest::of(b"bake");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
    }
}
