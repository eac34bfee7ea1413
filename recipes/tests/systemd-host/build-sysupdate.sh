#!/bin/sh
# Build systemd-sysupdate and systemd-pull from Debian's systemd orig tarball (257.x; 252.x also works)
# as an offline step, and install a relocatable directory into $out:
#
#   $out/usr/lib/bake-sysupdate/systemd-sysupdate      RUNPATH=$ORIGIN/
#   $out/usr/lib/bake-sysupdate/systemd-pull           RUNPATH=$ORIGIN/
#   $out/usr/lib/bake-sysupdate/libsystemd-shared-VERSION.so
#
# Usage: cd into the unpacked source tree (top directory stripped), set $out, run this.
# Needs (host packages): meson ninja-build gperf pkg-config python3-jinja2 libcap-dev libmount-dev
# libcurl4-openssl-dev libssl-dev zlib1g-dev liblzma-dev libblkid-dev libfdisk-dev patchelf, plus gcc/binutils
# (build-essential). No network.
#
# Why RUNPATH "$ORIGIN/" (with the trailing slash): ld.so finds the private libsystemd-shared next to the
# binary, and systemd >= 255's invoke_callout_binary() treats a RUNPATH starting with "$ORIGIN/" as "running
# from a build tree" and runs the systemd-pull that sits next to systemd-sysupdate, so SYSTEMD_PULL_PATH is not
# even needed (it still wins when set). The compiled-in paths stay the stock ones (prefix /usr):
# /etc/systemd/import-pubring.gpg, /usr/lib/systemd/import-pubring.gpg, /etc/sysupdate.d, /usr/lib/sysupdate.d.
set -eu
: "${out:?set \$out}"
JOBS=${JOBS:-2}
# The build must not pick up a python3 without jinja2 (e.g. a pyenv shim) from the caller's PATH.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C TZ=UTC
: "${SOURCE_DATE_EPOCH:=$(stat -c %Y meson.build)}"
export SOURCE_DATE_EPOCH
B=${BUILDDIR:-build-bake}

# Every feature-type option off (-Dauto_features=disabled), the few we need on, and every boolean component
# that defaults to on switched off, so `meson setup` probes less and libsystemd-shared links only what
# sysupdate/pull need.
t0=$(date +%s)
meson setup "$B" \
    --prefix=/usr --libdir=lib --buildtype=release -Db_ndebug=false \
    -Dmode=release -Dvcs-tag=false \
    -Dauto_features=disabled \
    -Dsysupdate=enabled -Dimportd=enabled -Dlibcurl=enabled -Dfdisk=enabled -Dblkid=enabled \
    -Dopenssl=enabled -Dcryptolib=openssl -Dzlib=enabled -Dxz=enabled \
    -Dtests=false -Dfuzz-tests=false -Dslow-tests=false -Dinstall-tests=false \
    -Dman=disabled -Dhtml=disabled -Dtranslations=false \
    -Dinitrd=false -Dnscd=false -Dutmp=false -Dhibernate=false -Dldconfig=false -Dresolve=false -Defi=false \
    -Dtpm=false -Denvironment-d=false -Dbinfmt=false -Dcoredump=false -Dpstore=false -Doomd=false \
    -Dlogind=false -Dhostnamed=false -Dlocaled=false -Dmachined=false -Dportabled=false -Dsysext=false \
    -Dmountfsd=false -Duserdb=false -Dnetworkd=false -Dtimedated=false -Dtimesyncd=false \
    -Dcreate-log-dirs=false -Dnsresourced=false -Dnss-myhostname=false -Dnss-systemd=false \
    -Dfirstboot=false -Drandomseed=false -Dbacklight=false -Dvconsole=false -Dquotacheck=false \
    -Dsysusers=false -Dstoragetm=false -Dtmpfiles=false -Dhwdb=false -Drfkill=false -Dxdg-autostart=false \
    -Dsmack=false -Dima=false -Dipe=false -Didn=false -Dkernel-install=false -Danalyze=false \
    -Dsysupdated=disabled -Dbpf-framework=disabled -Dvmlinux-h=disabled \
    -Ddns-over-tls=false -Durlify=false -Dnobody-group=nogroup
t1=$(date +%s)

ninja -C "$B" -j"$JOBS" systemd-sysupdate systemd-pull
t2=$(date +%s)
echo "bake-sysupdate: meson setup $((t1-t0))s, ninja $((t2-t1))s"

d=$out/usr/lib/bake-sysupdate
mkdir -p "$d"
lib=$(cd "$B/src/shared" && ls libsystemd-shared-*.so)
install -m 0755 "$B/systemd-sysupdate" "$B/systemd-pull" "$d/"
install -m 0755 "$B/src/shared/$lib" "$d/"
strip --strip-unneeded "$d/systemd-sysupdate" "$d/systemd-pull" "$d/$lib"
patchelf --set-rpath '$ORIGIN/' "$d/systemd-sysupdate" "$d/systemd-pull"
version=$("$d/systemd-sysupdate" --version | sed -n '1s/^systemd \([0-9.]*\).*/\1/p')
printf '%s\n' "$version" > "$d/VERSION"
