#!/usr/bin/env bash
# Backups from a streaming standby (issue 16, item 1): the standby's data
# directory and its own pg_backup_start/stop, its WAL copied from its pg_wal
# although it does not archive, backup_label "BACKUP FROM: standby"; the
# copy restores and mounts as a primary's does, consistent (pgbench's
# balances equal its history), and never connects to the live primary.  A
# standby that does not stream, or that does not receive the WAL the backup
# ends in, fails with one line and nothing written.
source "$(dirname "$0")/lib.sh"
need_mount

REPO=$TMP/repo
repo_init "$REPO"

# ---------------------------------------------------------------- a primary and its standby
pg_init p
pg_archive p "$REPO"
pg_conf p "wal_keep_size = 512MB"
pg_start p || bail "could not start the primary"
pgbench_as p -i -s 5 -q postgres >/dev/null 2>&1 || bail "pgbench -i failed"
sql p postgres "create table marker (id int primary key, phase text);
	insert into marker values (1, 'before the backups')" >/dev/null

runuser -u postgres -- "$PGBIN/pg_basebackup" -h "$SOCK" -p "${PG_PORT[p]}" -U postgres \
	-D "$(datadir s)" -R -X stream -c fast >"$TMP/basebackup.log" 2>&1 ||
	bail "pg_basebackup failed: $(tail -n 3 "$TMP/basebackup.log")"
pg_start s || bail "could not start the standby"
is "$(psql_as s postgres "select pg_is_in_recovery()")" t "the standby is in recovery"

# wait_replayed: until the standby has replayed what the primary wrote
wait_replayed() {
	local lsn i
	lsn=$(psql_as p postgres "select pg_current_wal_insert_lsn()")
	wait_sql s postgres "select pg_last_wal_replay_lsn() >= '$lsn'" t 60
}
wait_replayed || bail "the standby did not replay"
is "$(psql_as s postgres "select status from pg_stat_wal_receiver")" streaming \
	"the standby streams from the primary"

# ---------------------------------------------------------------- backup under load
pgbench_as p -c 2 -T 20 -n postgres >"$TMP/pgbench.log" 2>&1 &
PGBENCH=$!
sleep 2
backup s "$REPO" sb1 --jobs 2
like "$ERR" "cbfs: backup sb1 started at [0-9A-F]+/[0-9A-F]+ \\(from a standby\\)" \
	"the backup says it runs on a standby"
wait "$PGBENCH"
is "$?" 0 "pgbench ran through the backup"
cbfs info "$REPO@sb1" --json
is "$(json_get "$OUT" 'j["backup_from"]')" standby "info: backup_from is standby"
BSTOP=$(json_get "$OUT" 'j["wal_stop"]')
cbfs wal-fetch "$REPO" "$BSTOP" "$TMP/fetched-stop"
is "$RC" 0 "the WAL file the backup ends in ($BSTOP) is in the repository"

# a backup of the primary, for contrast
backup p "$REPO" pb1
cbfs info "$REPO@pb1" --json
is "$(json_get "$OUT" 'j["backup_from"]')" primary "info: backup_from is primary"

# ---------------------------------------------------------------- restored
cbfs_restore "$REPO@sb1" r || fail "restore sb1" "$ERR"
like "$(cat "$(datadir r)/backup_label")" "BACKUP FROM: standby" \
	"the restored backup_label says BACKUP FROM: standby"
ok "the copy has no standby.signal" test ! -e "$(datadir r)/standby.signal"
like "$(cat "$(datadir r)/postgresql.auto.conf")" "primary_conninfo = ''" \
	"the copy's primary_conninfo is emptied"
pg_start r || bail "the restored standby backup does not start"
pg_wait_promoted r || fail "the restored copy left recovery"
is "$(psql_as r postgres "select phase from marker where id = 1")" "before the backups" \
	"the copy has what the primary wrote before the backup"
is "$(psql_as r postgres "select (select sum(abalance) from pgbench_accounts) = (select coalesce(sum(delta), 0) from pgbench_history)")" \
	t "the copy is consistent: pgbench's balances equal its history"
cmp_ok "$(psql_as r postgres "select count(*) from pgbench_history")" -gt 0 \
	"the copy has transactions pgbench committed during the backup"
amcheck_ok r postgres
is "$(psql_as r postgres "select count(*) from pg_stat_wal_receiver")" 0 \
	"the copy runs no WAL receiver"
is "$(psql_as p postgres "select count(*) from pg_stat_replication")" 1 \
	"the primary streams to its standby only"
pg_stop r

# ---------------------------------------------------------------- mounted
MNT=$(datadir m)
mkdir -p "$MNT"
cbfs_mount "$REPO@sb1" "$MNT" -o uid=postgres,gid=postgres
is "$RC/$ERR" "0/" "mount the standby backup"
pg_start m || fail "PostgreSQL on the mounted standby backup"
pg_wait_promoted m || fail "the mounted copy left recovery"
is "$(psql_as m postgres "select (select sum(abalance) from pgbench_accounts) = (select coalesce(sum(delta), 0) from pgbench_history)")" \
	t "the mounted copy is consistent"
is "$(psql_as p postgres "select count(*) from pg_stat_replication")" 1 \
	"the primary still streams to its standby only"
pg_stop m
cbfs_umount "$MNT"

# ---------------------------------------------------------------- the primary's archiver agrees
# the standby backup stored WAL files the primary archives too: identical,
# so they are accepted
sql p postgres "select pg_switch_wal()" >/dev/null
sleep 2
is "$(psql_as p postgres "select failed_count from pg_stat_archiver")" 0 \
	"the primary's archiver never failed on WAL the standby backup copied"

# ---------------------------------------------------------------- replicas from the repository
# restore --standby: a replica that catches up from the repository and then
# streams from the primary
PCI="host=$SOCK port=${PG_PORT[p]} user=postgres application_name=s2"
cbfs_restore "$REPO@latest" s2 --standby --primary-conninfo "$PCI" ||
	fail "restore --standby" "$ERR"
ok "the replica has standby.signal" test -e "$(datadir s2)/standby.signal"
ok "... and no recovery.signal" test ! -e "$(datadir s2)/recovery.signal"
AUTO=$(cat "$(datadir s2)/postgresql.auto.conf")
like "$AUTO" "recovery_target_timeline = 'latest'" "... follows the latest timeline"
unlike_target=$(grep -c "^recovery_target\(_name\|_time\|_lsn\)\? = \|^archive_mode = 'off'" <<<"$AUTO")
is "$unlike_target" 0 "... has no recovery target and keeps archive_mode"
pg_start s2 || bail "the replica from the repository does not start"
sql p postgres "insert into marker values (2, 'after the replica was made')" >/dev/null
wait_sql s2 postgres "select phase from marker where id = 2" "after the replica was made"
is "$(psql_as s2 postgres "select pg_is_in_recovery()")" t "the replica stays in recovery"
is "$(psql_as s2 postgres "select phase from marker where id = 2")" "after the replica was made" \
	"... and receives what the primary writes"
is "$(psql_as p postgres "select count(*) from pg_stat_replication where application_name = 's2'")" 1 \
	"... streaming from the primary"
pg_stop s2

# as Patroni calls it: REPO --scope --datadir --role --connstring; the
# recovery settings are Patroni's (none in postgresql.auto.conf, which would
# override the ones Patroni writes at every role change)
cbfs restore "$REPO@latest" --scope=demo "--datadir=$(datadir s3)" --role=replica \
	"--connstring=host=$SOCK port=${PG_PORT[p]}" --delta=True
is "$RC/$ERR" "0/" "restore as a Patroni create_replica_methods command"
ok "... standby.signal written" test -e "$(datadir s3)/standby.signal"
is "$(grep -c 'added by cbfs' "$(datadir s3)/postgresql.auto.conf")" 0 \
	"... no recovery settings of cbfs's in postgresql.auto.conf"
chown -R postgres: "$(datadir s3)"
# what Patroni writes into postgresql.conf
pg_conf s3 "primary_conninfo = 'host=$SOCK port=${PG_PORT[p]} user=postgres application_name=s3'" \
	"restore_command = '$CBFS wal-fetch $REPO %f %p'" "recovery_target_timeline = 'latest'"
pg_start s3 || fail "the Patroni-style replica starts"
wait_sql p postgres "select count(*) from pg_stat_replication where application_name = 's3'" 1
is "$(psql_as p postgres "select count(*) from pg_stat_replication where application_name = 's3'")" 1 \
	"... and streams with the settings Patroni gives it"
pg_stop s3

cbfs restore-point "$REPO" rp1 --dbname "$(conninfo p)"
cbfs restore "$REPO@rp1" "$TMP/nostandby" --standby
check_error "--standby with a recovery target" 2 \
	"cbfs: --standby cannot be combined with a recovery target (\"rp1\")"
ok "... nothing written" test ! -e "$TMP/nostandby"
cbfs restore "$REPO@latest" "$TMP/nostandby" --standby --target-action pause
check_error "--standby with --target-action" 2 \
	$'cbfs: --standby cannot be combined with --target-action\nTry "cbfs restore --help" for more information.'
cbfs restore "$REPO@latest" "$TMP/nostandby" --primary-conninfo "host=x"
check_error "--primary-conninfo without --standby" 2 \
	$'cbfs: --primary-conninfo and --primary-slot-name need --standby\nTry "cbfs restore --help" for more information.'
cbfs restore "$REPO@latest" --scope=demo "--datadir=$TMP/nostandby" --role=master
check_error "a role that is not replica" 2 \
	$'cbfs: invalid value for --role: "master" (replica)\nTry "cbfs restore --help" for more information.'
ok "... nothing written" test ! -e "$TMP/nostandby"

# ---------------------------------------------------------------- an idle primary
# the standby's last WAL file completes when cbfs asks the primary to switch
backup s "$REPO" sb2 --standby-timeout 60

# a role that may back up but not switch WAL: the idle primary's WAL file
# never completes on the standby
sql p postgres "create role bk login replication in role pg_read_all_settings;
	grant execute on function pg_backup_start(text, boolean) to bk;
	grant execute on function pg_backup_stop(boolean) to bk;
	grant execute on function pg_control_system() to bk" >/dev/null
wait_replayed
before=$(labels "$REPO" | tr '\n' ' ')
cbfs backup "$REPO" --pgdata "$(datadir s)" --dbname "host=$SOCK port=${PG_PORT[s]} user=bk dbname=postgres" \
	--label sb3 --standby-timeout 3
is "$RC" 4 "a standby that does not receive the backup's last WAL: exit 4"
like "${ERR##*$'\n'}" "^cbfs: cannot back up: the standby did not receive WAL up to [0-9A-F]+/[0-9A-F]+ within 3 s \\(received up to [0-9A-F]+/[0-9A-F]+\\)$" \
	"... one line naming the LSN waited for and the time"
is "$(labels "$REPO" | tr '\n' ' ')" "$before" "... and no backup is stored"
is "$(ls "$REPO/running" 2>/dev/null)" "" "... nor a registration left"

# ---------------------------------------------------------------- not streaming
pg_stop p
cbfs backup "$REPO" --pgdata "$(datadir s)" --dbname "$(conninfo s)" --label sb4 --standby-timeout 2
is "$RC" 4 "a standby that does not stream: exit 4"
like "$ERR" "^cbfs: cannot back up: the standby is not streaming from its primary \\(WAL receiver: [a-z ]+; waited 2 s\\)$" \
	"... one line with the receiver's state and the time waited"
is "$(labels "$REPO" | tr '\n' ' ')" "$before" "... and no backup is stored"
cbfs backup "$REPO" --pgdata "$(datadir s)" --standby-timeout x
check_error "a malformed --standby-timeout" 2 \
	$'cbfs: invalid value for --standby-timeout: "x"\nTry "cbfs backup --help" for more information.'
pg_stop s

done_testing
