#!/bin/sh
# Assemble a small, reproducible initramfs for the arm64 VRRP failover test.
#
#   make-initramfs.sh OUTDIR KERNEL_DEB BUSYBOX_DEB IMAGE_RAW
#
# KERNEL_DEB   Debian linux-image-6.1.0-*-arm64 (or -cloud-arm64) .deb: vmlinuz and modules
# BUSYBOX_DEB  Debian busybox-static arm64 .deb
# IMAGE_RAW    the keepalived sysext image (squashfs); keepalived is taken from it
# The guest's /init is vm-init.sh, which runs failover.sh (both next to this script).
#
# Writes OUTDIR/vmlinuz, OUTDIR/initramfs.gz and OUTDIR/manifest.
# Environment: SOURCE_DATE_EPOCH (mtime of every archive member, default 0),
#              MODULES (kernel modules to load, dependencies are added; default "veth").
# Needs: sh, tar, xz, gzip, cpio (GNU, --reproducible), unsquashfs, and dpkg-deb or ar.
# No root needed: /dev/console is written into the archive directly.
set -eu

[ $# -ge 4 ] || { echo "usage: $0 OUTDIR KERNEL_DEB BUSYBOX_DEB IMAGE_RAW" >&2; exit 2; }
out=$1 kdeb=$2 bbdeb=$3 image=$4
here=$(cd "$(dirname "$0")" && pwd)
init=$here/vm-init.sh
sde=${SOURCE_DATE_EPOCH:-0}
modules=${MODULES:-veth}
export LC_ALL=C TZ=UTC
umask 022

for f in "$kdeb" "$bbdeb" "$image" "$init"; do
    [ -f "$f" ] || { echo "make-initramfs: missing $f" >&2; exit 1; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/initramfs.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# The data tarball of a .deb on stdout (dpkg-deb, or ar for hosts without dpkg).
deb_data() {
    if command -v dpkg-deb >/dev/null 2>&1; then
        dpkg-deb --fsys-tarfile "$1"
    else
        m=$(ar t "$1" | grep '^data\.tar')
        case "$m" in
            *.xz) ar p "$1" "$m" | xz -dc ;;
            *.zst) ar p "$1" "$m" | zstd -dc ;;
            *.gz) ar p "$1" "$m" | gzip -dc ;;
            *) ar p "$1" "$m" ;;
        esac
    fi
}

root=$work/root
mkdir -p "$root/bin" "$root/usr/bin" "$root/dev" "$root/proc" "$root/sys" "$root/run" \
    "$root/tmp" "$root/etc" "$root/lib/modules"

# busybox
deb_data "$bbdeb" | tar -x -C "$work" ./bin/busybox
cp "$work/bin/busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"

# keepalived, from the image (what the test is meant to prove)
unsquashfs -q -n -d "$work/img" "$image" usr/bin/keepalived usr/lib/extension-release.d >/dev/null
cp "$work/img/usr/bin/keepalived" "$root/usr/bin/keepalived"
for r in "$work/img/usr/lib/extension-release.d/"*; do
    [ -f "$r" ] && cp "$r" "$root/etc/extension-release"
done
# An arm64 ELF (e_machine 183 = 0xb7), statically linked (no PT_INTERP, no DT_NEEDED).
[ "$(od -An -tu2 -j18 -N2 "$root/usr/bin/keepalived" | tr -d ' ')" = 183 ] ||
    { echo "make-initramfs: keepalived in the image is not an arm64 ELF" >&2; exit 1; }
if command -v readelf >/dev/null 2>&1; then
    if readelf -lW "$root/usr/bin/keepalived" | grep -q 'INTERP' ||
        readelf -dW "$root/usr/bin/keepalived" | grep -q 'NEEDED'; then
        echo "make-initramfs: keepalived in the image is not statically linked" >&2; exit 1
    fi
fi

# Kernel: vmlinuz and the modules with their dependencies (from each module's
# .modinfo "depends=", so no depmod is needed), in load order. One pass over the
# package's data per dependency level (the first also takes vmlinuz); a module
# named a_b may be a-b.ko on disk, so the glob matches both spellings.
modglob() { echo "./lib/modules/*/kernel/*/$(echo "$1" | sed 's/[-_]/[-_]/g').ko"; }
found() { # module name -> its extracted path, relative to $work ("" if none)
    f=$(find "$work/lib/modules" -name '*.ko' 2>/dev/null |
        awk -v n="$(echo "$1" | tr - _)" '{ b = $0; sub(/.*\//, "", b); sub(/\.ko$/, "", b); gsub(/-/, "_", b); if (b == n) { print; exit } }')
    [ -n "$f" ] && echo ".${f#"$work"}"
}
: > "$work/order"
need=$modules first=1
while [ -n "$need" ]; do
    pats=
    for m in $need; do [ -n "$(found "$m")" ] || pats="$pats $(modglob "$m")"; done
    if [ -n "$first" ] || [ -n "$pats" ]; then
        # Patterns that match nothing (builtin modules) make tar complain: checked below.
        # shellcheck disable=SC2086
        deb_data "$kdeb" | tar -x -C "$work" --wildcards ${first:+'./boot/vmlinuz-*' './lib/modules/*/modules.builtin'} $pats 2>/dev/null || :
    fi
    if [ -n "$first" ]; then
        vmlinuz=$(cd "$work" && ls ./boot/vmlinuz-* 2>/dev/null | head -n 1)
        [ -n "$vmlinuz" ] || { echo "make-initramfs: no vmlinuz in $kdeb" >&2; exit 1; }
        kver=${vmlinuz#./boot/vmlinuz-}
        first=
    fi
    level=
    for m in $need; do
        p=$(found "$m")
        if [ -z "$p" ]; then
            tr - _ < "$work/lib/modules/$kver/modules.builtin" | grep -q "/$(echo "$m" | tr - _)\.ko\$" && continue
            echo "make-initramfs: module $m not in $kdeb (compressed modules are not supported: busybox insmod)" >&2
            exit 1
        fi
        level="$level $p"
    done
    need=
    for p in $level; do
        echo "$p" >> "$work/order"
        need="$need $(tr '\0' '\n' < "$work/$p" | sed -n 's/^depends=//p' | tr , ' ')"
    done
    need=$(echo $need)
done
# load order: dependencies before dependants (reverse discovery order, first occurrence kept)
tac "$work/order" | awk '!seen[$0]++' > "$work/order.rev"
: > "$root/lib/modules/load-order"
while read -r p; do
    rel=${p#./lib/modules/$kver/}
    mkdir -p "$root/lib/modules/$kver/$(dirname "$rel")"
    cp "$work/$p" "$root/lib/modules/$kver/$rel"
    echo "/lib/modules/$kver/$rel" >> "$root/lib/modules/load-order"
done < "$work/order.rev"

cp "$init" "$root/init"
cp "$here/failover.sh" "$root/failover.sh"

# Normalise: modes, then mtimes, then an archive in sorted order owned by root.
find "$root" -type d -exec chmod 0755 {} +
chmod 1777 "$root/tmp"
find "$root" -type f -exec chmod 0644 {} +
chmod 0755 "$root/init" "$root/failover.sh" "$root/bin/busybox" "$root/usr/bin/keepalived"
find "$root" -exec touch -h -d "@$sde" {} +

(cd "$root" && find . -mindepth 1 | sed 's|^\./||' | sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) > "$work/main.cpio"

# A second archive member list with the console device: the kernel opens
# /dev/console for init before init runs. newc header: magic, 13 hex fields, name.
newc() { # name mode rdevmajor rdevminor
    ns=$((${#1} + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        1 "$2" 0 0 1 "$sde" 0 0 0 "$3" "$4" "$ns" 0
    printf '%s\000' "$1"
    pad=$(( (4 - (110 + ns) % 4) % 4 ))
    while [ $pad -gt 0 ]; do printf '\000'; pad=$((pad - 1)); done
}
{ newc dev/console $((0020600)) 5 1; newc 'TRAILER!!!' 0 0 0; } > "$work/console.cpio"

cat "$work/main.cpio" "$work/console.cpio" | gzip -9 -n > "$out/initramfs.gz"
cp "$work/$vmlinuz" "$out/vmlinuz"
chmod 0644 "$out/vmlinuz" "$out/initramfs.gz"

{
    echo "kernel $kver"
    echo "keepalived $(sha256sum < "$root/usr/bin/keepalived" | cut -d' ' -f1)"
    sed 's/^/module /' "$root/lib/modules/load-order"
    (cd "$out" && sha256sum vmlinuz initramfs.gz)
    echo "initramfs.gz $(wc -c < "$out/initramfs.gz") bytes, $(cat "$work/main.cpio" "$work/console.cpio" | wc -c) uncompressed"
} > "$out/manifest"
cat "$out/manifest"
