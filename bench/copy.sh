#!/usr/bin/env bash
# bench/copy.sh - a second repository (issue 19, item 9): cbfs copy against
# what a pgBackRest user does for a second copy.  Not a test: it prints
# figures to record in RESULTS.md.
#
#   sudo bench/copy.sh              # SCALE=100 (about 1.5 GB), CHANGE=2 (%)
#
# One cluster whose archive_command feeds both tools, loaded with pgbench -i
# -s SCALE.  Backup 1: a cbfs backup into R1, a pgBackRest full backup into
# repo1.  Then the second copy of each, timed, and the bytes it moved:
#   cbfs copy R1 R2                       bytes: what R2 grew by (du -sb)
#   rsync -a repo1/ copy/                 bytes: rsync's "Total transferred
#                                         file size" (a plain recursive copy
#                                         that skips files already there)
#   pgbackrest --repo=2 backup            pgBackRest's own second repository
#                                         (a second backup of the server)
#                                         bytes: what repo2 grew by
# Then CHANGE % of pgbench_accounts' pages are updated (a contiguous range
# of rows: the rows of about CHANGE % of its pages), and backup 2 is taken
# by each tool (cbfs backup; pgBackRest --type=incr into repo1), and the
# same three copies run again: the second copy's bytes against the first's.
# Target (issue 19): the second cbfs copy moves at most 5% of the first's.
# Then, how far behind a copy run every PERIOD seconds keeps the second
# repository's WAL: for LAG_SECS seconds pgbench writes (archive_timeout
# 10 s) while `cbfs copy R1 R2` runs every PERIOD seconds; for each WAL file
# the time between its store in R1 and in R2 (the objects' mtimes).
set -uo pipefail
NAME=copy.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
W=${BENCH_DIR:-$HERE/work-copy}
SCALE=${SCALE:-100}
CHANGE=${CHANGE:-2}
JOBS=${JOBS:-2}
KEEP_WORK=${KEEP_WORK:-0}
need_root_and_pg
need_tools pgbackrest rsync
[[ -x $TOP/build/cli/cbfs ]] || die "build first (ninja -C build)"
fresh_work
trap 'stop_servers; [[ $KEEP_WORK == 1 ]] || rm -rf "$W"/src "$W"/r1 "$W"/r2 "$W"/pgbr1 "$W"/pgbr2 "$W"/rsync-copy; true' EXIT
mkdir -p "$W/bin" "$W/cache" "$W/pgbr-log" "$W/pgbr-lock" "$W/pgbr1" "$W/pgbr2" "$W/rsync-copy" \
	"$W/r1" "$W/r2" "$W/src"
cp "$TOP/build/cli/cbfs" "$W/bin/"
chmod 755 "$W/bin" "$W/bin/cbfs"
CBFS=$W/bin/cbfs
export CBFS_CACHE_DIR=$W/cache
chown postgres: "$W/cache" "$W/pgbr-log" "$W/pgbr-lock" "$W/pgbr1" "$W/pgbr2" "$W/rsync-copy" \
	"$W/r1" "$W/r2" "$W/src"
chmod 700 "$W/src"
R1=$W/r1
R2=$W/r2
PCONF=$W/pgbackrest.conf
SRC=$W/src
P=$(free_port)
as_pg "$CBFS" init "$R1" >/dev/null
as_pg "$CBFS" init "$R2" >/dev/null
{
	pgbr_global "$W/pgbr1"
	echo "repo2-path=$W/pgbr2"
	echo "repo2-retention-full=10"
	echo "archive-timeout=900"
	echo "[main]"
	echo "pg1-path=$SRC"
	echo "pg1-port=$P"
	echo "pg1-socket-path=$W/sock"
} >"$PCONF"
chmod 644 "$PCONF"

note "source: pgbench -i -s $SCALE"
as_pg "$PGBIN/initdb" -k -D "$SRC" -U postgres -A trust >/dev/null
cat >>"$SRC/postgresql.conf" <<-EOF
	archive_mode = on
	archive_command = '$CBFS wal-push $R1 %p && pgbackrest --config=$PCONF --stanza=main archive-push %p'
	max_wal_size = 4GB
EOF
pg_up "$SRC" "$P"
as_pg pgbackrest --config="$PCONF" --stanza=main stanza-create >/dev/null || die "stanza-create failed"
as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$P" -i -q -s "$SCALE" postgres >/dev/null 2>&1 || die "pgbench -i failed"
psql_at "$P" postgres "vacuum (freeze, analyze)" >/dev/null

bytes() { du -sb "$1" | cut -f1; }
declare -A B T

backups() { # N: backup N with each tool into its first repository
	local t0
	t0=$(now)
	as_pg "$CBFS" backup "$R1" --pgdata "$SRC" --dbname "host=$W/sock port=$P user=postgres" \
		--label "b$1" --jobs "$JOBS" >/dev/null 2>&1 || die "cbfs backup $1 failed"
	note "cbfs backup $1: $(since "$t0") s"
	t0=$(now)
	as_pg pgbackrest --config="$PCONF" --stanza=main --repo=1 --type="$2" backup >/dev/null ||
		die "pgbackrest backup $1 failed"
	note "pgbackrest backup $1 ($2): $(since "$t0") s"
	psql_at "$P" postgres "select pg_switch_wal()" >/dev/null
	sleep 2
}

copies() { # N
	local t0 b0 out
	sync
	b0=$(bytes "$R2")
	t0=$(now)
	as_pg "$CBFS" copy "$R1" "$R2" --jobs "$JOBS" >"$W/log/copy$1.out" 2>&1 || die "cbfs copy $1 failed"
	T[cbfs/$1]=$(since "$t0")
	B[cbfs/$1]=$(($(bytes "$R2") - b0))
	note "cbfs copy $1: ${T[cbfs/$1]} s, ${B[cbfs/$1]} bytes ($(tail -n 1 "$W/log/copy$1.out"))"
	t0=$(now)
	out=$(rsync -a --stats "$W/pgbr1/" "$W/rsync-copy/") || die "rsync $1 failed"
	T[rsync/$1]=$(since "$t0")
	B[rsync/$1]=$(sed -n 's/^Total transferred file size: \([0-9,]*\) bytes/\1/p' <<<"$out" | tr -d ,)
	note "rsync of repo1 $1: ${T[rsync/$1]} s, ${B[rsync/$1]} bytes"
	b0=$(bytes "$W/pgbr2")
	t0=$(now)
	as_pg pgbackrest --config="$PCONF" --stanza=main --repo=2 --type="$2" backup >/dev/null ||
		die "pgbackrest --repo=2 backup $1 failed"
	T[repo2/$1]=$(since "$t0")
	B[repo2/$1]=$(($(bytes "$W/pgbr2") - b0))
	note "pgbackrest --repo=2 backup $1: ${T[repo2/$1]} s, ${B[repo2/$1]} bytes"
}

backups 1 full
copies 1 full

ROWS=$((SCALE * 100000 * CHANGE / 100))
note "changing $CHANGE% of pgbench_accounts ($ROWS rows in a row)"
psql_at "$P" postgres "update pgbench_accounts set abalance = abalance + 1 where aid <= $ROWS" >/dev/null
psql_at "$P" postgres "checkpoint" >/dev/null
backups 2 incr
copies 2 incr

LAG_SECS=${LAG_SECS:-300}
PERIOD=${PERIOD:-60}
note "lag: pgbench for $LAG_SECS s, cbfs copy every $PERIOD s"
psql_at "$P" postgres "alter system set archive_timeout = '10s'" >/dev/null
psql_at "$P" postgres "select pg_reload_conf()" >/dev/null
as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$P" -n -c 2 -R 200 -T "$LAG_SECS" postgres >/dev/null 2>&1 &
PGB=$!
end=$(($(date +%s) + LAG_SECS))
while (($(date +%s) < end)); do
	next=$(($(date +%s) + PERIOD))
	as_pg "$CBFS" copy "$R1" "$R2" >>"$W/log/copy-lag.out" 2>&1 || die "cbfs copy (lag) failed"
	while (($(date +%s) < next)); do sleep 1; done
done
wait "$PGB"
as_pg "$CBFS" copy "$R1" "$R2" >>"$W/log/copy-lag.out" 2>&1 || die "cbfs copy (lag) failed"
LAG=$(/usr/bin/python3 - "$R1/wal" "$R2/wal" "$((end - LAG_SECS))" <<-'EOF'
	import os, sys
	r1, r2, since = sys.argv[1], sys.argv[2], float(sys.argv[3])
	lags = []
	for d, _, files in os.walk(r1):
	    for f in files:
	        p1 = os.path.join(d, f)
	        t1 = os.stat(p1).st_mtime
	        p2 = os.path.join(r2, os.path.relpath(p1, r1))
	        if t1 >= since and os.path.exists(p2):
	            lags.append(max(0.0, os.stat(p2).st_mtime - t1))
	lags.sort()
	if lags:
	    print("%d WAL files, lag mean %.0f s, median %.0f s, max %.0f s"
	          % (len(lags), sum(lags) / len(lags), lags[len(lags) // 2], lags[-1]))
	else:
	    print("no WAL files")
	EOF
)
note "lag: $LAG"
pg_down "$SRC"

pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f%%", 100 * a / b }'; }
echo
echo "## copy: $(date -u +%Y-%m-%d), $(nproc) cores, SCALE=$SCALE CHANGE=$CHANGE% JOBS=$JOBS"
printf '| second copy | first: time | first: bytes | second: time | second: bytes | second / first bytes |\n|---|---:|---:|---:|---:|---:|\n'
for k in cbfs rsync repo2; do
	case $k in
	cbfs) what="cbfs copy R1 R2" ;;
	rsync) what="rsync -a of pgBackRest's repo1" ;;
	repo2) what="pgBackRest backup --repo=2 (full, then incr)" ;;
	esac
	printf '| %s | %s s | %s | %s s | %s | %s |\n' "$what" "${T[$k/1]}" "${B[$k/1]}" "${T[$k/2]}" \
		"${B[$k/2]}" "$(pct "${B[$k/2]}" "${B[$k/1]}")"
done
echo "WAL lag of R2 behind R1 with cbfs copy every $PERIOD s for $LAG_SECS s of pgbench: $LAG"
echo "repositories: R1 $(bytes "$R1") bytes, R2 $(bytes "$R2") bytes, pgBackRest repo1 $(bytes "$W/pgbr1") bytes, repo2 $(bytes "$W/pgbr2") bytes"
