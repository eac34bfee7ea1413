//! Hashing while streaming, in the algorithm a source declares.

use sha2::Digest as _;

use crate::hash::{HashAlgo, SourceHash};

pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn new(algo: HashAlgo) -> Hasher {
        match algo {
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            HashAlgo::Blake3 => Hasher::Blake3(Box::default()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    pub fn finish(self) -> SourceHash {
        let (algo, hex) = match self {
            Hasher::Sha256(h) => (HashAlgo::Sha256, hex(&h.finalize())),
            Hasher::Sha512(h) => (HashAlgo::Sha512, hex(&h.finalize())),
            Hasher::Blake3(h) => (HashAlgo::Blake3, h.finalize().to_hex().to_string()),
        };
        SourceHash { algo, hex }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of a whole file.
pub fn hash_file(path: &std::path::Path, algo: HashAlgo) -> std::io::Result<SourceHash> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new(algo);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}
