#!/usr/bin/env bash
# bench/patroni.sh - what a Patroni cluster asks of its backup tool (issue
# 16), cbfs against pg_basebackup and pgBackRest.  Not a test: it prints
# figures to record in RESULTS.md.
#
#   sudo bench/patroni.sh                     # SCALE=340 (a 5 GB-class database)
#   sudo SCALE=20 RUNS=1 bench/patroni.sh     # a quick run
#
# A leader (initdb -k, pgbench -i -s SCALE, archiving into both tools) and a
# streaming replica made with pg_basebackup.  Then, RUNS times each, the
# page cache dropped and the machine idle before each timed step:
#   1. a new replica, until it streams with the leader's current WAL
#      replayed: cbfs's replica method (`cbfs restore REPO@latest DIR
#      --standby --primary-conninfo ...`, then start), pg_basebackup from
#      the leader (-X stream, fast checkpoint), pgBackRest's (`pgbackrest
#      restore --type=standby`, then start);
#   2. re-seeding a former leader: a full restore of the backup, started,
#      promoted, 2% of its pages changed (UPDATE of every row of randomly
#      chosen pages of pgbench_accounts), stopped, copied; then `cbfs
#      restore --delta` over one copy, `pgbackrest restore --delta` over
#      the other, and a full `cbfs restore` into an empty directory;
#   3. the leader's load during a backup from the replica: the bytes the
#      leader's processes (the postmaster and its children) read while
#      `cbfs backup` runs on the replica — from storage (read_bytes of
#      /proc/PID/io) and in all (rchar: page cache included, so the WAL the
#      walsender streams and the padding of the WAL switch cbfs asks for)
#      — against the same span of time with no backup; and, in a second,
#      traced run (strace -e openat), the files cbfs opens under each data
#      directory.
# PARTS="1 2 3" picks the parts to run.
#
# Environment: SCALE=340, RUNS=2, JOBS=2 (cbfs --jobs, pgBackRest
# process-max), BENCH_DIR (default bench/work-patroni), KEEP_WORK=1,
# QUIET_WAIT=60, CBFS (binary; copied into the work directory).
set -euo pipefail

NAME=patroni.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
W=${BENCH_DIR:-$HERE/work-patroni}
SCALE=${SCALE:-340}
RUNS=${RUNS:-2}
JOBS=${JOBS:-2}
KEEP_WORK=${KEEP_WORK:-0}
QUIET_WAIT=${QUIET_WAIT:-60}
CBFS_SRC=${CBFS:-$TOP/build/cli/cbfs}
PARTS=${PARTS:-1 2 3}
part() { [[ " $PARTS " == *" $1 "* ]]; }

need_root_and_pg
[[ -x $CBFS_SRC ]] || die "no cbfs binary at $CBFS_SRC (ninja -C build)"
need_tools pgbackrest time strace
fresh_work
trap 'stop_servers; [[ $KEEP_WORK == 1 ]] || rm -rf "$W"/leader "$W"/replica "$W"/new-* "$W"/former-* "$W"/full-*; true' EXIT

mkdir -p "$W/bin" "$W/log" "$W/sock" "$W/cache" "$W/pgbr-log" "$W/pgbr-lock"
cp "$CBFS_SRC" "$W/bin/cbfs"
chmod 755 "$W/bin" "$W/bin/cbfs"
CBFS=$W/bin/cbfs
export CBFS_CACHE_DIR=$W/cache
REPO=$W/cbfs-repo
PREPO=$W/pgbr
PCONF=$W/pgbackrest.conf
LP=$(free_port)
RP=$(free_port)
mkdir -p "$REPO" "$PREPO"
chown postgres: "$W" "$W/log" "$W/sock" "$W/cache" "$REPO" "$PREPO" "$W/pgbr-log" "$W/pgbr-lock"
{
	pgbr_global "$PREPO"
	printf '%s\n' "archive-timeout=300" "[main]" "pg1-path=$W/leader" "pg1-port=$LP" \
		"pg1-socket-path=$W/sock"
} >"$PCONF"
chmod 644 "$PCONF"
as_pg "$CBFS" init "$REPO" >/dev/null

note "leader: pgbench -i -s $SCALE"
as_pg "$PGBIN/initdb" -k -D "$W/leader" -U postgres -A trust >/dev/null
cat >>"$W/leader/postgresql.conf" <<EOF
archive_mode = on
archive_command = '$CBFS wal-push $REPO %p && pgbackrest --config=$PCONF --stanza=main archive-push %p'
max_wal_size = 4GB
checkpoint_timeout = 30min
wal_keep_size = 1GB
EOF
pg_up "$W/leader" "$LP"
as_pg pgbackrest --config="$PCONF" --stanza=main stanza-create >/dev/null
t0=$(now)
as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$LP" -i -s "$SCALE" -q postgres >/dev/null 2>&1
psql_at "$LP" postgres "vacuum (freeze, analyze)" >/dev/null
psql_at "$LP" postgres "checkpoint" >/dev/null
SIZE=$(psql_at "$LP" postgres "select pg_database_size('postgres')")
note "loaded in $(since "$t0") s: $(numfmt --to=iec "$SIZE")"

note "replica (pg_basebackup), backups by both tools"
as_pg "$PGBIN/pg_basebackup" -h "$W/sock" -p "$LP" -U postgres -D "$W/replica" -R -X stream -c fast
pg_up "$W/replica" "$RP"
t0=$(now)
"$CBFS" backup "$REPO" --pgdata "$W/leader" --dbname "host=$W/sock port=$LP user=postgres dbname=postgres" --jobs "$JOBS" >/dev/null
T_CBFS_BACKUP=$(since "$t0")
t0=$(now)
as_pg pgbackrest --config="$PCONF" --stanza=main --type=full backup >/dev/null
T_PGBR_BACKUP=$(since "$t0")
note "backups: cbfs $T_CBFS_BACKUP s, pgBackRest $T_PGBR_BACKUP s"

PCI="host=$W/sock port=$LP user=postgres application_name=bench"

# until the server on DIR:PORT streams with the leader's WAL at the start
# of the wait replayed
wait_streaming() {
	local port=$1 target
	target=$(psql_at "$LP" postgres "select pg_current_wal_lsn()")
	until [[ $(psql_at "$port" postgres "select pg_last_wal_replay_lsn() >= '$target' and exists (select from pg_stat_wal_receiver where status = 'streaming')" 2>/dev/null) == t ]]; do
		sleep 0.1
	done
}

quiet() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	wait_quiet "$QUIET_WAIT"
}

new_replica() { # TOOL RUN: the time to a streaming replica
	local tool=$1 d=$W/new-$1-$2 port t0
	port=$(free_port)
	rm -rf "$d"
	quiet
	t0=$(now)
	case $tool in
	cbfs)
		"$CBFS" restore "$REPO@latest" "$d" --standby --primary-conninfo "$PCI" --jobs "$JOBS" >/dev/null
		;;
	basebackup)
		as_pg "$PGBIN/pg_basebackup" -h "$W/sock" -p "$LP" -U postgres -D "$d" -R -X stream -c fast
		;;
	pgbackrest)
		mkdir -p "$d" && chown postgres: "$d" && chmod 700 "$d"
		as_pg pgbackrest --config="$PCONF" --stanza=main --pg1-path="$d" --type=standby \
			--recovery-option="primary_conninfo=$PCI" restore >/dev/null
		;;
	esac
	pg_up "$d" "$port"
	wait_streaming "$port"
	echo "$(since "$t0")"
	pg_down "$d"
	rm -rf "$d"
}

declare -A T
for ((run = 1; run <= RUNS; run++)); do
	part 1 || break
	for tool in cbfs basebackup pgbackrest; do
		note "run $run: new replica with $tool"
		T[replica - $tool - $run]=$(new_replica "$tool" "$run")
	done
done

if part 2; then
# ---- re-seeding a former leader
note "former leader: the backup restored, promoted, 2% of its pages changed"
FORMER=$W/former-a
"$CBFS" restore "$REPO@latest" "$FORMER" >/dev/null
FP=$(free_port)
pg_up "$FORMER" "$FP"
until [[ $(psql_at "$FP" postgres "select pg_is_in_recovery()") == f ]]; do sleep 0.2; done
PAGES=$(psql_at "$FP" postgres "select pg_relation_size('pgbench_accounts') / 8192")
# 2% of the database's pages: heap pages of pgbench_accounts, each whose
# rows are all updated (new versions go to other pages: about twice that
# written, plus index pages)
CHANGE=$((SIZE / 8192 / 100))
psql_at "$FP" postgres "
	update pgbench_accounts set abalance = abalance + 1
	where ctid = any (array(
		select format('(%s,%s)', p, i)::tid
		from (select (random() * ($PAGES - 1))::int p from generate_series(1, $CHANGE)) pp,
		     generate_series(1, 70) i))" >/dev/null
psql_at "$FP" postgres "checkpoint" >/dev/null
pg_down "$FORMER"
CHANGED=$(du -sb "$FORMER" | cut -f1)
note "changed about $CHANGE pages of $((SIZE / 8192))"

for ((run = 1; run <= RUNS; run++)); do
	rm -rf "$W/former-b" "$W/former-c"
	cp -a "$FORMER" "$W/former-b"
	cp -a "$FORMER" "$W/former-c"
	quiet
	note "run $run: cbfs restore --delta"
	t0=$(now)
	"$CBFS" restore "$REPO@latest" "$W/former-b" --delta --jobs "$JOBS" >"$W/log/delta-$run.out"
	T[delta - cbfs - $run]=$(since "$t0")
	quiet
	note "run $run: pgbackrest restore --delta"
	t0=$(now)
	as_pg pgbackrest --config="$PCONF" --stanza=main --pg1-path="$W/former-c" --delta restore >/dev/null
	T[delta - pgbackrest - $run]=$(since "$t0")
	rm -rf "$W/full-$run"
	quiet
	note "run $run: cbfs full restore"
	t0=$(now)
	"$CBFS" restore "$REPO@latest" "$W/full-$run" --jobs "$JOBS" >/dev/null
	T[full - cbfs - $run]=$(since "$t0")
	rm -rf "$W/full-$run"
	mkdir -p "$W/full-$run" && chown postgres: "$W/full-$run" && chmod 700 "$W/full-$run"
	quiet
	note "run $run: pgbackrest full restore"
	t0=$(now)
	as_pg pgbackrest --config="$PCONF" --stanza=main --pg1-path="$W/full-$run" restore >/dev/null
	T[full - pgbackrest - $run]=$(since "$t0")
	rm -rf "$W/full-$run"
done
# the delta-restored copy starts and holds the backup's data
DP=$(free_port)
pg_up "$W/former-b" "$DP"
until [[ $(psql_at "$DP" postgres "select pg_is_in_recovery()") == f ]]; do sleep 0.2; done
[[ $(psql_at "$DP" postgres "select sum(abalance) from pgbench_accounts") == 0 ]] ||
	die "the delta-restored copy does not hold the backup's data"
pg_down "$W/former-b"

fi

# ---- the leader's reads during a backup from the replica
# leader_io FIELD: the sum of FIELD (rchar: every byte read, page cache
# included; read_bytes: read from storage) over the leader's processes
leader_io() {
	local pm p sum=0
	pm=$(head -n 1 "$W/leader/postmaster.pid")
	for p in $pm $(pgrep -P "$pm"); do
		sum=$((sum + $(awk -v f="$1:" '$1 == f { print $2 }' "/proc/$p/io" 2>/dev/null || echo 0)))
	done
	echo "$sum"
}
if part 3; then
	quiet
	c0=$(leader_io rchar) s0=$(leader_io read_bytes)
	t0=$(now)
	"$CBFS" backup "$REPO" --pgdata "$W/replica" --dbname "host=$W/sock port=$RP user=postgres dbname=postgres" --jobs "$JOBS" >"$W/log/standby-backup.out" 2>&1
	T_STANDBY_BACKUP=$(since "$t0")
	c1=$(leader_io rchar) s1=$(leader_io read_bytes)
	sleep "${T_STANDBY_BACKUP%.*}"
	c2=$(leader_io rchar) s2=$(leader_io read_bytes)
	# the files cbfs opens, traced (untimed): none may be the leader's
	strace -f -qq -e trace=openat -o "$W/log/standby-backup.strace" \
		"$CBFS" backup "$REPO" --pgdata "$W/replica" --dbname "host=$W/sock port=$RP user=postgres dbname=postgres" --jobs "$JOBS" >/dev/null 2>&1
	OPENED_LEADER=$(grep -c "\"$W/leader/" "$W/log/standby-backup.strace" || true)
	OPENED_REPLICA=$(grep -c "\"$W/replica/" "$W/log/standby-backup.strace" || true)
fi

# ---- figures
echo
echo "patroni: pgbench scale $SCALE ($(numfmt --to=iec "$SIZE")), JOBS=$JOBS, $(nproc) cores"
echo "backups of the leader: cbfs $T_CBFS_BACKUP s, pgBackRest $T_PGBR_BACKUP s"
for ((run = 1; run <= RUNS; run++)); do
	if part 1; then
		printf 'run %d: new streaming replica: cbfs %s s, pg_basebackup %s s, pgBackRest %s s\n' "$run" \
			"${T[replica - cbfs - $run]}" "${T[replica - basebackup - $run]}" "${T[replica - pgbackrest - $run]}"
	fi
	if part 2; then
		printf 'run %d: re-seed after 2%% changed: cbfs --delta %s s (%.0f%% of its full restore %s s), pgBackRest --delta %s s (full %s s)\n' \
			"$run" "${T[delta - cbfs - $run]}" \
			"$(awk -v a="${T[delta - cbfs - $run]}" -v b="${T[full - cbfs - $run]}" 'BEGIN { print 100 * a / b }')" \
			"${T[full - cbfs - $run]}" "${T[delta - pgbackrest - $run]}" "${T[full - pgbackrest - $run]}"
		echo "         $(head -n 1 "$W/log/delta-$run.out")"
	fi
done
if part 3; then
	printf 'backup from the replica: %s s; the leader'"'"'s processes meanwhile: %s bytes read from storage, %s bytes read in all (WAL streamed and archived included); in as long with no backup: %s and %s\n' \
		"$T_STANDBY_BACKUP" "$((s1 - s0))" "$((c1 - c0))" "$((s2 - s1))" "$((c2 - c1))"
	printf 'files cbfs opened (traced run): %s under the replica'"'"'s data directory, %s under the leader'"'"'s\n' \
		"$OPENED_REPLICA" "$OPENED_LEADER"
fi
