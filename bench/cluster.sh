#!/usr/bin/env bash
# bench/cluster.sh - a Citus cluster brought back at a cluster restore point
# (issue 15): cbfs against pgBackRest with one stanza per node.  Not a test:
# it prints figures to record in RESULTS.md.
#
#   sudo bench/cluster.sh                    # SIZE_MB=4096 (2 GB a worker), 2 runs a side
#   sudo SIZE_MB=256 RUNS=1 bench/cluster.sh # a quick run
#
# A coordinator and two workers (Citus, PostgreSQL 15, initdb -k) whose
# archive_command feeds both tools (cbfs wal-push --node N && pgbackrest
# archive-push), a hash-distributed table of SIZE_MB of rows (random hex
# text, so about 2:1 under compression) and a small reference table.  Each
# node is backed up by each tool (cbfs backup --node, pgbackrest backup
# --type=full: timed, for information), a cluster restore point is made
# (cbfs restore-point, which calls citus_create_restore_point: both tools
# archive the same WAL), more rows are written after it, and the source is
# stopped.  Then RUNS times, alternating which goes first:
#   - cbfs mount: `cbfs mount REPO@POINT DIR --cluster --start`, then a
#     distributed query through the coordinator (every shard, by its index:
#     the rows with ids 1..100000); the time from the start of the command
#     to the answer; then, for information, a count(*) of the whole table
#     (through the mount, on the pgBackRest side from local disk; the table
#     vacuumed and frozen, the workers answer it with index-only scans of
#     the primary key's index, so it reads the indexes, not the heap);
#   - pgBackRest: the three `pgbackrest restore --type=name --target=POINT
#     --target-action=pause` at once, then what a runbook does after:
#     every node started with Citus's background work off, all paused at
#     the point, all resumed, every node's pg_dist_node rewritten, the work
#     back on, the same queries; the time to the first answer, and the
#     restore part alone;
#   - cbfs restore: `cbfs restore REPO@POINT DIR --cluster --jobs $JOBS`
#     (every node at once), against the pgBackRest restores above.
# The count is checked against the rows written before the point.
# Repository sizes: the cbfs repository against the three stanzas
# (backups and archive) of pgBackRest's.
#
# Environment: SIZE_MB=4096, RUNS=2, JOBS=2 (cbfs --jobs, pgBackRest
# process-max), FIRST=cbfs, BENCH_DIR (default bench/work-cluster),
# KEEP_WORK=1, QUIET_WAIT=60 (seconds to wait for an idle machine before
# each timed run), CBFS (binary; copied into the work directory).
set -euo pipefail

NAME=cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
W=${BENCH_DIR:-$HERE/work-cluster}
SIZE_MB=${SIZE_MB:-4096}
RUNS=${RUNS:-2}
JOBS=${JOBS:-2}
FIRST=${FIRST:-cbfs}
KEEP_WORK=${KEEP_WORK:-0}
QUIET_WAIT=${QUIET_WAIT:-60}
CBFS_SRC=${CBFS:-$TOP/build/cli/cbfs}
NODES=(coord w1 w2)

need_root_and_pg
[[ -f /usr/lib/postgresql/15/lib/citus.so ]] || die "Citus is not installed (scripts/deps)"
[[ -x $CBFS_SRC ]] || die "no cbfs binary at $CBFS_SRC (ninja -C build)"
need_tools pgbackrest time
fresh_work
trap 'stop_servers; findmnt -rn -o TARGET | grep "^$W/" | sort -r | xargs -r -n1 umount -l; [[ $KEEP_WORK == 1 ]] || rm -rf "$W"/src "$W"/r-* "$W"/m-*; true' EXIT

mkdir -p "$W/bin"
cp "$CBFS_SRC" "$W/bin/cbfs"
cp "$(dirname "$CBFS_SRC")/mount.cbfs" "$W/bin/mount.cbfs"
chmod 755 "$W/bin" "$W/bin/cbfs" "$W/bin/mount.cbfs"
CBFS=$W/bin/cbfs
export CBFS_CACHE_DIR=$W/cache

REPO=$W/cbfs-repo
PREPO=$W/pgbr
PCONF=$W/pgbackrest.conf
declare -A PORT
for n in "${NODES[@]}"; do
	PORT[$n]=$(free_port)
done
mkdir -p "$REPO" "$PREPO" "$W/src" "$W/pgbr-log" "$W/pgbr-lock" "$W/cache"
chown postgres: "$REPO" "$PREPO" "$W/src" "$W/pgbr-log" "$W/pgbr-lock"
{
	pgbr_global "$PREPO"
	echo "archive-timeout=900"
	for n in "${NODES[@]}"; do
		echo "[$n]"
		echo "pg1-path=$W/src/$n"
		echo "pg1-port=${PORT[$n]}"
		echo "pg1-socket-path=$W/sock"
	done
} >"$PCONF"
chmod 644 "$PCONF"
as_pg "$CBFS" init "$REPO" >/dev/null

# ---- the source cluster ----------------------------------------------------

note "source: a coordinator and two workers, $SIZE_MB MB of distributed rows"
for n in "${NODES[@]}"; do
	as_pg "$PGBIN/initdb" -k -D "$W/src/$n" -U postgres -A trust >/dev/null
	cat >>"$W/src/$n/postgresql.conf" <<-EOF
		shared_preload_libraries = 'citus'
		max_prepared_transactions = 20
		archive_mode = on
		archive_command = '$CBFS wal-push --node $n $REPO %p && pgbackrest --config=$PCONF --stanza=$n archive-push %p'
		max_wal_size = 4GB
		checkpoint_timeout = 30min
	EOF
	pg_up "$W/src/$n" "${PORT[$n]}"
	psql_at "${PORT[$n]}" postgres "create extension citus" >/dev/null
done
for n in "${NODES[@]}"; do # before any WAL must be archived
	as_pg pgbackrest --config="$PCONF" --stanza="$n" stanza-create >/dev/null
done
C=${PORT[coord]}
psql_at "$C" postgres "select citus_set_coordinator_host('$W/sock', $C)" >/dev/null
for n in w1 w2; do
	psql_at "$C" postgres "select citus_add_node('$W/sock', ${PORT[$n]})" >/dev/null
done
ROWS=$((SIZE_MB * 1024 * 1024 / 260))
t0=$(now)
psql_at "$C" postgres "
	create table events (id bigint primary key, at timestamptz, payload text);
	insert into events select g, now(),
		md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) ||
		md5(random()::text) || md5(random()::text)
	from generate_series(1, $ROWS) g;
	select create_distributed_table('events', 'id');
	select truncate_local_data_after_distributing_table('events');
	create table regions (code text primary key, name text);
	select create_reference_table('regions');
	insert into regions select 'r' || g, 'region ' || g from generate_series(1, 100) g;
	checkpoint" >/dev/null
note "loaded $ROWS rows in $(since "$t0") s"
# the load settled before the backups: vacuumed, frozen and analyzed, so
# that neither tool's backup is followed by autovacuum's WAL (hint bits
# with checksums on are full-page images) that the other's is not
for t in events regions; do
	psql_at "$C" postgres "vacuum (freeze, analyze) $t" >/dev/null
done
for n in "${NODES[@]}"; do
	psql_at "${PORT[$n]}" postgres "checkpoint" >/dev/null
done
for n in "${NODES[@]}"; do
	printf '   %-6s %s\n' "$n" "$(psql_at "${PORT[$n]}" postgres "select pg_size_pretty(sum(pg_database_size(datname))) from pg_database")"
done

# the archiver works through the load's WAL before the backups start (each
# segment goes to both tools, one after the other)
wait_archived() { # PORT: until the current segment's predecessor is archived
	local seg
	seg=$(psql_at "$1" postgres "select pg_walfile_name(pg_switch_wal())")
	until [[ $(psql_at "$1" postgres "select coalesce(left(last_archived_wal, 24), '') >= '$seg' from pg_stat_archiver") == t ]]; do
		sleep 1
	done
}
t0=$(now)
for n in "${NODES[@]}"; do
	wait_archived "${PORT[$n]}"
done
note "the load's WAL archived by both tools in $(since "$t0") s"

# ---- backups ----------------------------------------------------------------

declare -A BT
for n in "${NODES[@]}"; do
	t0=$(now)
	"$CBFS" backup "$REPO" --node "$n" --pgdata "$W/src/$n" --dbname "host=$W/sock port=${PORT[$n]} user=postgres dbname=postgres" --jobs "$JOBS" >/dev/null
	BT[cbfs - $n]=$(since "$t0")
	t0=$(now)
	as_pg pgbackrest --config="$PCONF" --stanza="$n" --type=full backup >/dev/null
	BT[pgbr - $n]=$(since "$t0")
	note "backups of $n: cbfs ${BT[cbfs - $n]} s, pgBackRest ${BT[pgbr - $n]} s"
done
psql_at "$C" postgres "insert into events select g, now(), md5(g::text) from generate_series($ROWS + 1, $ROWS + 1000) g" >/dev/null
EXPECT=$((ROWS + 1000))
"$CBFS" restore-point "$REPO" point --dbname "host=$W/sock port=$C user=postgres dbname=postgres" >/dev/null
psql_at "$C" postgres "insert into events select g, now(), md5(g::text) from generate_series($ROWS + 1001, $ROWS + 2000) g" >/dev/null
for n in "${NODES[@]}"; do
	psql_at "${PORT[$n]}" postgres "select pg_switch_wal()" >/dev/null
done
sleep 5
for n in "${NODES[@]}"; do
	pg_down "$W/src/$n"
done
CBFS_SIZE=$(du -sb "$REPO" | cut -f1)
PGBR_SIZE=$(du -sb "$PREPO" | cut -f1)
CBFS_WAL=$(du -scb "$REPO"/node/*/wal | tail -1 | cut -f1)
PGBR_WAL=$(du -sb "$PREPO/archive" | cut -f1)
note "repositories: cbfs $(numfmt --to=iec "$CBFS_SIZE"), pgBackRest $(numfmt --to=iec "$PGBR_SIZE")"

# ---- the timed runs -----------------------------------------------------------

first_query() { # DIR PORT: the first distributed query, through the coordinator
	as_pg "$PGBIN/psql" -X -q -A -t -h "$1" -p "$2" -d postgres -c "select count(*) from events where id between 1 and 100000"
}
count_at() { # DIR PORT: the distributed count of every row
	as_pg "$PGBIN/psql" -X -q -A -t -h "$1" -p "$2" -d postgres -c "select count(*) from events"
}

run_cbfs_mount() {
	local m=$W/m-$1 t0 out port n
	mkdir -p "$m"
	t0=$(now)
	out=$("$CBFS" mount "$REPO@point" "$m" --cluster --start)
	T_MOUNT_UP+=("$(since "$t0")")
	port=$(sed -n 's/^coordinator: host=.* port=//p' <<<"$out")
	n=$(first_query "$m/.cbfs" "$port")
	T_MOUNT+=("$(since "$t0")")
	[[ $n == 100000 ]] || die "cbfs mount: first query $n, expected 100000"
	t0=$(now)
	n=$(count_at "$m/.cbfs" "$port")
	T_MOUNT_SCAN+=("$(since "$t0")")
	[[ $n == "$EXPECT" ]] || die "cbfs mount: count $n, expected $EXPECT"
	"$CBFS" umount "$m"
	rm -rf "$m"
}

run_pgbr() {
	local r=$W/r-pgbr-$1 t0 t1 n pids=() port
	declare -A P
	mkdir -p "$r" && chown postgres: "$r" && chmod 700 "$r"
	t0=$(now)
	for n in "${NODES[@]}"; do
		mkdir -p "$r/$n" && chown postgres: "$r/$n" && chmod 700 "$r/$n"
		as_pg pgbackrest --config="$PCONF" --stanza="$n" --pg1-path="$r/$n" --type=name \
			--target=point --target-action=pause restore >/dev/null &
		pids+=($!)
	done
	for p in "${pids[@]}"; do
		wait "$p" || die "pgbackrest restore failed"
	done
	T_PGBR_RESTORE+=("$(since "$t0")")
	# what a runbook does after: start with Citus's background work off,
	# all paused at the point, all resumed, every node's metadata rewritten
	for n in "${NODES[@]}"; do
		P[$n]=$(free_port)
		cat >>"$r/$n/postgresql.auto.conf" <<-EOF
			citus.recover_2pc_interval = -1
			citus.distributed_deadlock_detection_factor = -1
			citus.defer_shard_delete_interval = -1
			citus.background_task_queue_interval = -1
			archive_mode = off
		EOF
		as_pg "$PGBIN/pg_ctl" -D "$r/$n" -l "$W/log/pgbr-$n.log" -W \
			-o "-p ${P[$n]} -k $W/sock -c listen_addresses=''" start >/dev/null
		SERVERS+=("$r/$n")
	done
	for n in "${NODES[@]}"; do
		until [[ $(psql_at "${P[$n]}" postgres "select pg_get_wal_replay_pause_state()" 2>/dev/null) == paused ]]; do
			[[ -f $r/$n/postmaster.pid ]] || die "pgBackRest: $n stopped during recovery (see $W/log/pgbr-$n.log)"
			sleep 0.1
		done
	done
	for n in "${NODES[@]}"; do
		psql_at "${P[$n]}" postgres "select pg_wal_replay_resume()" >/dev/null
	done
	for n in "${NODES[@]}"; do
		until [[ $(psql_at "${P[$n]}" postgres "select pg_is_in_recovery()" 2>/dev/null) == f ]]; do
			sleep 0.1
		done
	done
	for n in "${NODES[@]}"; do
		psql_at "${P[$n]}" postgres "
			update pg_dist_node set nodeport = ${P[coord]} where groupid = 0;
			update pg_dist_node set nodeport = ${P[w1]} where nodeport = ${PORT[w1]};
			update pg_dist_node set nodeport = ${P[w2]} where nodeport = ${PORT[w2]}" >/dev/null
		for g in recover_2pc_interval distributed_deadlock_detection_factor \
			defer_shard_delete_interval background_task_queue_interval; do
			psql_at "${P[$n]}" postgres "alter system reset citus.$g" >/dev/null
		done
		psql_at "${P[$n]}" postgres "select pg_reload_conf()" >/dev/null
	done
	n=$(first_query "$W/sock" "${P[coord]}")
	T_PGBR+=("$(since "$t0")")
	[[ $n == 100000 ]] || die "pgBackRest: first query $n, expected 100000"
	t0=$(now)
	n=$(count_at "$W/sock" "${P[coord]}")
	T_PGBR_SCAN+=("$(since "$t0")")
	[[ $n == "$EXPECT" ]] || die "pgBackRest: count $n, expected $EXPECT"
	for n in "${NODES[@]}"; do
		pg_down "$r/$n"
	done
	rm -rf "$r"
}

run_cbfs_restore() {
	local r=$W/r-cbfs-$1 t0
	t0=$(now)
	"$CBFS" restore "$REPO@point" "$r" --cluster --jobs "$JOBS" >/dev/null
	T_RESTORE+=("$(since "$t0")")
	"$CBFS" umount "$r" >/dev/null 2>&1 || true
	rm -rf "$r"
}

T_MOUNT=() T_PGBR=() T_PGBR_RESTORE=() T_RESTORE=() T_MOUNT_SCAN=() T_PGBR_SCAN=() T_MOUNT_UP=()
for ((run = 1; run <= RUNS; run++)); do
	# FIRST first in odd runs, second in even ones
	if { [[ $FIRST == cbfs ]] && ((run % 2 == 1)); } || { [[ $FIRST != cbfs ]] && ((run % 2 == 0)); }; then
		order="cbfs pgbr"
	else
		order="pgbr cbfs"
	fi
	for side in $order; do
		sync
		echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
		wait_quiet "$QUIET_WAIT"
		if [[ $side == cbfs ]]; then
			note "run $run: cbfs mount --cluster --start + query"
			run_cbfs_mount "$run"
			note "run $run: cbfs restore --cluster"
			run_cbfs_restore "$run"
		else
			note "run $run: pgBackRest restore x3 + recovery + query"
			run_pgbr "$run"
		fi
	done
done

# ---- the figures -----------------------------------------------------------

echo
echo "cluster: coordinator + 2 workers, $SIZE_MB MB of rows ($ROWS), JOBS=$JOBS, $(nproc) cores"
for n in "${NODES[@]}"; do
	printf 'backup %-6s cbfs %6s s   pgBackRest %6s s\n' "$n" "${BT[cbfs - $n]}" "${BT[pgbr - $n]}"
done
printf 'repository: cbfs %s (%d B), pgBackRest 3 stanzas %s (%d B): %.1f%%\n' \
	"$(numfmt --to=iec "$CBFS_SIZE")" "$CBFS_SIZE" "$(numfmt --to=iec "$PGBR_SIZE")" "$PGBR_SIZE" \
	"$(awk -v a="$CBFS_SIZE" -v b="$PGBR_SIZE" 'BEGIN { print 100 * a / b }')"
printf 'of which WAL: cbfs %s, pgBackRest %s; backups alone: cbfs %s, pgBackRest %s (%.1f%%)\n' \
	"$(numfmt --to=iec "$CBFS_WAL")" "$(numfmt --to=iec "$PGBR_WAL")" \
	"$(numfmt --to=iec $((CBFS_SIZE - CBFS_WAL)))" "$(numfmt --to=iec $((PGBR_SIZE - PGBR_WAL)))" \
	"$(awk -v a=$((CBFS_SIZE - CBFS_WAL)) -v b=$((PGBR_SIZE - PGBR_WAL)) 'BEGIN { print 100 * a / b }')"
for ((i = 0; i < RUNS; i++)); do
	printf 'run %d: point -> first query: cbfs mount %s s (cluster up in %s s), pgBackRest %s s (%.1fx); restore: cbfs --cluster %s s, pgBackRest x3 in parallel %s s (%.2fx); then count(*) of every row: cbfs mount %s s, pgBackRest (local disk) %s s\n' \
		$((i + 1)) "${T_MOUNT[i]}" "${T_MOUNT_UP[i]}" "${T_PGBR[i]}" \
		"$(awk -v a="${T_PGBR[i]}" -v b="${T_MOUNT[i]}" 'BEGIN { print a / b }')" \
		"${T_RESTORE[i]}" "${T_PGBR_RESTORE[i]}" \
		"$(awk -v a="${T_PGBR_RESTORE[i]}" -v b="${T_RESTORE[i]}" 'BEGIN { print a / b }')" \
		"${T_MOUNT_SCAN[i]}" "${T_PGBR_SCAN[i]}"
done
