#!/bin/sh
# Boot the arm64 test VM (qemu-system-aarch64, software emulation, no network
# device) and decide pass/fail from its serial console.
#
#   run-vm.sh VMLINUZ INITRAMFS [MODE [LOG]]
#
# MODE: multicast (default) or unicast, passed as bake.mode= on the kernel command line.
# LOG:  serial console capture (default ./serial-MODE.log).
# Environment: VM_TIMEOUT (hard limit in seconds, default 120), VM_CPU (cortex-a57),
#   VM_SMP (1), VM_MEM (512), VM_APPEND (more kernel arguments).
# Exit status: 0 when the guest printed "BAKE-TEST RESULT PASS", as many PASS lines
# as its PLAN and no FAIL line; 1 otherwise (also on timeout). The VM is always
# gone when this script returns: timeout(1) kills it (SIGTERM, SIGKILL 5 s later),
# and a signal to this script is forwarded.
set -u

[ $# -ge 2 ] || { echo "usage: $0 VMLINUZ INITRAMFS [MODE [LOG]]" >&2; exit 2; }
kernel=$1 initrd=$2 mode=${3:-multicast} log=${4:-serial-$mode.log}
limit=${VM_TIMEOUT:-120}
case "$mode" in multicast|unicast) ;; *) echo "run-vm: unknown mode $mode" >&2; exit 2 ;; esac

qemu=$(command -v qemu-system-aarch64) || { echo "run-vm: qemu-system-aarch64 not found" >&2; exit 1; }

ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms)
timeout -k 5 "$limit" "$qemu" \
    -M virt -cpu "${VM_CPU:-cortex-a57}" -smp "${VM_SMP:-1}" -m "${VM_MEM:-512}" \
    -nodefaults -no-user-config -nic none -display none -monitor none \
    -serial "file:$log" -no-reboot \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyAMA0 panic=-1 quiet bake.mode=$mode ${VM_APPEND:-}" \
    </dev/null >"$log.qemu" 2>&1 &
tpid=$!
trap 'kill -TERM $tpid 2>/dev/null; wait $tpid; exit 1' INT TERM HUP
wait $tpid
rc=$?
trap - INT TERM HUP
t1=$(ms)

tr -d '\r' < "$log" > "$log.txt" 2>/dev/null || : > "$log.txt"
grep '^BAKE-TEST ' "$log.txt"
plan=$(sed -n 's/^BAKE-TEST PLAN \([0-9][0-9]*\)$/\1/p' "$log.txt" | head -n 1)
passes=$(grep -c '^BAKE-TEST PASS ' "$log.txt")
total=$(( t1 - t0 ))
secs=$(printf '%d.%03d' $((total / 1000)) $((total % 1000)))

verdict=FAIL why=
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then why="VM killed after ${limit}s (timeout rc $rc)"
elif [ "$rc" -ne 0 ]; then why="qemu exit status $rc: $(tail -n 3 "$log.qemu" | tr '\n' ' ')"
elif grep -q '^BAKE-TEST FAIL' "$log.txt"; then why="assertion failed"
elif [ -z "$plan" ]; then why="no BAKE-TEST PLAN line (guest did not start the test)"
elif [ "$passes" -ne "$plan" ]; then why="$passes of $plan assertions passed"
elif ! grep -qx 'BAKE-TEST RESULT PASS' "$log.txt"; then why="no BAKE-TEST RESULT PASS line"
else verdict=PASS
fi

echo "run-vm: $verdict mode=$mode wall=${secs}s qemu-rc=$rc passes=$passes/${plan:-?}${why:+ ($why)}"
if [ "$verdict" != PASS ]; then
    echo "run-vm: serial console ($log):"
    sed 's/^/  | /' "$log.txt"
    exit 1
fi
exit 0
