//! Streaming digests for the algorithms a source may declare.

use sha2::Digest as _;

use crate::hash::{HashAlgo, SourceHash};

/// Hashes bytes as they stream past, in the algorithm the source declared.
pub(crate) enum SourceHasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    Blake3(Box<blake3::Hasher>),
}

impl SourceHasher {
    pub(crate) fn new(algo: HashAlgo) -> Self {
        match algo {
            HashAlgo::Sha256 => SourceHasher::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => SourceHasher::Sha512(sha2::Sha512::new()),
            HashAlgo::Blake3 => SourceHasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            SourceHasher::Sha256(h) => h.update(bytes),
            SourceHasher::Sha512(h) => h.update(bytes),
            SourceHasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    pub(crate) fn finish(self) -> SourceHash {
        let (algo, bytes) = match self {
            SourceHasher::Sha256(h) => (HashAlgo::Sha256, h.finalize().to_vec()),
            SourceHasher::Sha512(h) => (HashAlgo::Sha512, h.finalize().to_vec()),
            SourceHasher::Blake3(h) => (HashAlgo::Blake3, h.finalize().as_bytes().to_vec()),
        };
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
        SourceHash { algo, hex }
    }
}

/// The hash of a whole file (`bake import`, release checksums).
pub fn hash_file(path: &std::path::Path, algo: HashAlgo) -> std::io::Result<SourceHash> {
    let mut f = std::fs::File::open(path)?;
    let mut h = SourceHasher::new(algo);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_of_empty_input() {
        let sha256 = SourceHasher::new(HashAlgo::Sha256).finish();
        assert_eq!(
            sha256.hex,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let blake3 = SourceHasher::new(HashAlgo::Blake3).finish();
        assert_eq!(blake3.hex, blake3::hash(b"").to_hex().as_str());
        assert_eq!(SourceHasher::new(HashAlgo::Sha512).finish().hex.len(), 128);
    }
}
