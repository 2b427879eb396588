#!/usr/bin/env bash
# Point in time (issue 4): restore points, time and LSN targets, through a
# restored and a mounted copy; refusals that say what is available; a
# corrupt WAL object stops recovery instead of ending it early in silence.
source "$(dirname "$0")/lib.sh"
need_mount

REPO=$TMP/repo
repo_init "$REPO"
pg_init a
pg_archive a "$REPO"
pg_start a || bail "could not start cluster a"
psql_as a postgres "create table t (id int primary key, phase text);
	insert into t values (1, 'before-backup')" >/dev/null || bail "could not create the table"
backup a "$REPO" b1 || bail "the backup failed"

# ---------------------------------------------------------------- the history
psql_as a postgres "insert into t values (2, 'before-point')" >/dev/null
cbfs restore-point "$REPO" p1 --dbname "$(conninfo a)"
is "$RC" 0 "cbfs restore-point p1"
P1SEG=$(sed -n 's/.*WAL file \([0-9A-F]\{24\}\)).*/\1/p' <<<"$OUT")
like "$OUT" "^restore point p1 created at [0-9A-F]+/[0-9A-F]+ \\(timeline 1, WAL file 0000000100000000000000[0-9A-F]{2}\\)$" \
	"restore-point prints the point's LSN, timeline and WAL file"
cbfs restore-point "$REPO" p1 --dbname "$(conninfo a)"
check_error "a duplicate restore point name is refused" 6 \
	"cbfs: restore point \"p1\" already exists in repository \"$REPO\""
cbfs restore-point "$REPO" b1 --dbname "$(conninfo a)"
check_error "a restore point named like a backup is refused" 6 \
	"cbfs: \"b1\" is already the label of a backup in repository \"$REPO\""

psql_as a postgres "insert into t values (3, 'before-time')" >/dev/null
sleep 1.2
T=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
sleep 1.2
psql_as a postgres "insert into t values (4, 'before-lsn')" >/dev/null
L=$(psql_as a postgres "select pg_current_wal_insert_lsn()")
psql_as a postgres "insert into t values (5, 'after-lsn')" >/dev/null
LASTSEG=$(pg_switch_and_archive a) || bail "the last segment was not archived"
sleep 1.2
T2=$(date -u +%Y-%m-%dT%H:%M:%SZ) # after the last transaction archived

cbfs list "$REPO" --json --points
is "$(json_get "$OUT" '" ".join(p["name"] for p in j)')" p1 "cbfs list --json --points shows the point"
cbfs list "$REPO"
like "$OUT" "p1" "cbfs list shows the point"

# rows PORT-NAME: the phases present in a copy
rows() { sql "$1" postgres "select string_agg(id::text, ',' order by id) from t"; }

# ---------------------------------------------------------------- restored copies
check_restored() { # NAME SPEC EXPECTED WHAT [restore option...]
	local name=$1 spec=$2 want=$3 what=$4
	shift 4
	cbfs_restore "$spec" "$name" "$@"
	is "$RC/$ERR" "0/" "restore $spec"
	if pg_start "$name" && pg_wait_promoted "$name"; then
		is "$(rows "$name")" "$want" "$what"
		ok "$name: no prefetched WAL left behind after promotion (recovery_end_command)" \
			test ! -e "$(datadir "$name")/pg_wal/cbfs-prefetch"
		pg_stop "$name"
	else
		fail "$what" "$(tail -n 20 "$TMP/$name.log")"
	fi
}
check_restored r1 "$REPO@p1" 1,2 "restored @p1: rows committed before the point, none after"
ok "r1 asks for recovery_target_name = 'p1'" \
	grep -q "^recovery_target_name = 'p1'" "$(datadir r1)/postgresql.auto.conf"
check_restored r2 "$REPO@$T" 1,2,3 "restored @time: rows committed before the time, none after"
check_restored r3 "$REPO@lsn:$L" 1,2,3,4 "restored @lsn:$L: rows before the LSN, none after"

# pause instead of promote
cbfs_restore "$REPO@p1" r4 --target-action=pause
is "$RC" 0 "restore @p1 --target-action=pause"
if pg_start r4; then
	for ((i = 0; i < 120; i++)); do
		[[ $(psql_as r4 postgres "select pg_get_wal_replay_pause_state()" 2>/dev/null) == paused ]] && break
		sleep 0.5
	done
	is "$(psql_as r4 postgres "select pg_get_wal_replay_pause_state()")" paused "the copy pauses at the point"
	is "$(psql_as r4 postgres "select pg_is_in_recovery()")" t "and stays in recovery"
	is "$(rows r4)" 1,2 "paused @p1: the rows before the point"
	pg_stop r4 immediate
fi

# ---------------------------------------------------------------- mounted copies
check_mounted() { # NAME SPEC EXPECTED WHAT
	local name=$1 spec=$2 want=$3 what=$4 mnt
	mnt=$(datadir "$name")
	mkdir -p "$mnt"
	cbfs_mount "$spec" "$mnt" -o uid=postgres,gid=postgres
	is "$RC/$ERR" "0/" "mount $spec"
	if pg_start "$name" && pg_wait_promoted "$name"; then
		is "$(rows "$name")" "$want" "$what"
		ok "$name: no prefetched WAL left behind after promotion (recovery_end_command)" \
			test ! -e "$mnt/pg_wal/cbfs-prefetch"
		pg_stop "$name"
	else
		fail "$what" "$(tail -n 20 "$TMP/$name.log")"
	fi
	cbfs_umount "$mnt"
}
check_mounted m1 "$REPO@p1" 1,2 "mounted @p1: rows committed before the point, none after"
check_mounted m2 "$REPO@lsn:$L" 1,2,3,4 "mounted @lsn:$L: rows before the LSN, none after"

# ---------------------------------------------------------------- refusals
cbfs info "$REPO@b1" --json
stop_time=$(json_get "$OUT" 'j["stop_time"]')
stop_lsn=$(json_get "$OUT" 'j["stop_lsn"]')
cbfs restore "$REPO@2020-01-01T00:00:00Z" "$TMP/x1"
check_error "a time before the first backup is refused" 7 \
	"cbfs: point \"2020-01-01T00:00:00Z\" is before the first backup (the earliest, \"b1\", ends at $stop_time, LSN $stop_lsn)"
cbfs restore "$REPO@lsn:FF/0" "$TMP/x1"
check_error "an LSN beyond the archived WAL is refused" 7 \
	"cbfs: point \"lsn:FF/0\" is beyond the archived WAL: WAL file \"00000001000000FE000000FF\" is not in repository \"$REPO\""
cbfs restore "$REPO@$T2" "$TMP/x1"
is "$RC" 7 "a time after the last archived transaction is refused"
like "$ERR" "^cbfs: point \"$T2\" is beyond the archived WAL: its last transaction ended at [0-9T:-]+Z \(WAL file \"$LASTSEG\"\)$" \
	"  and the message says when the last archived transaction ended, and where"
cbfs restore "$REPO@2099-01-01T00:00:00Z" "$TMP/x1"
check_error "a time in the future is refused" 7 "cbfs: point \"2099-01-01T00:00:00Z\" is in the future"
cbfs restore "$REPO@2026-11-21T10:30:00" "$TMP/x1"
check_error "a time without a zone is not a point" 7 \
	"cbfs: backup or restore point \"2026-11-21T10:30:00\" not found in repository \"$REPO\""
ok "nothing was created for refused points" test ! -e "$TMP/x1"

# ---------------------------------------------------------------- corrupt WAL
# A damaged WAL object between the backup and the point: recovery must stop
# with an error, never end early and promote a copy missing the rows.
cp -a "$REPO" "$TMP/repo2"
obj=$TMP/repo2/wal/00000001/$P1SEG
ok "the point's WAL object ($P1SEG) exists in the copy" test -f "$obj"
flip_byte "$obj" 200
mkdir -p "$TMP/f"
chown postgres "$TMP/f"
cbfs_pg wal-fetch "$TMP/repo2" "$P1SEG" "$TMP/f/fetched"
is "$RC" 5 "wal-fetch of the damaged object exits 5"
like "$ERR" "WAL file \"$P1SEG\" in repository \"$TMP/repo2\" is corrupt" "and names it"
cbfs_restore "$TMP/repo2@p1" r5
is "$RC" 0 "restore @p1 from the damaged copy (the data is fine, the WAL is not)"
port=$(free_port)
runuser -u postgres -- env CBFS_CACHE_DIR="$TMP/cache-postgres" "$PGBIN/pg_ctl" -D "$(datadir r5)" \
	-l "$TMP/r5.log" -w -t 120 -o "-p $port -k $SOCK -c listen_addresses=''" start >/dev/null 2>&1
# it may accept read-only connections once consistent, before it reaches
# the damage; then it must shut down, never promote
for ((i = 0; i < 120; i++)); do
	[[ -z $(procs_in "$(datadir r5)") ]] && break
	sleep 0.5
done
like "$(cat "$TMP/r5.log")" "is corrupt" "recovery logged the damaged WAL object"
like "$(cat "$TMP/r5.log")" "FATAL:  could not restore file \"000000010000000000000003\" from archive: child process exited with exit code 200" \
	"and stopped at it (wal-fetch's exit 200) instead of promoting without the rows"
is "$(grep -c 'database system is ready to accept connections' "$TMP/r5.log")" 0 \
	"... it never promoted"
ok "no server runs on the copy" test -z "$(procs_in "$(datadir r5)")"
ok "the copy was never promoted" bash -c "! grep -q 'archive recovery complete' '$TMP/r5.log'"

done_testing
