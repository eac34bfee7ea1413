#!/usr/bin/env bash
# The bakery-style keepalived baseline: the matrix of recipes/keepalived.kdl built
# the way Flatcar's sysext-bakery builds an extension, to compare with `bake build`.
#
# The bakery's way, kept here:
#   - one (version, arch) at a time, each in a fresh build directory;
#   - every source downloaded anew for every build (`bake fetch` into a fresh,
#     throwaway store, since the bakery downloads on every run);
#   - every dependency (OpenSSL 3.5.7, libnl 3.7.0, PCRE2 10.42) rebuilt for every
#     version, then keepalived (2.3.3 with patches/keepalived-2.3.3-smtp-check-loop.patch),
#     with the recipe's configure and make lines, statically linked;
#   - no cache of any kind (no ccache, no reuse of a build tree or an output);
#   - arm64 compiled natively inside an arm64 root under qemu-user emulation
#     (binfmt_misc + /usr/bin/qemu-aarch64-static), not cross-compiled;
#   - last, a squashfs image of the result with mksquashfs (on the host).
#
# Deviations from the bakery, on purpose:
#   - Debian bookworm chroots (amd64 native, arm64 emulated) instead of the
#     bakery's Alpine containers: only Debian's archive is reachable here.
#   - So the C library is glibc, not musl: the binaries are glibc-static (glibc's
#     static getaddrinfo/getpwnam warnings are expected and harmless for a
#     timing baseline). The compiler is the chroot's own gcc 12, not zig cc.
#   - The roots are created once and cached in /var/tmp/bakery-roots (timed
#     apart, as "setup": it stands for pulling the bakery's container image).
#
# Every heavy command runs under `nice -n 19 ionice -c3` (the whole script
# re-executes itself so); the script is its own process group (setsid) and writes
# its id to /tmp/bakery.pid, so it can be paused with `kill -STOP -- -$(cat
# /tmp/bakery.pid)` and resumed with -CONT. Paused time is measured (a ticker
# that sees gaps in its own clock) and reported beside the wall seconds.
#
# Usage: benches/bakery.sh [--arch x86-64,arm64] [--versions 2.3.4,2.3.3]
#                          [--log FILE] [--setup-only] [--help]
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: benches/bakery.sh [OPTIONS]

Build recipes/keepalived.kdl's matrix the bakery's way (see the header of this
file), one (version, arch) at a time, and log the wall seconds of each step.

Options:
  --arch LIST       archs to build, comma-separated: x86-64, arm64 [x86-64,arm64]
  --versions LIST   keepalived versions, comma-separated: 2.3.4, 2.3.3 [2.3.4,2.3.3]
  --log FILE        append the summary to FILE [benches/bakery-baseline.log]
  --setup-only      only create (or check) the chroots, build nothing
  --setup-ahead     create the later archs' roots in the background while the
                    first arch builds (not the bakery's way: it shares the
                    cores with those builds; use it only when time is short;
                    its CPU seconds show in the step during which it ends)
  --step-timeout S  seconds one native step may take [3600]; emulated steps
                    get 12 times as long
  -h, --help        this help

Environment: BAKE (the bake binary) [target/release/bake of this repository],
BAKERY_ROOTS [/var/tmp/bakery-roots], BAKERY_WORK [/var/tmp/bakery-work].
Needs root (chroot, mount, binfmt_misc). Run it as a job of its own, e.g.
  setsid benches/bakery.sh --arch x86-64 --versions 2.3.4 </dev/null &
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"

archs="x86-64,arm64"
versions="2.3.4,2.3.3"
log="$repo/benches/bakery-baseline.log"
setup_only=0
setup_ahead=0
step_timeout=3600
args=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --arch|--archs) archs=${2:?--arch needs a value}; shift 2 ;;
        --versions|--version) versions=${2:?--versions needs a value}; shift 2 ;;
        --log) log=${2:?--log needs a file}; shift 2 ;;
        --setup-only) setup_only=1; shift ;;
        --setup-ahead) setup_ahead=1; shift ;;
        --step-timeout) step_timeout=${2:?--step-timeout needs seconds}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bakery.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
IFS=, read -r -a arch_list <<<"$archs"
IFS=, read -r -a version_list <<<"$versions"
for a in "${arch_list[@]}"; do
    case "$a" in x86-64|arm64) ;; *) echo "bakery.sh: unknown arch $a" >&2; exit 2 ;; esac
done
for v in "${version_list[@]}"; do
    case "$v" in 2.3.4|2.3.3) ;; *) echo "bakery.sh: unknown version $v" >&2; exit 2 ;; esac
done
case "$step_timeout" in ''|*[!0-9]*) echo "bakery.sh: --step-timeout needs seconds" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "bakery.sh: needs root (chroot, mount, binfmt_misc)" >&2; exit 2; }

# Own process group, niced, once: re-execute under setsid (waiting for it, so a
# caller sees the exit code) and nice/ionice.
if [ "${BAKERY_REEXEC:-}" != 1 ]; then
    export BAKERY_REEXEC=1
    if [ "$(ps -o pgid= -p $$ | tr -d ' ')" = "$$" ]; then
        # Already a group leader (a job of an interactive or job-control shell):
        # setsid would fork; keep this group and just renice.
        exec nice -n 19 ionice -c3 "$self" "${args[@]}"
    fi
    exec setsid -w nice -n 19 ionice -c3 "$self" "${args[@]}"
fi
echo $$ > /tmp/bakery.pid

BAKE=${BAKE:-$repo/target/release/bake}
roots=${BAKERY_ROOTS:-/var/tmp/bakery-roots}
work=${BAKERY_WORK:-/var/tmp/bakery-work}
recipe="$repo/recipes/keepalived.kdl"
patchfile="$repo/recipes/patches/keepalived-2.3.3-smtp-check-loop.patch"
suite=bookworm
# Packages the builds need in each root, beyond debootstrap's minbase.
packages="build-essential pkg-config perl flex bison patch ca-certificates"

# The sources, as pinned in recipes/keepalived.kdl (checked against it below).
declare -A sha=(
    [keepalived-2.3.4]=6afd95ddb7d3e0d3b8b8e5b3a489144131b61a01b06d29e883d0c44acc8a36bf
    [keepalived-2.3.3]=2288c5c7609fa452782b7acefa19acce742d0204dc17f54d36da46b10f8b590c
    [openssl]=a8c0d28a529ca480f9f36cf5792e2cd21984552a3c8e4aa11a24aa31aeac98e8
    [libnl]=9fe43ccbeeea72c653bdcf8c93332583135cda46a79507bfd0a483bb57f65939
    [pcre2]=c33b418e3b936ee3153de2c61cc638e7e4fe3156022a5c77d0711bcbb9d64f1f
)
for k in "${!sha[@]}"; do
    grep -q "sha256:${sha[$k]}" "$recipe" || { echo "bakery.sh: $k's hash is not in $recipe" >&2; exit 2; }
done

mkdir -p "$work/logs" "$roots" "$(dirname "$log")"
stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }
# What reaches the log names no host: any URL's host becomes <host>.
scrub() { sed -E 's#([a-z]+://)[^/ ]+#\1<host>#g'; }
say() { printf '%s %s\n' "$(stamp)" "$*" | scrub | tee -a "$log"; }
die() { say "FAILED: $*"; exit 1; }

# --- Paused time: a ticker in this process group; a STOP stops it too, and the
# gap in its clock when it resumes is the pause.
paused_file="$work/paused.$$"
echo 0 > "$paused_file"
(
    trap - EXIT
    last=$(date +%s)
    while sleep 2; do
        now=$(date +%s)
        gap=$((now - last))
        if [ "$gap" -gt 10 ]; then
            echo $(( $(cat "$paused_file") + gap - 2 )) > "$paused_file.new" &&
                mv "$paused_file.new" "$paused_file"
        fi
        last=$now
    done
) &
ticker=$!
paused() { cat "$paused_file" 2>/dev/null || echo 0; }

# --- Cleanup: everything this run mounted or registered, also on failure.
mounted=()          # mount points, unmounted in reverse order
binfmt_mounted=0
binfmt_registered=0
store=""
ahead_pid="" ahead_arch=""
kill_tree() {  # kill_tree PID: a process and its descendants, children first
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$c"; done
    kill -KILL "$1" 2>/dev/null || true
}
unmount_under() {  # unmount_under PREFIX: every mount below PREFIX, deepest first
    local m
    awk -v p="$1" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM HUP
    kill "$ticker" 2>/dev/null || true
    [ "$rc" = 0 ] || printf '%s === bakery.sh ended early, exit %s; load: %s\n' "$(stamp)" "$rc" "$(uptime)" >> "$log"
    [ -n "$ahead_pid" ] && kill_tree "$ahead_pid"
    # Processes still running inside one of our roots (a step that timed out).
    for r in "$roots"/*/; do
        r=${r%/}
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/root" 2>/dev/null)" = "$r" ] && kill -KILL "${p#/proc/}" 2>/dev/null
        done
    done
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null || true
    done
    unmount_under "$roots/"
    if [ "$binfmt_registered" = 1 ] && [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64 || true
        echo "$(stamp) unregistered binfmt qemu-aarch64" >> "$log"
    fi
    if [ "$binfmt_mounted" = 1 ]; then umount /proc/sys/fs/binfmt_misc 2>/dev/null || true; fi
    [ -n "$store" ] && rm -rf "$store"
    rm -f "$paused_file" "$paused_file.new" "$work/times.$$"
    rm -f /tmp/bakery.pid
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

mount_root() {  # mount_root ROOT: /proc, /dev, /dev/pts for a chroot
    local r=$1 m
    for m in proc dev dev/pts; do
        mountpoint -q "$r/$m" && continue
        mkdir -p "$r/$m"
        case "$m" in
            proc) mount -t proc proc "$r/proc" ;;
            *) mount --bind "/$m" "$r/$m" ;;
        esac
        mounted+=("$r/$m")
    done
}

setup_binfmt() {
    [ "$binfmt_registered" = 1 ] && return
    [ -x /usr/bin/qemu-aarch64-static ] || die "no /usr/bin/qemu-aarch64-static (apt-get install qemu-user-static)"
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        binfmt_mounted=1
    fi
    if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        say "binfmt qemu-aarch64 already registered: $(grep -E '^(interpreter|flags)' /proc/sys/fs/binfmt_misc/qemu-aarch64 | tr '\n' ' ')"
        return
    fi
    # The kernel parses the \x escapes itself. F: the interpreter is opened now,
    # so it need not exist inside the root.
    printf '%s\n' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
        > /proc/sys/fs/binfmt_misc/register
    binfmt_registered=1
    say "registered binfmt qemu-aarch64 (flags F), to be unregistered at exit"
}

# Debian's archive, as this machine's apt configuration names it (read now, never
# written down).
mirror() {
    local m
    m=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $3 ~ /^bookworm/ { print $2; exit }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    [ -n "$m" ] || die "no Debian mirror in /etc/apt/sources.list*"
    echo "$m"
}

in_root() {  # in_root ROOT TIMEOUT CMD...: run in the chroot, clean environment
    local r=$1 t=$2; shift 2
    # --foreground: timeout stays in this process group, so STOP/CONT reach it all.
    timeout --foreground -k 30 "$t" chroot "$r" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# --- Timing. cpu_now: user+sys seconds of this shell's finished children.
cpu=0
cpu_now() {  # sets $cpu: called in this shell, not in $(...), whose children are not ours
    local t
    times > "$work/times.$$"
    t=$(tail -n 1 "$work/times.$$")  # "XmY.YYYs XmY.YYYs" of the children
    cpu=$(awk -v t="$t" 'BEGIN { n = split(t, a, /[ ms]+/); s = 0
        for (i = 1; i + 1 <= n; i += 2) s += a[i] * 60 + a[i + 1]; printf "%.1f", s }')
}
declare -A result
timed() {  # timed KEY LOGFILE CMD...: run, record wall/cpu/paused seconds
    local key=$1 out=$2; shift 2
    local t0 c0 p0 rc=0 t1 c1 p1 wall
    t0=$(date +%s.%N); cpu_now; c0=$cpu; p0=$(paused)
    "$@" >"$out" 2>&1 || rc=$?
    t1=$(date +%s.%N); cpu_now; c1=$cpu; p1=$(paused)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    result[$key]=$wall
    say "$(printf 'TIME %-24s wall %8ss  cpu %8ss  paused %5ss  rc %s  (%s)' \
        "$key" "$wall" "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.1f", b - a }')" \
        "$((p1 - p0))" "$rc" "$out")"
    if [ "$rc" != 0 ]; then
        tail -n 30 "$out" | scrub | sed 's/^/    | /' | tee -a "$log"
        return "$rc"
    fi
}

# --- Roots: created once, cached; the creation timed as "setup".
create_root() {  # create_root DEBARCH
    local da=$1 r="$roots/$suite-$1" m
    m=$(mirror)
    rm -rf "$r.tmp"
    mkdir -p "$r.tmp"
    if [ "$da" = amd64 ]; then
        timeout --foreground -k 30 3600 debootstrap --variant=minbase --arch=amd64 "$suite" "$r.tmp" "$m"
    else
        timeout --foreground -k 30 3600 debootstrap --variant=minbase --arch=arm64 --foreign "$suite" "$r.tmp" "$m"
        cp /usr/bin/qemu-aarch64-static "$r.tmp/usr/bin/"
        in_root "$r.tmp" 14400 /debootstrap/debootstrap --second-stage
    fi
    cp /etc/resolv.conf "$r.tmp/etc/resolv.conf"
    mount_root "$r.tmp"
    in_root "$r.tmp" 3600 apt-get update
    # shellcheck disable=SC2086  # the package list splits on purpose
    in_root "$r.tmp" 14400 apt-get install -y --no-install-recommends $packages
    in_root "$r.tmp" 600 apt-get clean
    in_root "$r.tmp" 60 gcc --version | head -n 1 > "$r.tmp/.bakery-gcc"
    # Unmount before the rename (the mount points move with it otherwise).
    unmount_under "$r.tmp/"
    echo "$suite $da $packages" > "$r.tmp/.bakery-ready"
    mv "$r.tmp" "$r"
}

ensure_root() {  # ensure_root ARCH
    local da r
    case "$1" in x86-64) da=amd64 ;; arm64) da=arm64 ;; esac
    r="$roots/$suite-$da"
    if [ -n "$ahead_pid" ] && [ "$1" = "$ahead_arch" ]; then
        say "waiting for the $da root, created in the background (every command in it is bounded)"
        wait "$ahead_pid" || true
        ahead_pid=""
    fi
    if [ -f "$r/.bakery-ready" ]; then
        say "root $r: cached ($(cat "$r/.bakery-gcc" 2>/dev/null))"
    else
        timed "setup/$suite-$da" "$work/logs/setup-$suite-$da.log" create_root "$da" ||
            die "creating the $da root (log: $work/logs/setup-$suite-$da.log)"
    fi
    mount_root "$r"
}

# --- One dependency or keepalived, in the root, in its own fresh directory.
# The scripts are the recipe's, with $HOST, $JOBS, $out and the toolchain's env
# (CC=cc CFLAGS=-O2 LDFLAGS=-static) set as bake sets them.
step_script() {  # step_script NAME
    case "$1" in
        openssl) cat <<'EOF'
case "$HOST" in
    x86_64-*) target=linux-x86_64 ;;
    aarch64-*) target=linux-aarch64 ;;
    *) echo "no OpenSSL target for $HOST" >&2; exit 1 ;;
esac
./Configure "$target" no-shared no-async no-tests no-docs no-apps no-module \
    --prefix=/ --libdir=lib --openssldir=/etc/ssl $CFLAGS
make -j"$JOBS" build_libs >/dev/null
make DESTDIR="$out" install_dev >/dev/null
rm -rf "$out/lib/pkgconfig" "$out/lib/cmake"
EOF
        ;;
        libnl) cat <<'EOF'
sed -i 's/_NL_STATIC_ASSERT (__ICMP6_MIB_MAX == 6);//' lib/route/link/inet6.c
./configure --host="$HOST" --prefix=/ --disable-shared --enable-static --disable-cli \
    --disable-debug || { tail -n 40 config.log >&2; exit 1; }
make -j"$JOBS"
make DESTDIR="$out" install
rm -rf "$out/share" "$out/etc" "$out/lib/"*.la
EOF
        ;;
        pcre2) cat <<'EOF'
./configure --host="$HOST" --prefix=/ --disable-shared --enable-static ||
    { tail -n 40 config.log >&2; exit 1; }
make -j"$JOBS" libpcre2-8.la
make DESTDIR="$out" install-libLTLIBRARIES install-nodist_includeHEADERS install-pkgconfigDATA
rm -f "$out/lib/"*.la
EOF
        ;;
        keepalived) cat <<'EOF'
if [ -f ../patches/keepalived-2.3.3-smtp-check-loop.patch ]; then
    patch -p1 --forward --batch --no-backup-if-mismatch -i ../patches/keepalived-2.3.3-smtp-check-loop.patch
fi
deps="$PWD/.deps"
mkdir -p "$deps"
for d in "$openssl" "$libnl" "$pcre2"; do cp -R "$d/." "$deps/"; chmod -R u+w "$deps"; done
export PKG_CONFIG_LIBDIR="$deps/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$deps" PKG_CONFIG_PATH=
./configure --host="$HOST" --prefix=/usr --sysconfdir=/etc \
    --with-iproute-etc-dir=/etc/iproute2 --with-iproute-usr-dir=/usr/share/iproute2 \
    --disable-dynamic-linking --enable-bfd --enable-json --enable-regex \
    --with-init=systemd --with-systemdsystemunitdir=/usr/lib/systemd/system \
    --enable-vrrp --enable-libnl \
    CPPFLAGS="-I$deps/include -I$deps/include/libnl3" \
    LDFLAGS="-static -s -L$deps/lib" ||
    { tail -n 40 config.log >&2; exit 1; }
make -j"$JOBS"
make DESTDIR="$out" install
mkdir -p "$out/usr/bin"
mv "$out/usr/sbin/keepalived" "$out/usr/bin/keepalived"
rmdir "$out/usr/sbin"
rm -rf "$out/usr/share" "$out/etc" "$out/usr/lib" "$out/usr/bin/genhash"
EOF
        ;;
    esac
}

build_step() {  # build_step ROOT BUILDDIR(in root) HOST NAME TARBALL TIMEOUT
    local r=$1 b=$2 host=$3 name=$4 tarball=$5 t=$6
    step_script "$name" > "$r$b/$name.sh"
    # shellcheck disable=SC2016  # expanded by the shell in the root
    in_root "$r" "$t" B="$b" NAME="$name" TARBALL="$tarball" HOST="$host" JOBS=2 \
        CC=cc CXX=c++ AR=ar RANLIB=ranlib STRIP=strip CFLAGS=-O2 LDFLAGS=-static \
        /bin/bash -euo pipefail -c '
        cd "$B"
        mkdir "src-$NAME" "out/$NAME"
        tar -xzf "sources/$TARBALL" -C "src-$NAME" --strip-components=1
        cd "src-$NAME"
        out="$B/out/$NAME" openssl="$B/out/openssl" libnl="$B/out/libnl" pcre2="$B/out/pcre2" \
            exec bash -euo pipefail "$B/$NAME.sh"
    '
}

fetch_sources() {  # fetch_sources STORE DEST: the whole recipe's sources, anew
    local s=$1 dest=$2 k f
    timeout --foreground -k 30 1800 "$BAKE" fetch "$recipe" --cache "$s"
    mkdir -p "$dest"
    for k in "${!sha[@]}"; do
        f="$s/sources/sha256-${sha[$k]}"
        [ -f "$f" ] || { echo "no $k in the store ($f)" >&2; return 1; }
        echo "${sha[$k]}  $f" | sha256sum -c --quiet -
        cp "$f" "$dest/$k.tar.gz"
    done
}

make_image() {  # make_image OUTDIR VERSION ARCH RAW
    local o=$1 v=$2 a=$3 raw=$4 img
    img=$(dirname "$raw")/img-$v-$a
    rm -rf "$img"
    mkdir -p "$img/usr/lib/extension-release.d"
    cp -R "$o/keepalived/." "$img/"
    cp -R "$repo/recipes/files/keepalived/." "$img/"
    printf 'ID=_any\nARCHITECTURE=%s\nEXTENSION_RELOAD_MANAGER=1\nVERSION_ID=%s\n' "$a" "$v" \
        > "$img/usr/lib/extension-release.d/extension-release.keepalived"
    if command -v mksquashfs >/dev/null; then
        rm -f "$raw"
        mksquashfs "$img" "$raw" -all-root -noappend -quiet -no-progress
        ls -l "$raw"
    else
        echo "no mksquashfs: image directory only ($img)"
    fi
    file "$img/usr/bin/keepalived"
}

build_one() {  # build_one VERSION ARCH
    local v=$1 a=$2 da host r b key t total0 total1
    case "$a" in
        x86-64) da=amd64 host=x86_64-linux-gnu t=$step_timeout ;;
        arm64) da=arm64 host=aarch64-linux-gnu t=$((step_timeout * 12)) ;;
    esac
    r="$roots/$suite-$da"
    b="/build/keepalived-$v-$a"
    key="$v/$a"
    say "BUILD $key start; load: $(uptime)"
    total0=$(date +%s.%N)
    local p0; p0=$(paused)
    rm -rf "${r:?}$b"
    mkdir -p "$r$b/out" "$r$b/patches"
    [ "$v" = 2.3.3 ] && cp "$patchfile" "$r$b/patches/"
    store=$(mktemp -d "$work/store.XXXXXX")
    timed "$key/fetch" "$work/logs/$v-$a-fetch.log" fetch_sources "$store" "$r$b/sources" || die "$key fetch"
    rm -rf "$store"; store=""
    local dep tarball
    # The small ones first: under emulation, where a whole build may not fit in
    # the time one has, they finish and give the slowdown (they do not depend on
    # each other, so the order changes nothing else).
    for dep in pcre2 libnl openssl keepalived; do
        tarball="$dep.tar.gz"
        [ "$dep" = keepalived ] && tarball="keepalived-$v.tar.gz"
        timed "$key/$dep" "$work/logs/$v-$a-$dep.log" build_step "$r" "$b" "$host" "$dep" "$tarball" "$t" ||
            die "$key $dep (log: $work/logs/$v-$a-$dep.log)"
    done
    timed "$key/image" "$work/logs/$v-$a-image.log" make_image "$r$b/out" "$v" "$a" "$work/keepalived-$v-$a.raw" ||
        die "$key image"
    sed 's/^/    /' "$work/logs/$v-$a-image.log" | tee -a "$log"
    total1=$(date +%s.%N)
    result[$key/total]=$(awk -v a="$total0" -v b="$total1" 'BEGIN { printf "%.1f", b - a }')
    say "$(printf 'TIME %-24s wall %8ss  paused %5ss' "$key/total" "${result[$key/total]}" "$(( $(paused) - p0 ))")"
    say "BUILD $key end; load: $(uptime)"
    # The bakery keeps no build tree.
    rm -rf "${r:?}$b"
}

say "=== bakery.sh start: archs=$archs versions=$versions pid=$$ nice=$(nice) $(ionice -p $$); load: $(uptime)"
say "host: $(uname -srm), $(nproc) cores; bake: $("$BAKE" --version 2>/dev/null || echo "$BAKE")"
run0=$(date +%s.%N)
# Each arch's root just before its builds, so that creating one does not share
# the cores with another arch's builds.
for a in "${arch_list[@]}"; do
    [ "$a" = arm64 ] && setup_binfmt
    ensure_root "$a"
    [ "$setup_only" = 1 ] && continue
    # --setup-ahead: the next arch's root, if missing, in the background (its
    # mounts are its own and it unmounts them; the EXIT trap kills and unmounts
    # whatever is left). Same process group: a STOP pauses it too.
    if [ "$setup_ahead" = 1 ] && [ -z "$ahead_pid" ]; then
        for n in "${arch_list[@]}"; do
            [ "$n" = "$a" ] && continue
            case "$n" in x86-64) nd=amd64 ;; arm64) nd=arm64 ;; esac
            [ -f "$roots/$suite-$nd/.bakery-ready" ] && continue
            [ "$n" = arm64 ] && setup_binfmt
            say "creating the $nd root in the background (--setup-ahead), while $a builds"
            ( trap 'unmount_under "$roots/$suite-$nd.tmp/"' EXIT
              timed "setup/$suite-$nd" "$work/logs/setup-$suite-$nd.log" create_root "$nd" ) &
            ahead_pid=$! ahead_arch=$n
            break
        done
    fi
    for v in "${version_list[@]}"; do
        build_one "$v" "$a"
    done
done
if [ "$setup_only" = 1 ]; then say "=== setup only: done"; exit 0; fi
run1=$(date +%s.%N)
say "$(printf 'TIME %-24s wall %8ss  paused %5ss' "all" "$(awk -v a="$run0" -v b="$run1" 'BEGIN { printf "%.1f", b - a }')" "$(paused)")"
say "=== bakery.sh end; load: $(uptime)"
