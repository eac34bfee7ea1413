//! Unpacking archives built by the tests themselves, benign and malicious.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bake::fetch::unpack::{copy_file, unpack_archive, Refusal, UnpackError, UnpackLimits};

const EPOCH: u64 = 1_700_000_000;

/// One tar entry, written with raw header fields so that names the `tar`
/// crate's builder would reject (absolute, `..`) can be tested.
enum Item<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    CharDevice(&'a str),
    Fifo(&'a str),
}

fn tar_bytes(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        let (name, kind, data, mode, link): (&str, tar::EntryType, &[u8], u32, &str) = match item {
            Item::Dir(n) => (n, tar::EntryType::Directory, b"", 0o755, ""),
            Item::File(n, d, m) => (n, tar::EntryType::Regular, d, *m, ""),
            Item::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", 0o777, t),
            Item::HardLink(n, t) => (n, tar::EntryType::Link, b"", 0o644, t),
            Item::CharDevice(n) => (n, tar::EntryType::Char, b"", 0o666, ""),
            Item::Fifo(n) => (n, tar::EntryType::Fifo, b"", 0o644, ""),
        };
        let bytes = header.as_mut_bytes();
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        bytes[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(12345);
        if let Item::CharDevice(_) = item {
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

struct Scene {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    dest: PathBuf,
}

/// `root/outside/` stands for everything the archive must not touch.
fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let outside = root.join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"keep").unwrap();
    Scene {
        dest: root.join("dest"),
        outside,
        root,
        _dir: dir,
    }
}

impl Scene {
    fn archive(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.root.join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn assert_untouched(&self, archive_name: &str) {
        assert_eq!(Self::names_in(&self.outside), ["secret"]);
        assert_eq!(fs::read(self.outside.join("secret")).unwrap(), b"keep");
        assert_eq!(Self::names_in(&self.root), [archive_name, "outside"]);
    }
}

fn assert_refused(items: &[Item], entry: &str, reason: impl Fn(&Refusal) -> bool) {
    let s = scene();
    let archive = s.archive("evil.tar", &tar_bytes(items));
    let err = unpack_archive(&archive, &s.dest, EPOCH, &UnpackLimits::default()).unwrap_err();
    match &err {
        UnpackError::Refused {
            entry: named,
            reason: why,
            ..
        } => {
            assert_eq!(named, entry, "{err}");
            assert!(reason(why), "{err}");
        }
        other => panic!("expected a refusal, got: {other}"),
    }
    assert!(err.to_string().contains(entry), "{err}");
    s.assert_untouched("evil.tar");
}

#[test]
fn absolute_path_is_refused() {
    let s = scene();
    let target = format!("{}/evil", s.outside.display());
    assert_refused(
        &[Item::Dir("top/"), Item::File(&target, b"x", 0o644)],
        &target,
        |r| matches!(r, Refusal::AbsolutePath),
    );
    assert!(!s.outside.join("evil").exists());
}

#[test]
fn parent_dir_component_is_refused() {
    assert_refused(
        &[
            Item::File("top/ok", b"x", 0o644),
            Item::File("../../outside/evil", b"x", 0o644),
        ],
        "../../outside/evil",
        |r| matches!(r, Refusal::ParentDir),
    );
}

#[test]
fn symlink_pointing_outside_is_refused() {
    assert_refused(
        &[
            Item::Dir("top/"),
            Item::Symlink("top/escape", "../../outside"),
            Item::File("top/escape/evil", b"x", 0o644),
        ],
        "top/escape",
        |r| matches!(r, Refusal::SymlinkEscapes { .. }),
    );
    assert_refused(
        &[Item::Symlink("top/passwd", "/etc/passwd")],
        "top/passwd",
        |r| matches!(r, Refusal::SymlinkEscapes { .. }),
    );
}

#[test]
fn symlink_chain_leading_outside_is_refused() {
    // Each link alone stays inside; `b` leads out only through `a`.
    assert_refused(
        &[
            Item::Symlink("a", "."),
            Item::Symlink("b", "a/.."),
            Item::File("c", b"x", 0o644),
        ],
        "b",
        |r| matches!(r, Refusal::SymlinkEscapes { .. }),
    );
}

#[test]
fn symlink_leaving_the_stripped_top_directory_is_refused() {
    assert_refused(
        &[Item::Dir("pkg/"), Item::Symlink("pkg/up", "../elsewhere")],
        "pkg/up",
        |r| matches!(r, Refusal::SymlinkEscapes { .. }),
    );
}

#[test]
fn writing_through_a_symlink_is_refused() {
    assert_refused(
        &[
            Item::Dir("top/"),
            Item::Dir("top/real/"),
            Item::Symlink("top/alias", "real"),
            Item::File("top/alias/file", b"x", 0o644),
        ],
        "top/alias/file",
        |r| matches!(r, Refusal::ThroughSymlink { .. }),
    );
}

#[test]
fn hard_link_pointing_outside_is_refused() {
    assert_refused(
        &[
            Item::Dir("top/"),
            Item::HardLink("top/h", "../outside/secret"),
        ],
        "top/h",
        |r| matches!(r, Refusal::HardLinkEscapes { .. }),
    );
    assert_refused(
        &[Item::Dir("top/"), Item::HardLink("top/h", "/etc/passwd")],
        "top/h",
        |r| matches!(r, Refusal::HardLinkEscapes { .. }),
    );
}

#[test]
fn device_node_is_refused() {
    assert_refused(
        &[Item::Dir("top/"), Item::CharDevice("top/null")],
        "top/null",
        |r| matches!(r, Refusal::Device),
    );
}

#[test]
fn fifo_is_refused() {
    assert_refused(
        &[Item::Dir("top/"), Item::Fifo("top/pipe")],
        "top/pipe",
        |r| matches!(r, Refusal::Fifo),
    );
}

#[test]
fn refused_archive_leaves_an_existing_empty_dest_empty() {
    let s = scene();
    fs::create_dir(&s.dest).unwrap();
    let archive = s.archive(
        "evil.tar",
        &tar_bytes(&[Item::File("top/a", b"x", 0o644), Item::Fifo("top/pipe")]),
    );
    unpack_archive(&archive, &s.dest, EPOCH, &UnpackLimits::default()).unwrap_err();
    assert!(Scene::names_in(&s.dest).is_empty());
}

fn sample() -> Vec<u8> {
    tar_bytes(&[
        Item::Dir("pkg-1.0/"),
        Item::File("pkg-1.0/configure", b"#!/bin/sh\n", 0o755),
        Item::Dir("pkg-1.0/src/"),
        Item::File("pkg-1.0/src/a.c", b"int main;\n", 0o644),
        Item::File("pkg-1.0/src/setuid", b"s", 0o4755),
        Item::File("pkg-1.0/src/setgid", b"g", 0o2750),
        Item::Symlink("pkg-1.0/src/link.c", "a.c"),
        Item::Symlink("pkg-1.0/cfg", "src/../configure"),
        Item::HardLink("pkg-1.0/src/b.c", "pkg-1.0/src/a.c"),
    ])
}

fn assert_sample_unpacked(dest: &Path) {
    assert_eq!(Scene::names_in(dest), ["cfg", "configure", "src"]);
    assert_eq!(fs::read(dest.join("src/a.c")).unwrap(), b"int main;\n");
    assert_eq!(fs::read(dest.join("src/link.c")).unwrap(), b"int main;\n");
    assert_eq!(
        fs::read_link(dest.join("cfg")).unwrap(),
        Path::new("src/../configure")
    );
    let a = fs::metadata(dest.join("src/a.c")).unwrap();
    let b = fs::metadata(dest.join("src/b.c")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link inside the tree is kept");
    let mode = |p: &str| {
        fs::symlink_metadata(dest.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("configure"), 0o755);
    assert_eq!(mode("src"), 0o755);
    assert_eq!(mode("src/setuid"), 0o755, "setuid dropped");
    assert_eq!(mode("src/setgid"), 0o750, "setgid dropped");
    for p in ["", "configure", "src", "src/a.c", "src/link.c", "cfg"] {
        let meta = fs::symlink_metadata(dest.join(p)).unwrap();
        assert_eq!(meta.mtime(), EPOCH as i64, "mtime of `{p}`");
    }
}

#[test]
fn tar_unpacks_with_top_dir_stripped_modes_cleaned_and_mtimes_set() {
    let s = scene();
    let archive = s.archive("plain.bin", &sample());
    unpack_archive(&archive, &s.dest, EPOCH, &UnpackLimits::default()).unwrap();
    assert_sample_unpacked(&s.dest);
}

#[test]
fn compressed_tars_are_recognised_by_content() {
    let tar = sample();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&tar).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(&tar).unwrap();
    let formats = [
        ("gz", gz.finish().unwrap()),
        ("xz", xz.finish().unwrap()),
        ("bz2", bz.finish().unwrap()),
        ("zst", zstd::encode_all(&tar[..], 3).unwrap()),
    ];
    for (kind, bytes) in formats {
        let s = scene();
        // A misleading name: detection must not depend on it.
        let archive = s.archive("source.zip", &bytes);
        unpack_archive(&archive, &s.dest, EPOCH, &UnpackLimits::default())
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_sample_unpacked(&s.dest);
    }
}

#[test]
fn zip_unpacks_with_top_dir_stripped() {
    let s = scene();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = |mode: u32| {
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode)
    };
    zip.add_directory("pkg/", opts(0o755)).unwrap();
    zip.start_file("pkg/run.sh", opts(0o4755)).unwrap();
    zip.write_all(b"echo hi\n").unwrap();
    zip.add_directory("pkg/doc/", opts(0o755)).unwrap();
    zip.start_file("pkg/doc/README", opts(0o644)).unwrap();
    zip.write_all(b"read me\n").unwrap();
    zip.add_symlink("pkg/doc/README.link", "README", opts(0o777))
        .unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    let archive = s.archive("pkg.tar.gz", &bytes);

    unpack_archive(&archive, &s.dest, EPOCH, &UnpackLimits::default()).unwrap();
    assert_eq!(Scene::names_in(&s.dest), ["doc", "run.sh"]);
    assert_eq!(
        fs::read(s.dest.join("doc/README.link")).unwrap(),
        b"read me\n"
    );
    let mode = fs::metadata(s.dest.join("run.sh"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o755);
    assert_eq!(
        fs::metadata(s.dest.join("doc/README")).unwrap().mtime(),
        EPOCH as i64
    );
}

#[test]
fn zip_symlink_escaping_is_refused() {
    let s = scene();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    zip.add_symlink("pkg/out", "../../outside", opts).unwrap();
    let archive = s.archive("evil.zip", &zip.finish().unwrap().into_inner());
    let err = unpack_archive(&archive, &s.dest, EPOCH, &UnpackLimits::default()).unwrap_err();
    assert!(err.to_string().contains("pkg/out"), "{err}");
    s.assert_untouched("evil.zip");
}

#[test]
fn several_top_level_entries_are_kept_as_they_are() {
    let s = scene();
    let archive = s.archive(
        "flat.tar",
        &tar_bytes(&[
            Item::Dir("a/"),
            Item::File("a/x", b"x", 0o644),
            Item::File("b", b"b", 0o644),
        ]),
    );
    unpack_archive(&archive, &s.dest, 0, &UnpackLimits::default()).unwrap();
    assert_eq!(Scene::names_in(&s.dest), ["a", "b"]);
    assert_eq!(fs::metadata(s.dest.join("b")).unwrap().mtime(), 0);
}

#[test]
fn non_archives_and_busy_destinations_are_errors() {
    let s = scene();
    let text = s.archive("notes.txt", b"just text\n");
    let err = unpack_archive(&text, &s.dest, EPOCH, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::NotAnArchive { .. }), "{err}");
    assert!(!s.dest.exists());

    let archive = s.archive("ok.tar", &sample());
    let err = unpack_archive(&archive, &s.outside, EPOCH, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::DestNotEmpty { .. }), "{err}");
    assert_eq!(Scene::names_in(&s.outside), ["secret"]);
}

#[test]
fn a_plain_file_is_copied_under_its_name() {
    let s = scene();
    let stored = s.archive("sha256-abc", b"#!/bin/sh\necho patch\n");
    fs::set_permissions(&stored, fs::Permissions::from_mode(0o444)).unwrap();
    let placed = copy_file(&stored, &s.dest, "fix.patch", EPOCH).unwrap();
    assert_eq!(placed, s.dest.join("fix.patch"));
    assert_eq!(fs::read(&placed).unwrap(), b"#!/bin/sh\necho patch\n");
    let meta = fs::metadata(&placed).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert_eq!(meta.mtime(), EPOCH as i64);
    for bad in ["", "..", "a/b", "/etc/passwd"] {
        assert!(copy_file(&stored, &s.dest, bad, EPOCH).is_err(), "{bad}");
    }
}

/// A file of `len` zero bytes that takes no room: a sparse file.
fn sparse_file(path: &Path, len: u64) {
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

fn assert_too_large(archive: &Path, s: &Scene) {
    let err = unpack_archive(archive, &s.dest, EPOCH, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("unpacks to more than"), "{err}");
    assert!(!s.dest.exists(), "nothing is left of a refused archive");
}

#[test]
fn a_sparse_tar_bomb_is_refused() {
    let s = scene();
    let big = s.root.join("big");
    sparse_file(&big, 1 << 30);
    let archive = s.root.join("bomb.tar");
    let tar = std::process::Command::new("tar")
        .args(["--sparse", "-C", s.root.to_str().unwrap(), "-cf"])
        .arg(&archive)
        .arg("big")
        .status()
        .unwrap();
    assert!(tar.success());
    assert!(
        fs::metadata(&archive).unwrap().len() < 64 << 10,
        "a small archive"
    );
    assert_too_large(&archive, &s);
}

#[test]
fn a_gzip_bomb_is_refused() {
    let s = scene();
    let archive = s.root.join("bomb.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        fs::File::create(&archive).unwrap(),
        flate2::Compression::best(),
    );
    let mut builder = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(1 << 30);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "zeros", std::io::repeat(0).take(1 << 30))
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap();
    assert!(
        fs::metadata(&archive).unwrap().len() < 2 << 20,
        "a small archive"
    );
    assert_too_large(&archive, &s);
}

#[test]
fn a_zip_bomb_is_refused() {
    let s = scene();
    let archive = s.root.join("bomb.zip");
    let mut zip = zip::ZipWriter::new(fs::File::create(&archive).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    zip.start_file("zeros", options).unwrap();
    std::io::copy(&mut std::io::repeat(0).take(1 << 30), &mut zip).unwrap();
    zip.finish().unwrap();
    assert!(
        fs::metadata(&archive).unwrap().len() < 2 << 20,
        "a small archive"
    );
    assert_too_large(&archive, &s);
}

#[test]
fn a_source_may_raise_its_limits() {
    let s = scene();
    let big = s.root.join("big");
    sparse_file(&big, 8 << 20);
    let archive = s.root.join("big.tar");
    let tar = std::process::Command::new("tar")
        .args(["--sparse", "-C", s.root.to_str().unwrap(), "-cf"])
        .arg(&archive)
        .arg("big")
        .status()
        .unwrap();
    assert!(tar.success());
    let tight = UnpackLimits {
        bytes: 1 << 20,
        ratio: 200,
    };
    assert!(unpack_archive(&archive, &s.dest, EPOCH, &tight).is_err());
    let loose = UnpackLimits {
        bytes: 16 << 20,
        ratio: 200,
    };
    unpack_archive(&archive, &s.dest, EPOCH, &loose).unwrap();
    assert_eq!(fs::metadata(s.dest.join("big")).unwrap().len(), 8 << 20);
}
