#!/usr/bin/env bash
# Power cuts (issue 17, item 3).  The overlay of a mount, then a local
# repository, sit on lazyfs (tests/tools/lazyfs.c): a FUSE file system
# that keeps written data in memory until it is synced and drops all of it
# on SIGUSR1, as a power cut does.
#
# Overlay: each trial mounts the backup with the overlay on lazyfs, starts
# PostgreSQL (recovering from the last cut), checks that every commit a
# client saw acknowledged is there, pgbench's balances agree and amcheck
# is clean, then runs pgbench and a committing client and cuts the power
# at a random moment: lazyfs drops what was not synced, everything is
# killed -9, the mounts go.  CBFS_POWERCUT_TRIALS trials (default 4;
# bench/powercut.sh runs 50 and more).
#
# Repository: wal-push of segments one after another and a backup run on a
# repository on lazyfs until the power is cut; then every segment wal-push
# acknowledged is there as it was, check is clean once the archiver has
# pushed the rest again, the earlier backup restores as before, and the
# next backup succeeds.  CBFS_POWERCUT_REPO_TRIALS cuts (default 2).
source "$(dirname "$0")/lib.sh"
need_mount
[[ -x ${LAZYFS:-} ]] || bail "LAZYFS is not set (run through meson test)"
TRIALS=${CBFS_POWERCUT_TRIALS:-4}

# lazy_up NAME: lazyfs over $TMP/NAME.back on $TMP/NAME (pid in LZPID[NAME]).
declare -A LZPID
lazy_up() {
	local i
	mkdir -p "$TMP/$1.back" "$TMP/$1"
	"$LAZYFS" "$TMP/$1.back" "$TMP/$1" -f 2>>"$TMP/$1.lazyfs.log" &
	LZPID[$1]=$!
	_bg_pids+=("${LZPID[$1]}")
	for ((i = 0; i < 100; i++)); do
		is_mounted "$TMP/$1" && return 0
		sleep 0.05
	done
	bail "lazyfs did not mount on $TMP/$1"
}
# lazy_cut NAME: the power cut: unsynced data dropped, every later request EIO.
lazy_cut() { kill -USR1 "${LZPID[$1]}"; }
# lazy_down NAME: unmounts it (what it held unsynced is gone with it).
lazy_down() {
	fusermount3 -u -z "$TMP/$1" 2>/dev/null
	kill "${LZPID[$1]}" 2>/dev/null
	wait_gone "${LZPID[$1]}" 10 || kill -9 "${LZPID[$1]}" 2>/dev/null
}
at_exit fusermount3 -u -z "$TMP/lz"
at_exit fusermount3 -u -z "$TMP/lzrepo"

REPO=$TMP/repo
repo_init "$REPO"
pg_init src
pg_archive src "$REPO"
pg_start src || bail "could not start cluster src"
{
	pgbench_as src -i -s 2 -q postgres &&
		psql_as src postgres "create table acked (id int primary key, at timestamptz default now())"
} >/dev/null 2>&1 || bail "could not create the data"
backup src "$REPO" b1 || bail "the backup failed"

# ---------------------------------------------------------------- the overlay
MNT=$(datadir m)
mkdir -p "$MNT"
: >"$TMP/acked.list"
next_id=1
# acker: inserts ids one by one, each in its own transaction; an id goes to
# acked.list only once its commit was acknowledged.
acker() {
	local i=$1
	while :; do
		psql_as m postgres "insert into acked (id) values ($i)" >/dev/null 2>&1 || break
		echo "$i" >>"$TMP/acked.list"
		i=$((i + 1))
	done
}

# check_m TRIAL: what a recovered server must hold.
check_m() {
	local missing sums
	missing=$(psql_as m postgres "
		select count(*) from unnest(string_to_array('$(paste -sd, "$TMP/acked.list")', ',')::int[]) a(id)
		where a.id is not null and not exists (select 1 from acked where acked.id = a.id)" 2>&1)
	is "$missing" 0 "trial $1: every acknowledged commit is there ($(wc -l <"$TMP/acked.list") in all)"
	sums=$(psql_as m postgres "
		select (select sum(abalance) from pgbench_accounts) = (select sum(bbalance) from pgbench_branches)
		   and (select sum(bbalance) from pgbench_branches) = (select sum(tbalance) from pgbench_tellers)
		   and (select sum(tbalance) from pgbench_tellers) = (select coalesce(sum(delta), 0) from pgbench_history)" 2>&1)
	is "$sums" t "trial $1: pgbench's balances agree with its history"
	amcheck_ok m postgres
}

lazy_up lz
for ((trial = 1; trial <= TRIALS; trial++)); do
	cbfs_mount "$REPO@b1" "$MNT" -o "uid=postgres,gid=postgres,overlay=$TMP/lz/ov"
	((RC == 0)) || {
		fail "trial $trial: mount with the overlay on lazyfs" "$ERR"
		break
	}
	if ! pg_start m || ! pg_wait_promoted m; then
		fail "trial $trial: PostgreSQL recovers on the mount after the cut" "$(tail -n 20 "$TMP/m.log")"
		break
	fi
	check_m "$trial"
	# load, then the power goes at a random moment
	acker "$next_id" &
	ACKER=$!
	pgbench_as m -n -c 2 -T 30 postgres >/dev/null 2>&1 &
	LOAD=$!
	sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.5 + 2.5 * r / 32767 }')"
	lazy_cut lz
	pg_kill9 m
	kill -9 "$(mount_daemon_pid "$MNT")" 2>/dev/null
	kill -9 "$ACKER" "$LOAD" 2>/dev/null
	wait "$ACKER" "$LOAD" 2>/dev/null
	unset "PG_PORT[m]" "PG_PID[m]"
	cbfs_umount "$MNT"
	lazy_down lz
	next_id=$(($(tail -n 1 "$TMP/acked.list" 2>/dev/null || echo 0) + 1000))
	lazy_up lz
done
# the last cut recovered too
cbfs_mount "$REPO@b1" "$MNT" -o "uid=postgres,gid=postgres,overlay=$TMP/lz/ov"
if ((RC == 0)) && pg_start m && pg_wait_promoted m; then
	check_m final
	pg_stop m
else
	fail "after the last cut PostgreSQL recovers on the mount" "$ERR" "$(tail -n 20 "$TMP/m.log")"
fi
cbfs_umount "$MNT"
lazy_down lz

# ---------------------------------------------------------------- the repository
# segments to push: copies, so that they stay as they were
mkdir -p "$TMP/segs"
for ((i = 0; i < 12; i++)); do
	psql_as src postgres "insert into acked (id) select g from generate_series($((i * 1000 + 1000000)), $((i * 1000 + 1000999))) g" >/dev/null
	seg=$(pg_switch_and_archive src) || bail "src did not archive a segment"
	cbfs wal-fetch "$REPO" "$seg" "$TMP/segs/$seg"
	((RC == 0)) || bail "could not copy $seg"
done
rm -rf "$TMP/segs/cbfs-prefetch" # wal-fetch's spool
sums() { (cd "$1" && find . -type f ! -name 'postgresql.auto.conf' -print0 | sort -z | xargs -0 sha256sum); }

lazy_up lzrepo
chown postgres: "$TMP/lzrepo"
RTRIALS=${CBFS_POWERCUT_REPO_TRIALS:-2}
for ((trial = 1; trial <= RTRIALS; trial++)); do
	LREPO=$TMP/lzrepo/r$trial
	cbfs_pg init "$LREPO"
	((RC == 0)) || bail "repository trial $trial: init failed: $ERR"
	backup src "$LREPO" r1 || bail "repository trial $trial: the first backup failed"
	rm -rf "$TMP/r1-before"
	cbfs restore "$LREPO@r1" "$TMP/r1-before" >/dev/null
	sums "$TMP/r1-before" >"$TMP/r1-before.sums"
	# wal-push of the segments one after another and a backup, cut at
	# a random moment
	: >"$TMP/pushed.list"
	(
		for f in "$TMP"/segs/[0-9A-F]*; do
			"$CBFS" wal-push "$LREPO" "$f" 2>/dev/null || break
			basename "$f" >>"$TMP/pushed.list"
		done
	) &
	PUSHER=$!
	"$CBFS" backup "$LREPO" --pgdata "$(datadir src)" --dbname "$(conninfo src)" --label r2 >/dev/null 2>&1 &
	BACKUP=$!
	sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.05 + 1.0 * r / 32767 }')"
	lazy_cut lzrepo
	kill -9 "$PUSHER" "$BACKUP" 2>/dev/null
	pkill -9 -f "wal-push $LREPO" 2>/dev/null
	wait "$PUSHER" "$BACKUP" 2>/dev/null
	lazy_down lzrepo
	lazy_up lzrepo
	bad=0
	while read -r seg; do
		cbfs wal-fetch "$LREPO" "$seg" "$TMP/fetched"
		if ((RC != 0)) || ! cmp -s "$TMP/fetched" "$TMP/segs/$seg"; then
			bad=$((bad + 1))
			diag "$seg: $RC $ERR"
		fi
	done <"$TMP/pushed.list"
	is "$bad" 0 "repository trial $trial: every segment wal-push acknowledged is there after the cut, as it was ($(wc -l <"$TMP/pushed.list") of 12)"
	# the archiver pushes the rest again; then the repository is whole
	for f in "$TMP"/segs/[0-9A-F]*; do
		cbfs wal-push "$LREPO" "$f"
		((RC == 0)) || diag "wal-push $(basename "$f") after the cut: $ERR"
	done
	cbfs check "$LREPO"
	is "$RC" 0 "repository trial $trial: check after the cut" || diag "$OUT" "$ERR"
	rm -rf "$TMP/r1-after"
	cbfs restore "$LREPO@r1" "$TMP/r1-after"
	is "$RC" 0 "repository trial $trial: the earlier backup restores after the cut"
	sums "$TMP/r1-after" >"$TMP/r1-after.sums"
	ok "repository trial $trial: ... with the same files as before" cmp -s "$TMP/r1-before.sums" "$TMP/r1-after.sums"
	backup src "$LREPO" r3 || diag "repository trial $trial: $ERR"
	rm -rf "$LREPO"
done
lazy_down lzrepo

pg_stop src
done_testing
