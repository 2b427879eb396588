#!/usr/bin/env bash
# Timelines (issue 4, item 3): a streaming replica promoted Patroni-style,
# archiving into the same repository; history files and the old timeline's
# .partial segment are archived; PITR to a time after the switch follows
# the new timeline, in a restored and in a mounted copy.
source "$(dirname "$0")/lib.sh"
need_mount

REPO=$TMP/repo
repo_init "$REPO"
pg_init a
pg_archive a "$REPO"
pg_conf a "wal_keep_size = '256MB'"
pg_start a || bail "could not start the primary"
psql_as a postgres "create table t (id int primary key, tl text);
	insert into t values (1, 'tl1-before-backup')" >/dev/null || bail "could not create the table"
backup a "$REPO" b1 || bail "the backup failed"

# a streaming replica of a, archiving into the same repository once promoted
S=$(datadir s)
runuser -u postgres -- "$PGBIN/pg_basebackup" -h "$SOCK" -p "${PG_PORT[a]}" -U postgres -D "$S" -R \
	-X stream >"$TMP/basebackup.log" 2>&1 || bail "pg_basebackup failed: $(cat "$TMP/basebackup.log")"
pg_start s || bail "could not start the replica"
is "$(psql_as s postgres "select pg_is_in_recovery()")" t "the replica is in recovery"

psql_as a postgres "insert into t values (2, 'tl1-streamed')" >/dev/null
lsn=$(psql_as a postgres "select pg_current_wal_insert_lsn()")
for ((i = 0; i < 120; i++)); do
	[[ $(psql_as s postgres "select pg_last_wal_replay_lsn() >= '$lsn'") == t ]] && break
	sleep 0.5
done
is "$(psql_as s postgres "select count(*) from t")" 2 "the replica has replayed the primary's rows"

# failover: the primary goes away, the replica is promoted
pg_stop a
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$S" -w promote >/dev/null 2>&1
ok "the replica was promoted" pg_wait_promoted s
is "$(psql_as s postgres "select left(pg_walfile_name(pg_current_wal_lsn()), 8)")" 00000002 \
	"the new primary writes timeline 2"
psql_as s postgres "insert into t values (3, 'tl2-after-failover')" >/dev/null
sleep 1.2
T=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
sleep 1.2
psql_as s postgres "insert into t values (4, 'tl2-after-target')" >/dev/null
seg=$(pg_switch_and_archive s) || bail "the new primary did not archive: $(tail -n 5 "$TMP/s.log")"
like "$seg" "^00000002" "the new primary archives timeline 2 segments ($seg)"
ok "the timeline history file is in the repository" test -f "$REPO/wal/00000002/00000002.history"
partial=$(ls "$REPO/wal/00000001/" | grep -c '\.partial$')
cmp_ok "$partial" -ge 1 "the old timeline's last segment is kept apart as .partial"
cbfs_pg wal-fetch "$REPO" 00000002.history "$TMP/h"
is "$RC/$ERR" "0/" "wal-fetch of the history file"
ok "it names timeline 1 as the parent" grep -q "^1" "$TMP/h"

# PITR to a time after the switch: backup b1 (timeline 1) + WAL across the switch
cbfs_restore "$REPO@$T" r1
is "$RC/$ERR" "0/" "restore @time after the failover"
if pg_start r1 && pg_wait_promoted r1; then
	is "$(sql r1 postgres "select string_agg(tl, ',' order by id) from t")" \
		"tl1-before-backup,tl1-streamed,tl2-after-failover" \
		"the restored copy followed timeline 2 up to the time"
	like "$(cat "$TMP/r1.log")" "restored log file \"00000002.history\"" "recovery fetched the history file"
	pg_stop r1
fi
mkdir -p "$TMP/m1"
cbfs_mount "$REPO@$T" "$TMP/m1" -o uid=postgres,gid=postgres
is "$RC/$ERR" "0/" "mount @time after the failover"
if pg_start m1 && pg_wait_promoted m1; then
	is "$(sql m1 postgres "select string_agg(tl, ',' order by id) from t")" \
		"tl1-before-backup,tl1-streamed,tl2-after-failover" \
		"the mounted copy followed timeline 2 up to the time"
	pg_stop m1
fi
cbfs_umount "$TMP/m1"

# the old primary, brought back, pushes a segment the repository already has
# from it: same content, exit 0
first=$(ls "$REPO/wal/00000001/" | grep -E '^[0-9A-F]{24}$' | head -n 1)
if [[ -f $(datadir a)/pg_wal/$first ]]; then
	cbfs_pg wal-push "$REPO" "$(datadir a)/pg_wal/$first"
	is "$RC/$ERR" "0/" "a second push of an archived segment with the same content exits 0"
else
	pass "the old primary recycled $first already (same-content pushes are covered by test-wal)"
fi

pg_stop s
done_testing
