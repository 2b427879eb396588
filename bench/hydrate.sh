#!/usr/bin/env bash
# bench/hydrate.sh - the mount before and after hydration, against a local
# copy (issue 18, item 6, "bench/mount.sh" targets).  Not a test: it prints
# figures to record in RESULTS.md.
#
#   sudo bench/hydrate.sh               # SCALE=68 (about 1 GB)
#
# A cluster (pgbench -i -s SCALE) is backed up; then, the page cache
# dropped before each timed step:
#   - mount, first query; a cold sequential read (cat) of pgbench_accounts'
#     files through the mount: the daemon's CPU seconds per GB served
#     (utime + stime from /proc);
#   - pgbench -S for SECS s on the mount, before hydration;
#   - cbfs hydrate --wait: time and MB/s;
#   - PostgreSQL stopped, the mount remounted (a hydrated overlay: FUSE
#     passthrough), started again, then pgbench -S for SECS s and a cold
#     sequential scan (count(*));
#   - the same two on a restored local copy;
#   - cbfs umount --materialize: time.
# Environment: SCALE (68), SECS (30), BENCH_DIR.
set -uo pipefail
NAME=hydrate.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
W=${BENCH_DIR:-$HERE/work-hydrate}
SCALE=${SCALE:-68}
SECS=${SECS:-30}
need_root_and_pg
[[ -x $TOP/build/cli/cbfs ]] || die "build first (ninja -C build)"
fresh_work
MNT=$W/mnt
trap 'stop_servers; "$CBFS" umount "$MNT" >/dev/null 2>&1; true' EXIT
mkdir -p "$W/bin" "$W/cache" "$MNT"
cp "$TOP/build/cli/cbfs" "$TOP/build/cli/mount.cbfs" "$W/bin/"
chmod 755 "$W/bin" "$W/bin/"*
CBFS=$W/bin/cbfs
export CBFS_CACHE_DIR=$W/cache
REPO=$W/repo
chown postgres: "$W" "$W/cache"
"$CBFS" init "$REPO" >/dev/null && chown -R postgres: "$REPO"
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
cpu_s() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
tps() { as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$1" -n -S -c 4 -T "$SECS" postgres 2>/dev/null |
	sed -n 's/^tps = \([0-9.]*\) .*/\1/p'; }
scan() {
	local t0
	drop_caches
	t0=$(now)
	psql_at "$1" postgres "select count(*) from pgbench_accounts" >/dev/null
	since "$t0"
}

as_pg "$PGBIN/initdb" -k -D "$W/src" -U postgres -A trust >/dev/null
printf '%s\n' "archive_mode = on" "archive_command = '$CBFS wal-push $REPO %p'" >>"$W/src/postgresql.conf"
SP=$(free_port)
pg_up "$W/src" "$SP"
note "pgbench -i -s $SCALE"
as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$SP" -i -q -s "$SCALE" postgres >/dev/null 2>&1 || die "pgbench -i failed"
FILES=$(psql_at "$SP" postgres "select pg_relation_filepath('pgbench_accounts')")
as_pg "$CBFS" backup "$REPO" --pgdata "$W/src" --dbname "host=$W/sock port=$SP user=postgres" --label b \
	>/dev/null 2>&1 || die "backup failed"
pg_down "$W/src"

note "mount; cold read through the daemon"
drop_caches
"$W/bin/mount.cbfs" "$REPO@b" "$MNT" -o "uid=postgres,gid=postgres,overlay=$W/ov" || die "mount failed"
D=$(pgrep -f "mount.cbfs $REPO@b $MNT" | head -n 1)
BYTES=0
C0=$(cpu_s "$D")
T0=$(now)
for f in "$MNT/$FILES" "$MNT/$FILES".*; do
	[[ -f $f ]] || continue
	BYTES=$((BYTES + $(stat -c %s "$f")))
	cat "$f" >/dev/null
done
READ_S=$(since "$T0")
C1=$(cpu_s "$D")
CPU_GB=$(awk -v c="$(awk -v a="$C0" -v b="$C1" 'BEGIN { print b - a }')" -v b="$BYTES" 'BEGIN { printf "%.2f", c / (b / 1e9) }')
note "cold read: $BYTES bytes in $READ_S s, daemon $CPU_GB CPU-s per GB"

MP=$(free_port)
pg_up "$MNT" "$MP"
until [[ $(psql_at "$MP" postgres "select pg_is_in_recovery()") == f ]]; do sleep 0.2; done
TPS_BEFORE=$(tps "$MP")
note "pgbench -S before hydration: $TPS_BEFORE"

T0=$(now)
"$CBFS" hydrate "$MNT" --wait >"$W/log/hydrate.out" || die "hydration failed"
HYD_S=$(since "$T0")
HYD_BYTES=$("$CBFS" hydrate "$MNT" --status --json | sed -n 's/.*"bytes_total":\([0-9]*\).*/\1/p')
note "hydrated $HYD_BYTES bytes in $HYD_S s"
# the next mount of a hydrated overlay serves its files with passthrough
pg_down "$MNT"
"$CBFS" umount "$MNT" || die "umount failed"
drop_caches
"$W/bin/mount.cbfs" "$REPO@b" "$MNT" -o "uid=postgres,gid=postgres,overlay=$W/ov" || die "remount failed"
PT=$(grep 'FUSE passthrough' "$W/ov/mount.log" | tail -n 1 | sed 's/.*FUSE passthrough //')
pg_up "$MNT" "$MP"
SCAN_MNT=$(scan "$MP")
TPS_MNT=$(tps "$MP")
note "after hydration: scan $SCAN_MNT s, pgbench -S $TPS_MNT"
pg_down "$MNT"

"$CBFS" restore "$REPO@b" "$W/local" >/dev/null || die "restore failed"
chown -R postgres: "$W/local"
LP=$(free_port)
pg_up "$W/local" "$LP"
until [[ $(psql_at "$LP" postgres "select pg_is_in_recovery()") == f ]]; do sleep 0.2; done
SCAN_LOCAL=$(scan "$LP")
TPS_LOCAL=$(tps "$LP")
note "local copy: scan $SCAN_LOCAL s, pgbench -S $TPS_LOCAL"
pg_down "$W/local"

T0=$(now)
"$CBFS" umount "$MNT" --materialize "$W/materialized" >/dev/null || die "materialize failed"
MAT_S=$(since "$T0")

pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b }'; }
echo
echo "## hydrate: $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), scale $SCALE ($(awk -v b="$HYD_BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }') of files), pgbench -S -c 4 -T $SECS"
echo "| step | figure |"
echo "|---|---|"
echo "| cold read through the daemon (pgbench_accounts, $BYTES bytes) | $READ_S s, daemon $CPU_GB CPU-s per GB |"
echo "| pgbench -S on the mount before hydration | $TPS_BEFORE tps |"
echo "| cbfs hydrate --wait | $HYD_S s ($(awk -v b="$HYD_BYTES" -v s="$HYD_S" 'BEGIN { printf "%.0f", b / s / 1e6 }') MB/s) |"
echo "| after hydration (remounted: passthrough $PT): pgbench -S | $TPS_MNT tps ($(pct "$TPS_MNT" "$TPS_LOCAL") of local) |"
echo "| after hydration: cold count(*) of pgbench_accounts | $SCAN_MNT s ($(pct "$SCAN_LOCAL" "$SCAN_MNT") of local speed) |"
echo "| local copy: pgbench -S / cold count(*) | $TPS_LOCAL tps / $SCAN_LOCAL s |"
echo "| cbfs umount --materialize | $MAT_S s |"
