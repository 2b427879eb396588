#!/usr/bin/env bash
# A store that goes away (issue 17, item 2): the S3 endpoint stops
# answering for 30 s (the proxy in front of it stopped with SIGSTOP:
# connections are accepted and never answered) while PostgreSQL runs on a
# mount.  Reads of cached data go on; a read that needs the store retries
# until -o store_timeout= and then fails with EIO, logged with the object,
# never wrong data; a process blocked on such a read dies at kill -9; the
# server stays up.  wal-push and wal-fetch fail within their deadline, and
# wal-fetch run in archive recovery exits with a code that stops recovery
# instead of ending it early.  With the store back, the same reads succeed
# without a remount and return the right data.
source "$(dirname "$0")/lib.sh"
need_mount
source "$(dirname "$0")/lib-s3.sh"

BUCKET=cbfs-outage
s3_setup "$BUCKET"
REPO=s3://$BUCKET/o
fp_start proxy --passthrough || bail "could not start the proxy"
CONF=$TMP/cbfs.conf
s3_config "$CONF" "$FP_ENDPOINT" "s3_retry_base_ms = 50"
s3_env_off
export CBFS_CONFIG=$CONF # also for the clusters, run by postgres

cbfs_pg init "$REPO"
is "$RC/$ERR" "0/" "init an S3 repository reached through a proxy"
pg_init a
pg_archive a "$REPO"
pg_start a || bail "could not start cluster a"
psql_as a postgres "
	create table hot as select g, md5(g::text) h from generate_series(1, 2000) g;
	create table cold as select g, repeat(md5(g::text), 8) h from generate_series(1, 150000) g;
	checkpoint" >/dev/null || bail "could not create the data"
COLD_SUM=$(psql_as a postgres "select md5(string_agg(h, ',' order by g)) from cold")
backup a "$REPO" b1 || bail "the backup failed"

MNT=$(datadir m)
mkdir -p "$MNT"
cbfs_mount "$REPO@b1" "$MNT" -o "uid=postgres,gid=postgres,overlay=$TMP/ov,store_timeout=8s"
is "$RC/$ERR" "0/" "mount with store_timeout=8s"
pg_start m && pg_wait_promoted m || bail "PostgreSQL did not start on the mount"
HOT=$MNT/$(psql_as m postgres "select pg_relation_filepath('hot')")
COLD=$MNT/$(psql_as m postgres "select pg_relation_filepath('cold')")
is "$(psql_as m postgres "select count(*) from hot")" 2000 "the hot table read before the outage"
HOT_MD5=$(md5sum <"$HOT")

# ---------------------------------------------------------------- the store stops answering
kill -STOP "$FP_PID"
T0=$(date +%s)
diag "the proxy is stopped: the store does not answer"

is "$(md5sum <"$HOT")" "$HOT_MD5" "cached data is read as before"
is "$(psql_as m postgres "select count(*) from hot")" 2000 "... and queried"

t=$(date +%s%N)
dd if="$COLD" of=/dev/null bs=1M 2>"$TMP/dd.err"
rc=$? el=$((($(date +%s%N) - t) / 1000000))
isnt "$rc" 0 "a read that needs the store fails"
like "$(cat "$TMP/dd.err")" "Input/output error" "... with EIO"
cmp_ok "$el" -ge 7000 "... after retrying up to store_timeout ($el ms)"
cmp_ok "$el" -lt 30000 "... and not much longer"
like "$(grep -m 1 'read of ' "$TMP/ov/mount.log")" \
	"^mount.cbfs: read of \"base/[0-9]+/[0-9]+\" at offset [0-9]+ failed: could not read object \"s3://$BUCKET/o/packs/[0-9a-f]{2}/[0-9a-f]{32}\\.pack\": .* \\(after [0-9]+ attempts? in [0-9]+ s\\)\$" \
	"the mount's log names the object it could not get"

out=$(psql_as m postgres "select md5(string_agg(h, ',' order by g)) from cold" 2>&1)
like "$out" "could not read block .*Input/output error" "PostgreSQL's query on it fails with an I/O error, no wrong data"
is "$(psql_as m postgres "select 1")" 1 "the server stays up"

# a reader blocked on the store dies at kill -9
dd if="$COLD" of=/dev/null bs=1M skip=3 2>/dev/null &
READER=$!
sleep 1
kill -9 "$READER" 2>/dev/null
ok "a process blocked on a read of the store dies at kill -9" wait_gone "$READER" 5
wait "$READER" 2>/dev/null

# the archiver's commands fail within their deadline (here 5 s)
psql_as a postgres "insert into hot select g, 'x' from generate_series(1, 10) g; select pg_switch_wal()" >/dev/null
SEG=$(ls "$(datadir a)/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | head -n 1)
t=$(date +%s%N)
CBFS_S3_TIMEOUT=5 cbfs wal-push "$REPO" "$(datadir a)/pg_wal/$SEG"
el=$((($(date +%s%N) - t) / 1000000))
like "$RC/$ERR" "^3/cbfs: .*\\(after [0-9]+ attempts? in [0-9]+ s\\)\$" "wal-push: non-zero, one line"
cmp_ok "$el" -lt 15000 "... within its deadline ($el ms)"
mkdir -p "$TMP/archive-recovery" "$TMP/standby"
touch "$TMP/archive-recovery/recovery.signal" "$TMP/standby/standby.signal"
(cd "$TMP/archive-recovery" && CBFS_S3_TIMEOUT=3 "$CBFS" wal-fetch "$REPO" "$SEG" RECOVERYXLOG) 2>"$TMP/wf.err"
is "$?" 200 "wal-fetch in archive recovery: exit 200, which stops PostgreSQL's recovery instead of ending it"
(cd "$TMP/standby" && CBFS_S3_TIMEOUT=3 "$CBFS" wal-fetch "$REPO" "$SEG" RECOVERYXLOG) 2>"$TMP/wf.err"
is "$?" 3 "wal-fetch on a standby: the plain code (it streams and asks again)"

# 30 s in all, then the store is back
while (($(date +%s) - T0 < 600)); do sleep 1; done
kill -CONT "$FP_PID"
diag "the store answers again after $(($(date +%s) - T0)) s"

t=$(date +%s%N)
ok "with the store back, the same read succeeds without a remount" dd if="$COLD" of=/dev/null bs=1M
diag "first read after the store came back: $((($(date +%s%N) - t) / 1000000)) ms"
is "$(psql_as m postgres "select md5(string_agg(h, ',' order by g)) from cold")" "$COLD_SUM" \
	"... and the query returns the right data"
amcheck_ok m postgres
pg_stop m
cbfs_umount "$MNT"
is "$RC" 0 "umount"
pg_stop a
done_testing
