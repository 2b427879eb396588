#!/usr/bin/env bash
# bench/soak.sh - a mounted backup serving pgbench (read-write) for
# DURATION seconds (default 3600) while the source server runs pgbench and
# archives with wal-push, a backup is taken every BACKUP_EVERY seconds and
# gc runs every GC_EVERY seconds.  Every 10 s it samples the mount daemon's
# resident memory, its open files and the overlay's size into
# $W/soak.csv, and plots them ($W/soak.png, gnuplot).  Flat lines mean no
# leak.  CBFS=path runs another build (the ASan one: build-asan/cli/cbfs).
#
#   cd /work/main && bench/soak.sh                       # one hour
#   DURATION=600 CBFS=build-asan/cli/cbfs bench/soak.sh  # ten minutes under ASan
#                                     (mount.cbfs is taken from beside CBFS)
set -uo pipefail
NAME=soak.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
W=${BENCH_DIR:-$HERE/work-soak}
DURATION=${DURATION:-3600}
BACKUP_EVERY=${BACKUP_EVERY:-300}
GC_EVERY=${GC_EVERY:-600}
SCALE=${SCALE:-20}
CBFS_BIN=${CBFS:-$TOP/build/cli/cbfs}
MOUNT_BIN=${MOUNT_CBFS:-$(dirname "$CBFS_BIN")/mount.cbfs}
need_root_and_pg
need_tools gnuplot-nox
[[ -x $CBFS_BIN && -x $MOUNT_BIN ]] || die "no cbfs or mount.cbfs binary at $CBFS_BIN"
fresh_work
MNT=$W/mnt
# the servers first (the one on the mount keeps it busy), then the mount
trap 'kill $(jobs -p) 2>/dev/null; stop_servers; "$CBFS" umount "$MNT" >/dev/null 2>&1; true' EXIT

mkdir -p "$W/bin" "$W/cache" "$MNT"
cp "$CBFS_BIN" "$W/bin/cbfs"
cp "$MOUNT_BIN" "$W/bin/mount.cbfs"
chmod 755 "$W/bin" "$W/bin/cbfs" "$W/bin/mount.cbfs"
CBFS=$W/bin/cbfs
export CBFS_CACHE_DIR=$W/cache
REPO=$W/repo
chown postgres: "$W" "$W/cache"
as_pg "$CBFS" init "$REPO" >/dev/null || die "init failed"

SP=$(free_port)
as_pg "$PGBIN/initdb" -k -D "$W/src" -U postgres -A trust >/dev/null
printf '%s\n' "archive_mode = on" "archive_command = '$CBFS wal-push $REPO %p'" >>"$W/src/postgresql.conf"
pg_up "$W/src" "$SP"
as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$SP" -i -s "$SCALE" -q postgres >/dev/null 2>&1 || die "pgbench -i failed"
"$CBFS" backup "$REPO" --pgdata "$W/src" --dbname "host=$W/sock port=$SP user=postgres" --label soak-0 >/dev/null ||
	die "the first backup failed"

"$W/bin/mount.cbfs" "$REPO@soak-0" "$MNT" -o "uid=postgres,gid=postgres,overlay=$W/ov" || die "mount failed"
MP=$(free_port)
pg_up "$MNT" "$MP"
until [[ $(psql_at "$MP" postgres "select pg_is_in_recovery()") == f ]]; do sleep 0.5; done
DAEMON=$(pgrep -f "mount.cbfs $REPO@soak-0 $MNT" | head -n 1)
[[ -n $DAEMON ]] || die "no mount daemon found"

note "soak: $DURATION s; mount daemon pid $DAEMON"
as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$MP" -n -c 4 -T "$DURATION" postgres >"$W/log/pgbench-mount.out" 2>&1 &
as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$SP" -n -c 2 -T "$DURATION" -R 200 postgres >"$W/log/pgbench-src.out" 2>&1 &
(
	k=1
	while sleep "$BACKUP_EVERY"; do
		"$CBFS" backup "$REPO" --pgdata "$W/src" --dbname "host=$W/sock port=$SP user=postgres" \
			--label "soak-$k" >>"$W/log/backups.out" 2>&1 || echo "backup soak-$k failed" >>"$W/log/failures"
		k=$((k + 1))
	done
) &
(
	while sleep "$GC_EVERY"; do
		"$CBFS" expire "$REPO" --keep-last 3 >>"$W/log/gc.out" 2>&1
		"$CBFS" gc "$REPO" >>"$W/log/gc.out" 2>&1 || echo "gc failed" >>"$W/log/failures"
	done
) &

echo "seconds,rss_kb,open_files,overlay_bytes,tps_window" >"$W/soak.csv"
t0=$(date +%s)
while (($(date +%s) - t0 < DURATION)); do
	kill -0 "$DAEMON" 2>/dev/null || die "the mount daemon died"
	rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$DAEMON/status")
	fds=$(find "/proc/$DAEMON/fd" -mindepth 1 | wc -l)
	ov=$(du -sb "$W/ov" | cut -f1)
	echo "$(($(date +%s) - t0)),$rss,$fds,$ov," >>"$W/soak.csv"
	sleep 10
done
wait %1 2>/dev/null
note "pgbench on the mount: $(grep -m1 '^tps' "$W/log/pgbench-mount.out")"
note "failures: $(cat "$W/log/failures" 2>/dev/null | wc -l)"
awk -F, 'NR > 1 { if (!n++) { r0 = $2; f0 = $3 } r = $2; f = $3; if ($2 > rm) rm = $2 }
	END { printf "daemon RSS: first %d kB, last %d kB, max %d kB; open files: first %d, last %d\n", r0, r, rm, f0, f }' "$W/soak.csv"
gnuplot <<EOF
set terminal png size 1000,600
set output "$W/soak.png"
set datafile separator ","
set xlabel "seconds"
set ylabel "MB"
set y2label "open files"
set y2tics
set key top left
plot "$W/soak.csv" every ::1 using 1:(\$2/1024) with lines title "daemon RSS (MB)", \
     "$W/soak.csv" every ::1 using 1:(\$4/1048576) with lines title "overlay (MB)", \
     "$W/soak.csv" every ::1 using 1:3 axes x1y2 with lines title "open files"
EOF
note "plot: $W/soak.png"
