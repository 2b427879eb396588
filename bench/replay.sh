#!/usr/bin/env bash
# bench/replay.sh - WAL replay through a mount against local copies (issue
# 18, item 6, "bench/wal.sh" targets).  Not a test: it prints figures to
# record in RESULTS.md.
#
#   sudo bench/replay.sh                       # WORKLOADS="updates ddl init"
#
# For each workload a cluster is backed up (after pgbench -i -s SCALE), then
# writes WAL, archived with cbfs wal-push, up to a restore point:
#   updates  pgbench (the standard TPC-B-like transactions) on the backup's
#            tables: WAL of updates to files the backup holds
#   ddl      CREATE TABLE/INDEX, table rewrites (VACUUM FULL, ALTER TYPE),
#            DROP, CREATE/DROP DATABASE, over and over: WAL full of file
#            creation
#   init     pgbench -i again and again (bench/wal.sh's workload)
# and that point is recovered, the page cache dropped first, by:
#   pg_wal     a restored copy with every segment already in pg_wal
#   restored   a restored copy fetching with cbfs wal-fetch
#   mount      mount.cbfs -o passthrough (where the kernel has it)
#   mount-np   mount.cbfs -o nopassthrough (FUSE writeback cache: the
#              default for a mount that does not hydrate)
#   mount-ur, mount-np-ur  the same two over io_uring (the kernel's
#              fuse.enable_uring turned on for them, then set back), where
#              the kernel has it
# PostgreSQL's own "redo done ... elapsed" is the figure.
# Environment: WORKLOADS, SCALE (20), SEGMENTS (about 40 per workload).
set -uo pipefail
NAME=replay.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
W=${BENCH_DIR:-$HERE/work-replay}
WORKLOADS=${WORKLOADS:-updates ddl init}
SCALE=${SCALE:-20}
SEGMENTS=${SEGMENTS:-40}
need_root_and_pg
[[ -x $TOP/build/cli/cbfs ]] || die "build first (ninja -C build)"
fresh_work
MNT=$W/mnt
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_WAS=$(cat "$URING_PARAM" 2>/dev/null || true)
HOWS="pg_wal restored mount mount-np"
[[ -w $URING_PARAM ]] && HOWS+=" mount-ur mount-np-ur"
trap 'stop_servers; "$CBFS" umount "$MNT" >/dev/null 2>&1; [[ -n $URING_WAS ]] && echo "$URING_WAS" >"$URING_PARAM"; true' EXIT
mkdir -p "$W/bin" "$W/cache" "$MNT"
cp "$TOP/build/cli/cbfs" "$TOP/build/cli/mount.cbfs" "$W/bin/"
chmod 755 "$W/bin" "$W/bin/"*
CBFS=$W/bin/cbfs
export CBFS_CACHE_DIR=$W/cache
chown postgres: "$W" "$W/cache"

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
redo() { sed -n 's/.*redo done at .* elapsed: \([0-9.]*\) s.*/\1/p' "$1" | tail -n 1; }
wait_promoted() {
	local i
	for ((i = 0; i < 6000; i++)); do
		[[ $(psql_at "$1" postgres "select pg_is_in_recovery()" 2>/dev/null) == f ]] && return 0
		sleep 0.1
	done
	return 1
}
segno() { echo $((16#${1:8:8} * 256 + 16#${1:16:8})); }

# workload PORT KIND: one round of WAL
workload() {
	local p=$1
	case $2 in
	updates) as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$p" -n -c 4 -t 2000 postgres >/dev/null 2>&1 ;;
	init) as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$p" -i -q -s 10 postgres >/dev/null 2>&1 ;;
	ddl)
		psql_at "$p" postgres "create database scratch" >/dev/null
		for i in 1 2 3 4; do
			# on standard input: each statement its own transaction (VACUUM
			# refuses to run in one; psql -c would make the batch one)
			as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$W/sock" -p "$p" -d postgres >/dev/null <<-EOF || die "the ddl workload failed"
				create table d$i as select g, md5(g::text) t, g % 97 k from generate_series(1, 60000) g;
				create index on d$i (k);
				create index on d$i (t);
				vacuum full d$i;
				alter table d$i alter column k type bigint;
				create table e$i (like d$i including all);
				insert into e$i select * from d$i;
				cluster d$i using d${i}_k_idx;
				drop table e$i;
			EOF
		done
		psql_at "$p" postgres "drop table d1, d2, d3, d4" >/dev/null
		psql_at "$p" postgres "drop database scratch" >/dev/null
		;;
	esac
}

declare -A R
for kind in $WORKLOADS; do
	note "$kind: source, backup, WAL"
	SRC=$W/src-$kind
	REPO=$W/repo-$kind
	"$CBFS" init "$REPO" >/dev/null && chown -R postgres: "$REPO"
	as_pg "$PGBIN/initdb" -k -D "$SRC" -U postgres -A trust >/dev/null
	printf '%s\n' "archive_mode = on" "archive_command = '$CBFS wal-push $REPO %p'" \
		"max_wal_size = 8GB" >>"$SRC/postgresql.conf"
	SP=$(free_port)
	pg_up "$SRC" "$SP"
	as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$SP" -i -q -s "$SCALE" postgres >/dev/null 2>&1
	as_pg "$CBFS" backup "$REPO" --pgdata "$SRC" --dbname "host=$W/sock port=$SP user=postgres" \
		--label base >/dev/null 2>&1 || die "backup failed"
	first=$(psql_at "$SP" postgres "select pg_walfile_name(pg_current_wal_lsn())")
	while :; do
		workload "$SP" "$kind"
		cur=$(psql_at "$SP" postgres "select pg_walfile_name(pg_current_wal_lsn())")
		(($(segno "$cur") - $(segno "$first") >= SEGMENTS)) && break
	done
	NSEG=$(($(segno "$cur") - $(segno "$first")))
	as_pg "$CBFS" restore-point "$REPO" bench_end --dbname "host=$W/sock port=$SP user=postgres" \
		--wait 600 >/dev/null || die "restore point failed"
	pg_down "$SRC"

	for how in $HOWS; do
		DIR=$W/r-$kind-$how
		case $how in
		pg_wal | restored)
			"$CBFS" restore "$REPO@bench_end" "$DIR" >/dev/null || die "restore failed"
			chown -R postgres: "$DIR"
			if [[ $how == pg_wal ]]; then
				for s in $(ls "$REPO/wal/00000001" | grep -E '^[0-9A-F]{24}$'); do
					as_pg "$CBFS" wal-fetch "$REPO" "$s" "$DIR/pg_wal/$s"
				done
				rm -rf "$DIR/pg_wal/cbfs-prefetch"
				sed -i "s/^restore_command = .*/restore_command = 'false'/" "$DIR/postgresql.auto.conf"
			fi
			;;
		mount*)
			DIR=$MNT
			opts="uid=postgres,gid=postgres,overlay=$W/ov-$kind-$how"
			if [[ $how == mount-np* ]]; then opts+=",nopassthrough"; else opts+=",passthrough"; fi
			if [[ $how == *-ur ]]; then
				echo Y >"$URING_PARAM"
				opts+=",io_uring"
			else
				opts+=",noio_uring"
			fi
			"$W/bin/mount.cbfs" "$REPO@bench_end" "$MNT" -o "$opts" || die "mount failed"
			;;
		esac
		drop_caches
		P=$(free_port)
		pg_up "$DIR" "$P"
		wait_promoted "$P" || die "$how did not promote"
		cp "$W/log/$(basename "$DIR").log" "$W/log/$kind-$how.log"
		R[$kind/$how]=$(redo "$W/log/$kind-$how.log")
		pg_down "$DIR"
		if [[ $how == mount* ]]; then
			grep -h 'FUSE' "$W/ov-$kind-$how/mount.log" | sed "s/^/   $how: /"
			"$CBFS" umount "$MNT" >/dev/null || die "umount failed"
			[[ -n $URING_WAS ]] && echo "$URING_WAS" >"$URING_PARAM"
		fi
		: >"$W/log/$(basename "$DIR").log"
		note "$kind/$how: redo ${R[$kind/$how]} s"
	done
	R[$kind/segs]=$NSEG
done

pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b }'; }
echo
echo "## replay: $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r); redo elapsed (s), PostgreSQL's figure"
best() { printf '%s\n' "$@" | awk 'NF && (b == "" || $1 < b) { b = $1 } END { print b }'; }
printf '| workload | segments | pg_wal | restored (wal-fetch) | mount, passthrough | mount, writeback cache | passthrough, io_uring | writeback cache, io_uring | best mount vs pg_wal | best mount vs restored |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for kind in $WORKLOADS; do
	b=$(best "${R[$kind/mount]}" "${R[$kind/mount-np]}" "${R[$kind/mount-ur]:-}" "${R[$kind/mount-np-ur]:-}")
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$kind" "${R[$kind/segs]}" "${R[$kind/pg_wal]}" \
		"${R[$kind/restored]}" "${R[$kind/mount]}" "${R[$kind/mount-np]}" "${R[$kind/mount-ur]:--}" \
		"${R[$kind/mount-np-ur]:--}" "$(pct "${R[$kind/pg_wal]}" "$b")" "$(pct "${R[$kind/restored]}" "$b")"
done
