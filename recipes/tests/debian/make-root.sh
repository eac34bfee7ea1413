#!/bin/sh
# make-root.sh: build a bootable Debian root (systemd as PID 1) from a directory of
# .deb files, without network.
#
#   make-root.sh [--tool mmdebstrap|debootstrap] [--include PKGS] DEBDIR OUTDIR|OUT.tar
#
# By default every package in DEBDIR is installed (--include defaults to all of
# their names), so the root is exactly the lock. That is needed, not only tidy:
# the archive overrides some priorities (apt is Priority: required in the
# index but "important" in its .deb), and the Packages file written here from
# the .debs' own control data would otherwise leave apt out of minbase.
#
# DEBDIR holds the .deb files of a lock (debian-lock --fetch DIR, or bake's fetched
# sources: any file names, packages are recognised by dpkg-deb). The script
# writes a local apt repository (pool + Packages + Release, generated here with
# dpkg-deb only: no dpkg-dev needed) in a temporary directory and points
# mmdebstrap (default; as copy://, so apt copies the .debs into the chroot) or
# debootstrap (file://) at it. Nothing else is
# reachable, so the root holds only locked packages; a missing one is an error.
# Suite and architecture come from the .debs (base-files' os-release, libc6).
# SOURCE_DATE_EPOCH (default: newest mtime in base-files' data) makes
# mmdebstrap's output reproducible.
#
# Run as root. Prove it is offline with:  unshare -n make-root.sh DEBDIR OUTDIR
#
# After the bootstrap: systemd-sysext.service enabled (Debian ships it disabled),
# apt sources emptied (the local repository is gone), hostname "debroot", and
# /etc/resolv.conf emptied (both tools copy the build host's: the output would
# depend on the machine). No /etc/hosts (netbase is not in minbase), so the
# host name does not resolve: keepalived's DNS wait shows when router_id is unset.
set -eu

tool=mmdebstrap
include=
while [ $# -gt 0 ]; do
    case "$1" in
        --tool) tool=$2; shift 2 ;;
        --include) include=$2; shift 2 ;;
        --) shift; break ;;
        -*) echo "usage: $0 [--tool mmdebstrap|debootstrap] [--include PKGS] DEBDIR OUTDIR" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -eq 2 ] || { echo "usage: $0 [--tool mmdebstrap|debootstrap] [--include PKGS] DEBDIR OUTDIR" >&2; exit 2; }
debdir=$(realpath "$1")
out=$2
[ "$(id -u)" = 0 ] || { echo "$0: must run as root" >&2; exit 1; }
command -v "$tool" >/dev/null || { echo "$0: $tool is not installed" >&2; exit 1; }
if [ -f "$out" ] || { [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; }; then
    echo "$0: $out exists and is not empty" >&2; exit 1
fi

# Every file in DEBDIR that dpkg-deb reads as a package (any file name: bake's store
# names sources by hash). Index: PACKAGE VERSION ARCH PATH.
work=$(mktemp -d /tmp/make-root.XXXXXX)
chmod 755 "$work"   # apt reads the repository as its unprivileged _apt user
trap 'rm -rf "$work"' EXIT INT TERM
for f in "$debdir"/*; do
    [ -f "$f" ] || continue
    dpkg-deb -W --showformat='${Package} ${Version} ${Architecture} ' "$f" 2>/dev/null && echo "$f"
done > "$work/index"
n=$(wc -l < "$work/index")
[ "$n" -gt 0 ] || { echo "$0: no .deb files in $debdir" >&2; exit 1; }
deb_of() { awk -v p="$1" '$1 == p { print $4; exit }' "$work/index"; }

# Suite and architecture from the packages themselves.
bf=$(deb_of base-files)
[ -n "$bf" ] || { echo "$0: no base-files in $debdir" >&2; exit 1; }
suite=$(dpkg-deb --fsys-tarfile "$bf" | tar -xO ./usr/lib/os-release ./etc/os-release 2>/dev/null |
        sed -n 's/^VERSION_CODENAME=//p' | head -n1)
arch=$(awk '$1 == "libc6" { print $3; exit }' "$work/index")
[ -n "$suite" ] && [ -n "$arch" ] || { echo "$0: cannot tell suite/arch from $debdir" >&2; exit 1; }
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(dpkg-deb --fsys-tarfile "$bf" | python3 -c '
import sys, tarfile
print(max(m.mtime for m in tarfile.open(fileobj=sys.stdin.buffer, mode="r|")))')
fi
export SOURCE_DATE_EPOCH

repo=$work/repo
mkdir -p "$repo/pool" "$repo/dists/$suite/main/binary-$arch"

# --- the local repository (pool names as Debian's: no epoch) -----------------------
pk=$repo/dists/$suite/main/binary-$arch/Packages
while read -r pkg ver a deb; do
    name=${pkg}_${ver#*:}_$a.deb
    ln -s "$deb" "$repo/pool/$name"
    dpkg-deb -f "$deb"
    printf 'Filename: pool/%s\nSize: %s\nSHA256: %s\n\n' "$name" "$(stat -L -c %s "$deb")" \
        "$(sha256sum < "$deb" | cut -d' ' -f1)"
done < "$work/index" > "$pk"
gzip -9nk "$pk"
{
    printf 'Origin: Debian\nLabel: Debian\nSuite: %s\nCodename: %s\n' "$suite" "$suite"
    printf 'Date: %s\n' "$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" '+%a, %d %b %Y %H:%M:%S UTC')"
    printf 'Architectures: %s\nComponents: main\nDescription: local repository\nSHA256:\n' "$arch"
    for f in main/binary-$arch/Packages main/binary-$arch/Packages.gz; do
        printf ' %s %s %s\n' "$(sha256sum < "$repo/dists/$suite/$f" | cut -d' ' -f1)" \
            "$(stat -c %s "$repo/dists/$suite/$f")" "$f"
    done
} > "$repo/dists/$suite/Release"

if [ -z "$include" ]; then
    include=$(awk '{ print $1 }' "$work/index" | sort -u | paste -sd, -)
fi
set -- $(awk '{ print $1 }' "$work/index")

echo "make-root: $tool, $suite/$arch, $# packages, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" >&2
start=$(date +%s.%N)
case "$tool" in
    mmdebstrap)
        # bookworm: the lock carries the real usr-is-merged (not usrmerge+perl), so
        # set up merged /usr with directory symlinks as debootstrap does (mmdebstrap's
        # merged-usr hook). trixie: base-files ships the symlinks and Provides
        # usr-is-merged; the hook must not run there (it wants the real package).
        hook=
        if [ -n "$(deb_of usr-is-merged)" ]; then
            hook=--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
        fi
        # OUTDIR ending in .tar: a tarball (mtimes clamped to SOURCE_DATE_EPOCH, bit-identical
        # from run to run); otherwise a directory (same content, build-time mtimes).
        case "$out" in *.tar) fmt=tar ;; *) fmt=directory ;; esac
        mmdebstrap --mode=root --variant=minbase --include="$include" --format=$fmt $hook \
            --aptopt='Acquire::Languages "none"' \
            --customize-hook='chroot "$1" systemctl enable systemd-sysext.service' \
            --customize-hook='printf "" > "$1/etc/apt/sources.list"; rm -f "$1"/etc/apt/sources.list.d/*' \
            --customize-hook='echo debroot > "$1/etc/hostname"; : > "$1/etc/resolv.conf"' \
            "$suite" "$out" "deb [trusted=yes] copy://$repo $suite main"
        ;;
    debootstrap)
        case "$out" in *.tar) echo "$0: debootstrap writes directories only" >&2; exit 2 ;; esac
        mkdir -p "$out"
        debootstrap --variant=minbase --include="$include" --no-check-gpg --merged-usr \
            --arch="$arch" "$suite" "$out" "file://$repo"
        chroot "$out" systemctl enable systemd-sysext.service
        printf '' > "$out/etc/apt/sources.list"
        rm -rf "$out/var/cache/apt/archives/"*.deb "$out/var/lib/apt/lists/"*_dists_* 2>/dev/null || true
        echo debroot > "$out/etc/hostname"
        : > "$out/etc/resolv.conf"
        ;;
    *) echo "$0: unknown tool $tool" >&2; exit 2 ;;
esac
end=$(date +%s.%N)
if [ -d "$out" ]; then npk=$(chroot "$out" dpkg-query -W -f '.\n' | wc -l); else npk=$(tar -xOf "$out" ./var/lib/dpkg/status | grep -c '^Package: '); fi
echo "make-root: done in $(echo "$end - $start" | bc 2>/dev/null || python3 -c "print(round($end-$start,1))") s," \
     "$(du -sh --apparent-size "$out" | cut -f1) (du $(du -sh "$out" | cut -f1))," \
     "$npk packages installed" >&2
