#!/usr/bin/env bash
# Delta restore (issue 16, item 4): `cbfs restore --delta` over a data
# directory of the same cluster that went on after the backup (writes,
# a new and a dropped table, files grown and cut, stray files and folders,
# its tablespace too) leaves exactly what a full restore leaves, writing only
# the blocks that differ; the copy starts and holds the backup's data.
# Refused with one line, nothing touched: a running server, another
# cluster's directory, a file, a folder that is no data directory.
source "$(dirname "$0")/lib.sh"

REPO=$TMP/repo
repo_init "$REPO"
pg_init a
pg_archive a "$REPO"
pg_start a || bail "could not start cluster a"
mkdir -p "$TMP/ts1" && chown postgres: "$TMP/ts1"
sql a postgres "create tablespace ts1 location '$TMP/ts1'" >/dev/null
pgbench_as a -i -s 8 -q postgres >/dev/null 2>&1 || bail "pgbench -i failed"
sql a postgres "create table in_ts (id int primary key, v text) tablespace ts1;
	insert into in_ts select g, md5(g::text) from generate_series(1, 50000) g;
	create table doomed (id int); insert into doomed select generate_series(1, 1000);
	checkpoint" >/dev/null
BEFORE=$(table_hashes a postgres)
backup a "$REPO" b1 || bail "the backup failed"

# ---------------------------------------------------------------- the directory goes on
pgbench_as a -c 2 -t 300 -n postgres >/dev/null 2>&1 || fail "pgbench after the backup"
sql a postgres "create table newer (id int); insert into newer select generate_series(1, 5000);
	drop table doomed;
	update in_ts set v = 'changed' where id % 100 = 0;
	checkpoint" >/dev/null
A=$(datadir a)
ACC=$(psql_as a postgres "select pg_relation_filepath('pgbench_accounts')")
pg_stop a
echo stray >"$A/stray.txt"
mkdir -p "$A/junk/deeper" && echo x >"$A/junk/deeper/file"
echo stray >"$A/base/1/999999"
truncate -s 8192 "$A/$ACC" # a relation cut short
ln -s /etc "$A/a-link"
mkdir -p "$A/global/pg_control.d" # a folder where nothing is
chown -R postgres: "$A"

# ---------------------------------------------------------------- delta restore
cbfs restore "$REPO@b1" "$A" --delta
is "$RC" 0 "restore --delta over the directory that went on"
like "$OUT" "^delta restore of backup b1 complete: [0-9]+ files, [0-9]+ blocks the same, .* written, [0-9]+ blocks zeroed, [0-9]+ entries removed" \
	"it reports the blocks left alone and the entries removed"
SAME=$(sed -n 's/.* files, \([0-9]*\) blocks the same.*/\1/p' <<<"$OUT")
cmp_ok "${SAME:-0}" -gt 100 "most blocks were left as they were ($SAME)"
REMOVED=$(sed -n 's/.* \([0-9]*\) entries removed.*/\1/p' <<<"$OUT")
cmp_ok "${REMOVED:-0}" -ge 5 "stray files, folders and links were removed ($REMOVED)"

# a full restore of the same backup, for comparison
cbfs restore "$REPO@b1" "$TMP/full" --tablespace-map "ts1=$TMP/ts-full"
is "$RC" 0 "a full restore of b1"
ok "the delta-restored directory equals a full restore, file for file and byte for byte" \
	diff -r -x tablespace_map "$A" "$TMP/full"
is "$(cat "$A/tablespace_map")" "$(sed "s|$TMP/ts-full|$TMP/ts1|" "$TMP/full/tablespace_map")" \
	"... tablespace_map names the tablespace where it is"
ok "... tablespace included" diff -r "$TMP/ts1" "$TMP/ts-full"
ok "no stray file is left" test ! -e "$A/stray.txt" -a ! -e "$A/junk" -a ! -L "$A/a-link"
ok "the tablespace link is kept" test "$(readlink "$A/pg_tblspc/$(ls "$A/pg_tblspc")")" = "$TMP/ts1"

chown -R postgres: "$A" "$TMP/ts1"
pg_start a || bail "the delta-restored directory does not start"
pg_wait_promoted a || fail "the delta-restored copy left recovery"
is "$(table_hashes a postgres)" "$BEFORE" "the delta-restored copy holds the backup's data"
amcheck_ok a postgres
pg_stop a

# a second delta over the promoted copy: it changed a little (a new timeline)
cbfs restore "$REPO@b1" "$A" --delta
is "$RC" 0 "restore --delta again, over the copy it made"
chown -R postgres: "$A" "$TMP/ts1"
pg_start a && pg_wait_promoted a || fail "the second delta restore starts"
is "$(table_hashes a postgres)" "$BEFORE" "... and holds the backup's data"

# ---------------------------------------------------------------- killed
# killed before its end, a delta restore leaves a directory no server
# starts on (PG_VERSION is removed first and written last); run again, it
# finishes
pg_stop a
bg_cbfs delta-killed restore-pg-version restore "$REPO@b1" "$A" --delta
wait_reached restore-pg-version || fail "the delta restore reached its last step"
ok "... at its last step PG_VERSION is absent" test ! -e "$A/PG_VERSION"
kill -9 "$BG_PID"
wait "$BG_PID" 2>/dev/null
chown -R postgres: "$A"
ok "PostgreSQL refuses to start on the killed delta restore" \
	bash -c "! runuser -u postgres -- '$PGBIN/pg_ctl' -D '$A' -o '-p 1 -k $SOCK' start -w -t 20"
cbfs restore "$REPO@b1" "$A" --delta
is "$RC" 0 "restore --delta again after the kill"
chown -R postgres: "$A" "$TMP/ts1"
pg_start a && pg_wait_promoted a || fail "the finished delta restore starts"
is "$(table_hashes a postgres)" "$BEFORE" "... and holds the backup's data"

# ---------------------------------------------------------------- refusals
snapshot() { find "$1" -printf '%p %s %T@\n' 2>/dev/null | sort | md5sum; }
S=$(snapshot "$A")
cbfs restore "$REPO@b1" "$A" --delta
check_error "--delta on a running server's directory" 8 \
	"cbfs: could not restore into \"$A\" with --delta: a server is running on it (pid ${PG_PID[a]})"
is "$(snapshot "$A")" "$S" "... nothing was touched"
pg_stop a

pg_init other
S=$(snapshot "$(datadir other)")
cbfs restore "$REPO@b1" "$(datadir other)" --delta
check_error "--delta on another cluster's directory" 8 \
	"cbfs: could not restore into \"$(datadir other)\" with --delta: it is database system $(sysid other), not $(sysid a)"
is "$(snapshot "$(datadir other)")" "$S" "... nothing was touched"

echo x >"$TMP/plainfile"
cbfs restore "$REPO@b1" "$TMP/plainfile" --delta
check_error "--delta on a file" 8 "cbfs: could not restore into \"$TMP/plainfile\": not a directory"

mkdir -p "$TMP/notpg" && echo x >"$TMP/notpg/file"
cbfs restore "$REPO@b1" "$TMP/notpg" --delta
check_error "--delta on a folder that is no data directory" 8 \
	"cbfs: could not restore into \"$TMP/notpg\" with --delta: not a PostgreSQL data directory"
is "$(cat "$TMP/notpg/file")" x "... nothing was touched"

cbfs restore "$REPO@b1" "$TMP/fresh" --delta --tablespace-map "ts1=$TMP/ts-fresh"
is "$RC" 0 "--delta into an absent directory is a full restore"
like "$OUT" "^restore of backup b1 complete" "... and says so"

done_testing
