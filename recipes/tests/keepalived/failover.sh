#!/bin/sh
# VRRP failover of two keepalived instances, each in a network namespace of its
# own, joined by a veth pair (10.200.0.1/24 <-> 10.200.0.2/24), VIP 10.200.0.100.
#
#   failover.sh KEEPALIVED MODE RUNDIR      MODE: multicast | unicast
#
# Runs as root of a user namespace (x86-64: the test step's) or as PID 1's child
# in the arm64 test VM; makes its namespaces itself, each held by a sleeping
# process, so it needs no /run/netns. Every wait is bounded and polled every
# 100 ms. One line per assertion on stdout:
#   BAKE-TEST PASS NAME 1.23s | BAKE-TEST FAIL NAME why
# and last BAKE-TEST RESULT PASS | FAIL (the exit status says the same).
#   vip-on-master           VIP on a (not b) within 10 s of the start
#   vip-on-backup-sigterm   VIP on b (not a) within 5 s of SIGTERM to a's main process
#   vip-preempted-back      VIP back on a within 10 s of a starting again
#   vip-on-backup-sigkill   VIP on b within 5 s of SIGKILL to a's main process
set -u
KA=$1 MODE=$2 RUN=$3
mkdir -p "$RUN"

now() { read -r _up _rest < /proc/uptime; NOW=$(( ${_up%.*} * 100 + 1${_up#*.} - 100 )); }
fmt() { printf '%d.%02ds' $(($1 / 100)) $(($1 % 100)); }
nap() { usleep 100000 2>/dev/null || sleep 0.1; }
info() { echo "BAKE-TEST INFO $*"; }
pass() { echo "BAKE-TEST PASS $1 $(fmt "$2")"; }
fail() { echo "BAKE-TEST FAIL $*"; }
HOLDERS=
cleanup() {
    for p in $HOLDERS $(cat "$RUN"/*.pid 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
}
finish() { # PASS|FAIL
    cleanup
    echo "BAKE-TEST RESULT $1"
    [ "$1" = PASS ]
    exit
}
dump_logs() { for n in a b; do [ -f "$RUN/$n.log" ] && sed "s/^/LOG $n| /" "$RUN/$n.log"; done; }
abort() { dump_logs; finish FAIL; }
die() { fail "$@"; abort; }
trap 'cleanup' EXIT

"$KA" --version > "$RUN/version" 2>&1 || { cat "$RUN/version"; die "keepalived-runs"; }
info "keepalived $(head -n 1 "$RUN/version") mode $MODE"

mkns() { # NAME: a network namespace held by a sleeping process, its pid in NS_NAME
    unshare -n sleep 1000000 &
    _p=$!
    HOLDERS="$HOLDERS $_p"
    _i=0
    while [ "$(readlink /proc/$_p/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do
        _i=$((_i + 1)); [ $_i -gt 50 ] && die "netns-$1 not created"
        nap
    done
    eval "NS_$1=$_p"
}
mkns a
mkns b
in_a() { nsenter -t "$NS_a" -n "$@"; }
in_b() { nsenter -t "$NS_b" -n "$@"; }

# busybox's `ip link add` ignores `peer name X` (it makes veth0 or the like):
# make the pair in a, then find and rename the peer.
in_a ip link add name va type veth peer name vb 2>/dev/null || in_a ip link add name va type veth ||
    die "veth-create"
peer=$(in_a ip -o link show | sed -n 's/^[0-9]*: \([^:@]*\).*/\1/p' | grep -v -x -e lo -e va | head -n 1)
[ -n "$peer" ] || die "veth-create (no peer)"
[ "$peer" = vb ] || in_a ip link set "$peer" name vb || die "veth-rename $peer"
in_a ip link set vb netns "$NS_b" || die "veth-move vb"
in_a ip link set lo up; in_b ip link set lo up
in_a ip addr add 10.200.0.1/24 dev va || die "addr-a"
in_b ip addr add 10.200.0.2/24 dev vb || die "addr-b"
in_a ip link set va up || die "up-a"
in_b ip link set vb up || die "up-b"

conf() { # NAME STATE PRIORITY DEV SRC PEER
    cat <<CONF
global_defs {
    router_id ka_$1
}
vrrp_instance VI_1 {
    state $2
    interface $4
    virtual_router_id 51
    priority $3
    advert_int 1
CONF
    if [ "$MODE" = unicast ]; then
        printf '    unicast_src_ip %s\n    unicast_peer {\n        %s\n    }\n' "$5" "$6"
    fi
    cat <<CONF
    virtual_ipaddress {
        10.200.0.100/24 dev $4
    }
}
CONF
}
conf a MASTER 150 va 10.200.0.1 10.200.0.2 > "$RUN/a.conf"
conf b BACKUP 100 vb 10.200.0.2 10.200.0.1 > "$RUN/b.conf"

start_ka() { # NAME
    _ns=$(eval echo "\$NS_$1")
    # -n stays in the foreground (so $! is the main process); -l -G log to stderr
    # only; -P VRRP only. Every pid file is per instance: keepalived refuses a
    # second instance with the same BFD pid file even with -P.
    nsenter -t "$_ns" -n -F "$KA" -n -l -G -D -P -f "$RUN/$1.conf" \
        -p "$RUN/$1.pid" -r "$RUN/$1-vrrp.pid" -c "$RUN/$1-checkers.pid" -b "$RUN/$1-bfd.pid" \
        >> "$RUN/$1.log" 2>&1 &
    eval "PID_$1=$!"
}
alive() { [ -r /proc/$1/stat ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$1/stat; }
ka_procs() { # NAME: its live main and VRRP processes
    for _f in "$RUN/$1.pid" "$RUN/$1-vrrp.pid"; do
        _p=
        [ -r "$_f" ] && read -r _p < "$_f"
        [ -n "$_p" ] && alive "$_p" && echo "$_p"
    done
}
vip_on() { nsenter -t "$(eval echo "\$NS_$1")" -n ip -o addr show | grep -q ' 10\.200\.0\.100/'; }
on_a_only() { vip_on a && ! vip_on b; }
on_b_only() { vip_on b && ! vip_on a; }
state() { _sa=0; _sb=0; vip_on a && _sa=1; vip_on b && _sb=1; echo "vip(a)=$_sa vip(b)=$_sb"; }
await() { # NAME T0 LIMIT_CS COND
    _n=$1 _t0=$2 _lim=$3
    shift 3
    while :; do
        if "$@"; then now; pass "$_n" $((NOW - _t0)); return 0; fi
        now
        if [ $((NOW - _t0)) -ge "$_lim" ]; then fail "$_n timeout $(fmt $((NOW - _t0))) $(state)"; return 1; fi
        nap
    done
}
await_gone() { # NAME LIMIT_CS
    now; _t0=$NOW
    while [ -n "$(ka_procs "$1")" ]; do now; [ $((NOW - _t0)) -ge "$2" ] && return 1; nap; done
}

# 1. Both start: the VIP goes to the master.
start_ka a
start_ka b
now; T=$NOW
await vip-on-master "$T" 1000 on_a_only || abort
# 2. SIGTERM of the master's main process: the backup takes over.
kill -TERM "$PID_a"
now; T=$NOW
await vip-on-backup-sigterm "$T" 500 on_b_only || abort
await_gone a 500 || die "master-exit-after-sigterm (still running: $(echo $(ka_procs a)))"
wait "$PID_a" 2>/dev/null
# 3. The master starts again and preempts.
rm -f "$RUN"/a*.pid
start_ka a
now; T=$NOW
await vip-preempted-back "$T" 1000 on_a_only || abort
# 4. SIGKILL of the master's main process: the backup holds the VIP.
kill -KILL "$PID_a"
now; T=$NOW
await vip-on-backup-sigkill "$T" 500 vip_on b || abort
finish PASS
