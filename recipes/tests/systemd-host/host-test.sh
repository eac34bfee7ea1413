#!/bin/bash
# host-test.sh: the keepalived sysext image on a real systemd host (a Debian root
# booted by systemd-nspawn, systemd as PID 1), installed as the published Butane
# snippet installs it, and kept up to date by systemd-sysupdate.
#
#   host-test.sh [--host-reload] ROOT.tar RELEASE_DIR SYSUPDATE_DIR
#
# ROOT.tar       a Debian root from make-root.sh (unpacked here; never modified)
# RELEASE_DIR    bake's release directory of keepalived (images, transfer file)
# SYSUPDATE_DIR  systemd-sysupdate and systemd-pull (usr/lib/bake-sysupdate)
# --host-reload  systemd < 255: the host configuration the README asks for, a unit
#                that runs `systemctl daemon-reload` after systemd-sysext.service
#
# The container merges its images itself, as a host does: it gets the host's
# /dev/loop-control and the free loop device nodes. systemd-sysext removes the loop
# device it used when it lets go of it (LOOP_CTL_REMOVE), so the harness puts back
# every host loop device that went missing once the container is gone.
# Loop devices are one pool for the whole host: a container whose free device is
# taken by another container or host process between LOOP_CTL_GET_FREE and its
# attach fails its merge ("Failed to read metadata for image keepalived: Device or
# resource busy"), and one whose device is freed by another while it boots may
# be handed a device it has no node for. So whatever attaches, detaches, adds or
# removes loop devices here holds /run/lock/bake-loop-devices.lock (flock): a boot
# from choosing the free devices until it, and with it the merge, is done; an
# unmerge; a shutdown with the clean-up of its devices. Other users of loop
# devices take it too (`flock /run/lock/bake-loop-devices.lock CMD`), as bake's
# own tests do around systemd-sysext and systemd-dissect.
#
# Assertions, each with a bounded wait; every one prints PASS or FAIL:
#   boot; extension merged at boot; keepalived active within 10 s; stays up without
#   a configuration; VRRP configuration (veth pair in the container, 10.200.0.0/24)
#   brings the VIP up; systemctl reload applies a change (with kill(1) hidden too);
#   kill -9 of the main process: service and VIP back within 10 s, no "Failed to
#   parse PID"; systemd-analyze verify keepalived.service clean; unmerge leaves
#   nothing behind; then the update path: systemd-sysupdate installs the older
#   image from the release served on the container's loopback, a newer image
#   published is found and installed, the Butane drop-in's commands ask for a
#   reboot, and after it the host runs the new keepalived.
# Exit status 0 when everything passed.
set -u
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin

hostreload=0
if [ "${1:-}" = --host-reload ]; then hostreload=1; shift; fi
[ $# -eq 3 ] || { echo "usage: $0 [--host-reload] ROOT.tar RELEASE_DIR SYSUPDATE_DIR" >&2; exit 2; }
root_tar=$(realpath "$1") release=$(realpath "$2") sysupdate=$(realpath "$3")
[ "$(id -u)" = 0 ] || { echo "$0: must run as root (declare the test privileged)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/host-test.XXXXXX")
root=$work/root
VIP=10.200.0.100 VIP2=10.200.0.101
pass=0 fail=0
nspawn_pid= leader= name= http_pid= loops_before=
loop_lock=/run/lock/bake-loop-devices.lock
mkdir -p /run/lock && exec 9>>"$loop_lock" || { echo "$0: cannot open $loop_lock" >&2; exit 2; }

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
log() { printf '%s\n' "$*"; }
ok() { pass=$((pass+1)); log "PASS  $*"; }
bad() { fail=$((fail+1)); log "FAIL  $*"; }
info() { log "info  $*"; }
# What the host says when keepalived is not up: its failed units, keepalived's last lines.
why_not_up() {
    printf 'failed units: %s; keepalived: %s' \
        "$(c systemctl --no-pager --plain --no-legend --failed 2>&1 | head -n 5 | tr '\n' ' ')" \
        "$(c journalctl --no-pager -q -u keepalived -n 5 2>&1 | tr '\n' ' ')"
}
c() { nsenter -t "$leader" -a "$@"; }
csh() { nsenter -t "$leader" -a /bin/sh -c "$1"; }
wait_for() { # SECONDS CMD...: poll every 0.1 s
    local end=$(( $(date +%s%N) + ${1%.*} * 1000000000 )); shift
    while :; do
        "$@" >/dev/null 2>&1 && return 0
        [ "$(date +%s%N)" -ge "$end" ] && return 1
        sleep 0.1
    done
}
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
gone() { ! kill -0 "$1" 2>/dev/null; }
active() { c systemctl is-active -q keepalived.service; }
mainpid() { c systemctl show -P MainPID keepalived.service 2>/dev/null; }
has_vip() { c ip -4 -o addr show dev ka0 2>/dev/null | grep -q " $1/"; }
kproc() { csh 'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = keepalived ] && echo ${p#/proc/}; done'; }
# Where the Butane snippet and systemd-sysupdate put VERSION's image.
installed() { echo "/opt/extensions/keepalived/keepalived-v$1-x86-64.raw"; } # VERSION

# loop_ctl add|remove N...: LOOP_CTL_ADD or LOOP_CTL_REMOVE each index.
loop_ctl() {
    python3 - "$@" <<'PY'
import fcntl, os, sys
request = {"add": 0x4C80, "remove": 0x4C81}[sys.argv[1]]
fd = os.open("/dev/loop-control", os.O_RDWR)
for n in sys.argv[2:]:
    try:
        fcntl.ioctl(fd, request, int(n))
    except OSError:
        pass
PY
}
loop_nodes() { ls /dev/ | sed -n 's/^loop\([0-9][0-9]*\)$/\1/p' | sort -n; }
free_loops() { # the loop devices no file is attached to
    local n
    for n in $(loop_nodes); do [ -e "/sys/block/loop$n/loop/backing_file" ] || echo "$n"; done
}
restore_loops() { # puts back host loop devices the container removed
    local n missing=
    for n in $loops_before; do [ -e "/dev/loop$n" ] || missing="$missing $n"; done
    if [ -n "$missing" ]; then
        loop_ctl add $missing
        info "put back host loop devices removed by the container's systemd-sysext:$missing"
    fi
}
loops_at_start=$(loop_nodes | tr '\n' ' ')
unmake_loops() { # removes the free loop devices this script made: the host ends as it began
    local n extra=
    for n in $(free_loops); do
        case " $loops_at_start " in *" $n "*) ;; *) extra="$extra $n" ;; esac
    done
    [ -n "$extra" ] && loop_ctl remove $extra
}

# lock_loops WHAT: takes the host's loop devices (bounded wait); unlock_loops gives them back.
lock_loops() {
    local t0 w; t0=$(now)
    if ! flock -w 300 9; then
        bad "$1: $loop_lock still held after 300 s by another user of loop devices"
        return 1
    fi
    w=$(since "$t0")
    case $w in 0.0*) ;; *) info "$1: waited $w s for $loop_lock" ;; esac
}
unlock_loops() { flock -u 9; }

stop_container() {
    [ -n "$http_pid" ] && { kill "$http_pid" 2>/dev/null; wait "$http_pid" 2>/dev/null; http_pid=; }
    # Clean up even when the lock cannot be had: a FAIL is recorded then.
    [ -n "$nspawn_pid" ] && lock_loops "stopping $name"
    if alive "$nspawn_pid"; then
        alive "$leader" && c systemctl poweroff >/dev/null 2>&1
        wait_for 30 gone "$nspawn_pid" || { kill -KILL "$nspawn_pid" 2>/dev/null; wait_for 10 gone "$nspawn_pid"; }
    fi
    alive "$leader" && { kill -KILL "$leader" 2>/dev/null; wait_for 10 gone "$leader"; }
    [ -n "$nspawn_pid" ] && wait "$nspawn_pid" 2>/dev/null
    local l
    for l in $(losetup -a | grep "$work/" | cut -d: -f1); do losetup -d "$l" 2>/dev/null; done
    restore_loops
    rm -rf "/run/systemd/nspawn/propagate/$name" "/run/systemd/nspawn/unix-export/$name" 2>/dev/null
    [ -n "$nspawn_pid" ] && unlock_loops
    nspawn_pid= leader=
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_container
    lock_loops cleanup
    loops_before=$loops_at_start restore_loops
    unmake_loops
    unlock_loops
    local left=
    grep -q " $work/" /proc/mounts && left="$left mounts"
    losetup -a | grep -q "$work/" && left="$left loop-devices"
    if [ -n "$left" ]; then log "LEFT $left"; rc=1; else rm -rf "$work"; fi
    [ "$rc" = 0 ] && [ "$fail" -gt 0 ] && rc=1
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 2' INT TERM

# boot NAME UPPER: boots ROOT with UPPER as its overlay's upper directory.
boot() {
    name=$1
    local upper=$2 binds=--bind=/dev/loop-control n last
    local d=$work/$name
    mkdir -p "$d/ovl" "$d/merged" "$upper"
    lock_loops "$name" || return 1
    # At least two free loop devices, each node given to the container.
    if [ "$(free_loops | wc -l)" -lt 2 ]; then
        last=$(loop_nodes | tail -n 1)
        loop_ctl add $((${last:--1} + 1)) $((${last:--1} + 2))
    fi
    loops_before=$(loop_nodes | tr '\n' ' ')
    for n in $(free_loops); do binds="$binds --bind=/dev/loop$n"; done
    cat > "$d/launch.sh" <<LAUNCH
#!/bin/sh
set -e
mount -t overlay overlay -o lowerdir=$root,upperdir=$upper,workdir=$d/ovl $d/merged
# The unified cgroup hierarchy (cgroup v2), as Debian 12 and 13 boot with: on this
# machine's hybrid hierarchy systemd 257 noticed a unit's empty cgroup only up to 5 s
# late, and that, not keepalived, was what made a restart after kill -9 slow.
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
exec systemd-nspawn -D $d/merged --boot --register=no --keep-unit --private-network \\
    --console=read-only --machine=$name $binds
LAUNCH
    local t0; t0=$(now)
    setsid unshare -m --propagation private sh "$d/launch.sh" > "$d/console.log" 2>&1 < /dev/null 9>&- &
    nspawn_pid=$!
    find_leader() {
        local p
        for p in /proc/[0-9]*; do
            [ "$(cut -d' ' -f4 "$p/stat" 2>/dev/null)" = "$nspawn_pid" ] || continue
            [ "$(cat "$p/comm" 2>/dev/null)" = systemd ] && { leader=${p#/proc/}; return 0; }
        done
        return 1
    }
    started() { find_leader || gone "$nspawn_pid"; } # or systemd-nspawn gave up
    wait_for 20 started
    if ! find_leader; then
        unlock_loops
        if gone "$nspawn_pid"; then
            bad "$name: systemd-nspawn exited before the container's PID 1 started"
        else
            bad "$name: no container PID 1 after 20 s"
        fi
        tail -n 20 "$d/console.log"; return 1
    fi
    booted() { case "$(c systemctl is-system-running 2>/dev/null)" in running|degraded) return 0;; esac; return 1; }
    wait_for 60 booted; local up=$?
    unlock_loops
    if [ $up = 0 ]; then
        ok "$name: booted, $(c systemctl is-system-running) after $(since "$t0") s ($(c systemctl --version | head -n 1))"
    else
        bad "$name: not running 60 s after the start ($(c systemctl is-system-running 2>&1))"
        tail -n 30 "$d/console.log"
        return 1
    fi
}

image_of() { # VERSION: the x86-64 image of that version in the release
    echo "$release/keepalived-v$1-x86-64.raw"
}

# ---------------------------------------------------------------- the root
mkdir -p "$root"
tar -xf "$root_tar" -C "$root" || { bad "cannot unpack $root_tar"; exit 1; }
newest=$(ls "$release"/keepalived-v*-x86-64.raw | sed 's/.*keepalived-v\(.*\)-x86-64.raw/\1/' | sort -V | tail -n 1)
oldest=$(ls "$release"/keepalived-v*-x86-64.raw | sed 's/.*keepalived-v\(.*\)-x86-64.raw/\1/' | sort -V | head -n 1)
[ "$newest" != "$oldest" ] || { bad "the release needs two versions for the update path"; exit 1; }
info "root $(. "$root/usr/lib/os-release"; echo "$PRETTY_NAME"), images $oldest and $newest"

# What the Butane snippet installs, plus what the README asks of hosts before 255.
butane_layout() { # UPPER [VERSION]
    local up=$1 v=${2:-}
    mkdir -p "$up/opt/extensions/keepalived" "$up/etc/extensions"
    if [ -n "$v" ]; then
        cp "$(image_of "$v")" "$up$(installed "$v")"
        ln -sfn "$(installed "$v")" "$up/etc/extensions/keepalived.raw"
    fi
    if [ "$hostreload" = 1 ]; then
        mkdir -p "$up/etc/systemd/system/sysinit.target.wants"
        cat > "$up/etc/systemd/system/sysext-reload.service" <<'UNIT'
[Unit]
Description=Reload the service manager after merging system extensions
DefaultDependencies=no
BindsTo=systemd-sysext.service
After=systemd-sysext.service
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=systemctl daemon-reload

[Install]
WantedBy=sysinit.target
UNIT
        ln -sfn ../sysext-reload.service "$up/etc/systemd/system/sysinit.target.wants/sysext-reload.service"
    fi
}

# ================================================================ the service
upper=$work/upper-a
butane_layout "$upper" "$newest"
boot host-a "$upper" || exit 1
sysver=$(c systemctl --version | awk 'NR==1{print $2}')

if c systemd-sysext status 2>/dev/null | grep -q '^/usr .*keepalived' && c test -x /usr/bin/keepalived; then
    ok "extension merged at boot"
else
    bad "extension not merged at boot"; c systemctl status systemd-sysext --no-pager -l
fi
t0=$(now)
if wait_for 10 active; then
    ok "keepalived active $(since "$t0") s after the boot completed"
else
    bad "keepalived not active within 10 s ($(c systemctl is-active keepalived 2>&1))"
    c systemctl start keepalived
fi
pid0=$(mainpid)
sleep 5
if active && [ "$(mainpid)" = "$pid0" ] && [ "$(c systemctl show -P NRestarts keepalived)" = 0 ] &&
    c test -e /etc/keepalived/keepalived.conf; then
    ok "stays up without a configuration (MainPID $pid0 for 5 s, no restart)"
else
    bad "without a configuration: $(c systemctl is-active keepalived), MainPID $pid0 -> $(mainpid)"
fi

csh 'ip link add ka0 type veth peer name ka1 && ip addr add 10.200.0.1/24 dev ka0 &&
     ip link set ka0 up && ip link set ka1 up' || bad "veth pair"
write_conf() { # VIP...
    {
        printf 'global_defs {\n    router_id host-test\n}\n'
        printf 'vrrp_instance VI_1 {\n    state MASTER\n    interface ka0\n    virtual_router_id 51\n'
        printf '    priority 150\n    advert_int 1\n    virtual_ipaddress {\n'
        for v in "$@"; do printf '        %s/24\n' "$v"; done
        printf '    }\n}\n'
    } | c sh -c 'cat > /etc/keepalived/keepalived.conf'
}
write_conf "$VIP"
pid0=$(mainpid)
t0=$(now)
if c systemctl reload keepalived && wait_for 10 has_vip "$VIP"; then
    ok "a VRRP configuration brings the VIP up ($(since "$t0") s after the reload)"
else
    bad "VIP $VIP not up 10 s after the reload"; c journalctl -u keepalived -n 30 --no-pager
fi
write_conf "$VIP" "$VIP2"
t0=$(now)
if c systemctl reload keepalived && wait_for 10 has_vip "$VIP2" && [ "$(mainpid)" = "$pid0" ] && active; then
    ok "systemctl reload applies a change (same MainPID, $(since "$t0") s)"
else
    bad "reload: $(c systemctl is-active keepalived), second VIP $(has_vip $VIP2 && echo up || echo missing)"
fi
hidden=
c test -e /usr/bin/kill && c mount --bind /dev/null /usr/bin/kill && hidden=/usr/bin/kill
write_conf "$VIP"
if c systemctl reload keepalived && wait_for 10 sh -c "! nsenter -t $leader -a ip -4 -o addr show dev ka0 | grep -q ' $VIP2/'" && active; then
    ok "reload needs no kill(1) (procps)${hidden:+, $hidden hidden}"
else
    bad "reload with kill(1) hidden"; c journalctl -u keepalived -n 10 --no-pager
fi
[ -n "$hidden" ] && c umount "$hidden"

wait_for 10 has_vip "$VIP"
pid0=$(mainpid)
t0=$(now)
[ "${pid0:-0}" -gt 1 ] && csh "kill -KILL $pid0"
recovered= states= last_state=
# Waits past the 10 s it may take, up to systemd's 90 s stop timeout, so that a
# failure says how long the outage really was and what the unit went through.
end=$(( $(date +%s%N) + 100000000000 ))
while [ "$(date +%s%N)" -lt "$end" ]; do
    p=$(mainpid)
    if [ -n "$p" ] && [ "$p" != 0 ] && [ "$p" != "$pid0" ] && active && has_vip "$VIP"; then
        recovered=$(since "$t0"); break
    fi
    st="$(c systemctl show -P ActiveState keepalived)/$(c systemctl show -P SubState keepalived)"
    [ "$st" = "$last_state" ] || { states="$states $st@$(since "$t0")s"; last_state=$st; }
    sleep 0.1
done
if [ -n "$recovered" ] && python3 -c "import sys; sys.exit(0 if float('$recovered') <= 10 else 1)"; then
    ok "kill -9 of the main process: service and VIP back after $recovered s"
else
    bad "kill -9 of the main process: not back within 10 s (back after ${recovered:-more than 100} s; states:$states; processes: $(kproc | tr '\n' ' '))"
    c systemctl status keepalived --no-pager -n 0
    c journalctl -u keepalived --since "-2min" --no-pager -o short-precise
fi
if c journalctl -u keepalived --no-pager | grep -q 'Failed to parse PID'; then
    bad "the journal has 'Failed to parse PID from file'"
else
    ok "no pid-file race in the journal"
fi
out=$(c systemd-analyze verify keepalived.service 2>&1); rc=$?
if [ $rc = 0 ] && [ -z "$out" ]; then
    ok "systemd-analyze verify keepalived.service is clean"
else
    bad "systemd-analyze verify (exit $rc): $out"
fi
# While merged, Upholds= restarts a stopped keepalived: unmerge, reload, stop.
lock_loops unmerge
c systemd-sysext unmerge >/dev/null 2>&1 || bad "systemd-sysext unmerge failed"
unlock_loops
c systemctl daemon-reload
c systemctl stop keepalived.service 2>/dev/null
wait_for 10 sh -c "[ -z \"\$(nsenter -t $leader -a /bin/sh -c 'for p in /proc/[0-9]*; do [ \"\$(cat \$p/comm 2>/dev/null)\" = keepalived ] && echo \$p; done')\" ]"
left=
c test -e /usr/bin/keepalived && left="$left /usr/bin/keepalived"
c test -e /usr/lib/systemd/system/keepalived.service && left="$left unit"
c test -e /usr/lib/extension-release.d/extension-release.keepalived && left="$left extension-release"
[ -n "$(kproc)" ] && left="$left processes"
[ -n "$(c systemctl show -P Upholds multi-user.target)" ] && left="$left Upholds="
has_vip "$VIP" && left="$left VIP"
for f in /run/keepalived.pid /run/vrrp.pid /run/checkers.pid; do c test -e "$f" && left="$left $f"; done
[ -z "$left" ] && ok "unmerge (then daemon-reload, stop) leaves nothing behind" || bad "after unmerge:$left"
stop_container

# ================================================================ the update path
# The release as a web server on the container's loopback serves it.
served=$work/served
publish() { # VERSION...: the release holds exactly these images
    rm -rf "$served"; mkdir -p "$served"
    for v in "$@"; do cp "$(image_of "$v")" "$served/"; done
    (cd "$served" && sha256sum -- *.raw > SHA256SUMS)
}
serve() {
    http_pid=
    nsenter -t "$leader" -n python3 -m http.server --bind 127.0.0.1 --directory "$served" 8080 \
        > "$work/http.log" 2>&1 &
    http_pid=$!
    wait_for 10 nsenter -t "$leader" -n python3 -c 'import socket; socket.create_connection(("127.0.0.1", 8080), 1)' ||
        bad "the release is not served"
}
# systemd-sysupdate as the snippet installs its configuration: the transfer file of
# the release, with the test's address (and Verify= as given).
sysupdate_layout() { # UPPER VERIFY
    butane_layout "$1"
    mkdir -p "$1/usr/lib/bake-sysupdate" "$1/etc/sysupdate.keepalived.d" "$1/etc/sysupdate.d" "$1/etc/systemd"
    cp -a "$sysupdate/." "$1/usr/lib/bake-sysupdate/"
    sed -e 's|^Path=http.*|Path=http://127.0.0.1:8080/|' -e "s|^Verify=.*|Verify=$2|" "$release/keepalived.transfer" \
        > "$1/etc/sysupdate.keepalived.d/keepalived.transfer"
    cp "$release/noop.conf" "$1/etc/sysupdate.d/noop.conf"
}
upper=$work/upper-b
sysupdate_layout "$upper" false
sud() { c /usr/lib/bake-sysupdate/systemd-sysupdate --no-pager -C keepalived "$@"; }
current() { c readlink -f /etc/extensions/keepalived.raw 2>/dev/null; }

publish "$oldest"
boot host-b "$upper" || exit 1
serve
if sud update > "$work/update1.log" 2>&1 && [ "$(current)" = "$(installed "$oldest")" ]; then
    ok "systemd-sysupdate installs $oldest from the release (link $(c readlink /etc/extensions/keepalived.raw))"
else
    bad "first update: $(cat "$work/update1.log")"
fi
stop_container

# The reboot: the host merges what the link points to now.
reboot_into() { boot "$1" "$upper"; }
reboot_into host-c || exit 1
serve
if wait_for 10 active && c /usr/bin/keepalived --version 2>&1 | grep -q "v$oldest"; then
    ok "after the reboot the host runs keepalived $oldest"
else
    bad "keepalived $oldest not running after the reboot ($(why_not_up))"
fi
publish "$oldest" "$newest"
if [ "$(sud check-new 2>/dev/null | grep -c "$newest")" -ge 1 ]; then
    ok "systemd-sysupdate check-new finds $newest"
else
    bad "check-new does not list $newest"
fi
# The Butane drop-in of systemd-sysupdate.service, its commands as they are.
csh "readlink --canonicalize /etc/extensions/keepalived.raw > /run/keepalived"
sud update > "$work/update2.log" 2>&1 || bad "update: $(cat "$work/update2.log")"
csh "readlink --canonicalize /etc/extensions/keepalived.raw > /run/keepalived-new"
csh "if ! cmp --silent /run/keepalived /run/keepalived-new; then touch /run/reboot-required; fi"
if c test -e /run/reboot-required && [ "$(current)" = "$(installed "$newest")" ] &&
    c test -e "$(installed "$oldest")"; then
    ok "update to $newest: link moved, $oldest kept, the drop-in asks for a reboot"
else
    bad "update to $newest: link $(current), reboot-required $(c test -e /run/reboot-required && echo yes || echo no)"
fi
stop_container
reboot_into host-d || exit 1
if wait_for 10 active && c /usr/bin/keepalived --version 2>&1 | grep -q "v$newest"; then
    ok "after the reboot the host runs keepalived $newest"
else
    bad "keepalived $newest not running after the reboot ($(c /usr/bin/keepalived --version 2>&1 | head -n 1); $(why_not_up))"
fi
stop_container

# ================================================================ a signed release
# As `bake release --sign-key` publishes it: SHA256SUMS.gpg, Verify=true, and the
# public key (binary) installed at /etc/systemd/import-pubring.gpg, where
# systemd-pull's gpg reads it. A throwaway key, in a home of the test's.
export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key "bake host test <host-test@invalid>" ed25519 sign never 2>/dev/null ||
    bad "cannot make a signing key"
sign_release() { (cd "$served" && gpg --batch --quiet --yes --detach-sign --output SHA256SUMS.gpg SHA256SUMS); }
upper=$work/upper-e
sysupdate_layout "$upper" true
gpg --batch --export > "$upper/etc/systemd/import-pubring.gpg"
publish "$oldest"
sign_release
boot host-e "$upper" || exit 1
serve
if sud update > "$work/update3.log" 2>&1 && [ "$(current)" = "$(installed "$oldest")" ]; then
    ok "Verify=true: a signed release installs $oldest"
else
    bad "signed update: $(tail -n 5 "$work/update3.log")"
fi
# SHA256SUMS changed after signing: refused, the link stays.
publish "$oldest" "$newest"
sign_release
echo "# changed after signing" >> "$served/SHA256SUMS"
if ! sud update > "$work/update4.log" 2>&1 && [ "$(current)" = "$(installed "$oldest")" ]; then
    ok "Verify=true: a SHA256SUMS changed after signing is refused ($(grep -o -m1 'BAD signature' "$work/update4.log" || echo 'failed'))"
else
    bad "a SHA256SUMS changed after signing was taken: link $(current)"
fi
# No signature at all: refused too.
publish "$oldest" "$newest"
if ! sud update > "$work/update5.log" 2>&1 && [ "$(current)" = "$(installed "$oldest")" ]; then
    ok "Verify=true: a release without SHA256SUMS.gpg is refused"
else
    bad "an unsigned release was taken with Verify=true: link $(current)"
fi
sign_release
if sud update > "$work/update6.log" 2>&1 && [ "$(current)" = "$(installed "$newest")" ]; then
    ok "Verify=true: signed again, $newest installs"
else
    bad "signed update to $newest: $(tail -n 5 "$work/update6.log")"
fi
stop_container
gpgconf --kill all 2>/dev/null

log "RESULT systemd $sysver: $pass passed, $fail failed"
