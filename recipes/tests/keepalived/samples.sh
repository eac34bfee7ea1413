#!/bin/sh
# `keepalived -t -f` on each of keepalived's own sample configurations
# (doc/samples in its source), each bounded to 10 s, against the verdicts in
# EXPECTED (`NAME ok|fail` per line, for a sandbox with only loopback).
#
#   samples.sh KEEPALIVED SAMPLES_DIR EXPECTED [RUNNER]
#
# RUNNER runs a foreign binary (qemu-aarch64-static for arm64). One line per
# sample, a summary, and exit status 1 when a verdict differs or a sample hangs.
set -u
bin=$1 dir=$2 expected=$3 runner=${4:-}
status=0 n=0 differs=
for f in "$dir"/keepalived.conf.*; do
    name=${f##*/}
    n=$((n + 1))
    # shellcheck disable=SC2086
    (cd "$dir" && timeout -k 2 10 $runner "$bin" -t -f "$f") > "$TMPDIR/sample.out" 2>&1 < /dev/null
    rc=$?
    case $rc in
        0) got=ok ;;
        124 | 137) got=hang ;;
        *) got=fail ;;
    esac
    want=$(awk -v n="$name" '$1 == n { print $2 }' "$expected")
    if [ "$got" = "$want" ]; then
        echo "same     $name $got"
    else
        line="DIFFERS  $name: $got (exit $rc), expected ${want:-no verdict}"
        echo "$line"
        sed 's/^/    | /' "$TMPDIR/sample.out" | head -n 5
        differs="$differs$line
"
        status=1
    fi
done
listed=$(grep -c . "$expected")
if [ "$n" -ne "$listed" ]; then
    echo "DIFFERS  $n samples here, $listed in $expected"
    status=1
fi
# The differences again, last, where a log's tail shows them.
printf '%s' "$differs"
echo "samples: $n, verdicts $( [ $status = 0 ] && echo "as expected" || echo "differ")"
exit $status
