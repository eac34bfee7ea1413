#!/bin/sh
# /init of the arm64 failover test VM (busybox sh as PID 1): the kernel and the
# image's keepalived, then failover.sh with the mode from the kernel command
# line (bake.mode=multicast|unicast). Results on the serial console, then off.
PATH=/bin:/usr/bin
export PATH
/bin/busybox mkdir -p /proc /sys /dev /run /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
MODE=multicast
for arg in $(cat /proc/cmdline); do
    case "$arg" in bake.mode=*) MODE=${arg#bake.mode=} ;; esac
done
# Whatever hangs, the VM reports and powers off.
( sleep 90; echo "BAKE-TEST FAIL guest-watchdog 90s"; echo "BAKE-TEST RESULT FAIL"; poweroff -f ) &
echo "BAKE-TEST PLAN 4"
while read -r ko; do
    insmod "$ko" || { echo "BAKE-TEST FAIL insmod $ko"; echo "BAKE-TEST RESULT FAIL"; poweroff -f; }
done < /lib/modules/load-order
ip link set lo up
echo "127.0.0.1 localhost" > /etc/hosts
sh /failover.sh /usr/bin/keepalived "$MODE" /run/failover
poweroff -f
sleep 10
