//! Archive formats, recognised by their first bytes rather than their names.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Tar(Compression),
    Zip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Xz,
    Bzip2,
    Zstd,
}

impl Format {
    /// Reads the magic bytes and rewinds; `None` when no format matches.
    pub(crate) fn detect(file: &mut File) -> io::Result<Option<Format>> {
        let mut head = [0u8; 262];
        let mut len = 0;
        while len < head.len() {
            match file.read(&mut head[len..])? {
                0 => break,
                n => len += n,
            }
        }
        file.seek(SeekFrom::Start(0))?;
        let head = &head[..len];
        let format = if head.starts_with(&[0x1f, 0x8b]) {
            Format::Tar(Compression::Gzip)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Format::Tar(Compression::Xz)
        } else if head.starts_with(b"BZh") {
            Format::Tar(Compression::Bzip2)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Format::Tar(Compression::Zstd)
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Format::Zip
        } else if head.get(257..262) == Some(b"ustar") {
            Format::Tar(Compression::None)
        } else {
            return Ok(None);
        };
        Ok(Some(format))
    }
}

impl Compression {
    /// The tar stream inside `file`; concatenated members are all read.
    pub(crate) fn decoder(self, file: File) -> io::Result<Box<dyn Read>> {
        let input = BufReader::new(file);
        Ok(match self {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Compression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(input)),
            Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        })
    }
}
