#!/usr/bin/env bash
# bench/faults.sh - the fault trials of issue 17 at full length, with
# figures for bench/RESULTS.md:
#
#   powercut  tests/integration/test-powercut.sh with TRIALS power cuts
#             (default 50) of a mount's overlay under pgbench and a
#             committing client, then the local repository cut under
#             wal-push and a backup;
#   outage    the S3 outage test with the store stopped for each of
#             OUTAGES seconds (default "30 120 600"): time to fail a
#             read, time to recover once the store is back;
#   fulldisk  tests/integration/test-full-disk.sh once;
#   concurrency  tests/integration/test-concurrency.sh for CONCURRENCY
#             seconds (default 600): two backups at once, then three
#             servers archiving, backups, expire, gc and mounts together.
#
# REPO_TRIALS (default 20) power cuts of the repository under wal-push and
# a backup.  Each trial's TAP is kept in $W/NAME.tap; the summary counts trials, data
# lost (acknowledged commits or segments missing), wrong data (balances,
# amcheck, files), hangs (a step that timed out) and failures otherwise.
#
#   cd /work/main && bench/faults.sh                 # all three
#   PARTS=powercut TRIALS=100 bench/faults.sh
set -uo pipefail
NAME=faults.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
W=${BENCH_DIR:-$HERE/work-faults}
PARTS=${PARTS:-powercut outage fulldisk concurrency}
TRIALS=${TRIALS:-50}
REPO_TRIALS=${REPO_TRIALS:-20}
CONCURRENCY=${CONCURRENCY:-600}
OUTAGES=${OUTAGES:-30 120 600}
need_root_and_pg
[[ -x $TOP/build/cli/cbfs && -x $TOP/build/tests/lazyfs ]] || die "build first (ninja -C build)"
mkdir -p "$W"

export CBFS=$TOP/build/cli/cbfs MOUNT_CBFS=$TOP/build/cli/mount.cbfs LAZYFS=$TOP/build/tests/lazyfs \
	CBFS_SRCDIR=$TOP
part() { [[ " $PARTS " == *" $1 "* ]]; }

# summary NAME: counts of a TAP file.
summary() {
	local tap=$W/$1.tap
	printf '%s: %d checks, %d failed; acknowledged data missing: %d; wrong data: %d\n' "$1" \
		"$(grep -c '^ok\|^not ok' "$tap")" "$(grep -c '^not ok' "$tap")" \
		"$(grep '^not ok' "$tap" | grep -c 'acknowledged')" \
		"$(grep '^not ok' "$tap" | grep -c 'balances\|amcheck\|same files\|right data')"
}

if part powercut; then
	note "power cuts: $TRIALS trials"
	t0=$(date +%s)
	CBFS_POWERCUT_TRIALS=$TRIALS CBFS_POWERCUT_REPO_TRIALS=$REPO_TRIALS timeout 7200 bash "$TOP/tests/integration/test-powercut.sh" >"$W/powercut.tap" 2>"$W/powercut.err"
	echo "exit $? in $(($(date +%s) - t0)) s" >>"$W/powercut.tap"
	summary powercut
	printf 'recoveries with every acknowledged commit: %s of %s; repository cuts with every acknowledged segment: %s of %s\n' \
		"$(grep -c '^ok .*every acknowledged commit is there' "$W/powercut.tap")" "$((TRIALS + 1))" \
		"$(grep -c '^ok .*every segment wal-push acknowledged is there' "$W/powercut.tap")" "$REPO_TRIALS"
	grep 'every segment wal-push acknowledged' "$W/powercut.tap" | sed 's/.*(\([0-9]* of 12\))/\1/' |
		sort | uniq -c | sed 's/^/  segments acknowledged before the cut: /'
fi

if part outage; then
	for s in $OUTAGES; do
		note "store outage: $s s"
		sed "s/(\$(date +%s) - T0 < 30)/(\$(date +%s) - T0 < $s)/" \
			"$TOP/tests/integration/test-s3-outage.sh" >"$W/test-s3-outage-$s.sh"
		cp "$TOP"/tests/integration/lib*.sh "$W/"
		t0=$(date +%s)
		timeout $((s + 600)) bash "$W/test-s3-outage-$s.sh" >"$W/outage-$s.tap" 2>"$W/outage-$s.err"
		echo "exit $? in $(($(date +%s) - t0)) s" >>"$W/outage-$s.tap"
		summary "outage-$s"
		grep 'store_timeout (\|within its deadline\|answers again' "$W/outage-$s.tap"
	done
fi

if part concurrency; then
	note "everything at once: $CONCURRENCY s"
	t0=$(date +%s)
	CBFS_CONCURRENCY_SECONDS=$CONCURRENCY timeout $((CONCURRENCY + 1800)) bash "$TOP/tests/integration/test-concurrency.sh" >"$W/concurrency.tap" 2>"$W/concurrency.err"
	echo "exit $? in $(($(date +%s) - t0)) s" >>"$W/concurrency.tap"
	summary concurrency
	grep '^# .*runs, \|^ok .*restores and starts\|every acknowledged segment' "$W/concurrency.tap"
fi

if part fulldisk; then
	note "full disks"
	timeout 1200 bash "$TOP/tests/integration/test-full-disk.sh" >"$W/fulldisk.tap" 2>"$W/fulldisk.err"
	echo "exit $?" >>"$W/fulldisk.tap"
	summary fulldisk
fi
