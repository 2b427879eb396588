#!/usr/bin/env bash
# Manifests read in place (issue 18, item 1): a mount of a backup with many
# files over S3 reads only the parts of its manifest it needs, counted by
# the fault proxy (pass-through) the store goes through; the server on the
# mount then holds what the source held.  And the manifests cbfs wrote
# before (format 1, one row per block, one object checked whole): check,
# restore, mount and verify still read them.
source "$(dirname "$0")/lib.sh"
need_mount
source "$(dirname "$0")/lib-s3.sh"

BUCKET=cbfs-lazy
s3_setup "$BUCKET"
fp_start proxy --passthrough || bail "could not start the proxy"
REPO=s3://$BUCKET/lazy
cbfs_pg init "$REPO"
is "$RC/$ERR" "0/" "cbfs init $REPO"

# ---------------------------------------------------------------- many files
pg_init a
pg_archive a "$REPO"
pg_start a || bail "could not start cluster a"
# 6000 tables of one row: a file each
psql_as a postgres "do \$\$ begin
	for i in 1..6000 loop
		execute format('create table t%s (a int); insert into t%s values (%s)', i, i, i);
	end loop; end \$\$" >/dev/null || bail "could not create the tables"
psql_as a postgres "create table big as select g, repeat('x', 500) pad from generate_series(1, 100000) g" \
	>/dev/null || bail "could not create table big"
backup a "$REPO" b1 || bail "the backup failed"
SUM=$(psql_as a postgres "select sum(a) from (select a from t1 union all select a from t3000 union all select a from t6000) s")
BIG=$(psql_as a postgres "select count(*) || ' ' || sum(length(pad)) from big")
BIGFILE=$(psql_as a postgres "select pg_relation_filepath('big')")
FILES=$(cbfs info "$REPO@b1" --json && json_get "$OUT" 'j["file_count"]')
cmp_ok "$FILES" -gt 6000 "the backup holds $FILES files"

# the manifest's plain size, from the record (through the S3 API)
s3curl -o "$TMP/b1.info" "$S3_ENDPOINT/$BUCKET/lazy/backups/b1.info"
MSIZE=$(sed -n 's/^manifest_size = //p' "$TMP/b1.info")
cmp_ok "$MSIZE" -gt 1000000 "its manifest holds $MSIZE bytes"

# ---------------------------------------------------------------- a mount reads a few parts of it
MNT=$(datadir m)
mkdir -p "$MNT"
served() {
	kill -HUP "$FP_PID"
	sleep 1.2
	fp_stat bytes_to_client
}
B0=$(served)
AWS_ENDPOINT_URL=$FP_ENDPOINT cbfs_mount "$REPO@b1" "$MNT" -o "uid=postgres,gid=postgres,overlay=$TMP/ov-m"
is "$RC/$ERR" "0/" "mount.cbfs $REPO@b1 through the proxy"
ok "stat of a relation file on the mount" stat "$MNT/$BIGFILE"
B1=$(served)
diag "the store served $((B1 - B0)) bytes (everything: records, locks, blocks) until the mount and a stat were answered; the manifest is $MSIZE"
cmp_ok "$((B1 - B0))" -lt "$((MSIZE / 2))" \
	"... less than half the manifest's size, everything counted: it is not fetched whole"
is "$(ls "$MNT/$(dirname "$BIGFILE")" | grep -c '^[0-9]*$')" "$(ls "$(datadir a)/$(dirname "$BIGFILE")" | grep -c '^[0-9]*$')" \
	"ls of the database folder lists its $FILES-odd relation files"
diag "... after which the store had served $(($(served) - B0)) bytes"
like "$(cat "$TMP/ov-m/mount.log")" \
	"mount.cbfs: mounted backup \"b1\" on \"$MNT\": [0-9]+ bytes of its manifest's $MSIZE read" \
	"the mount's log says how much of the manifest it read"
MREAD=$(sed -n 's/.*: \([0-9]*\) bytes of its manifest.*/\1/p' "$TMP/ov-m/mount.log" | head -n 1)
cmp_ok "$MREAD" -lt "$((MSIZE / 3))" "... $MREAD bytes: less than a third of it (64 KiB chunks of a 1.1 MB manifest)"
if pg_start m && pg_wait_promoted m; then
	pass "PostgreSQL starts on the mount"
	is "$(psql_as m postgres "select sum(a) from (select a from t1 union all select a from t3000 union all select a from t6000) s")" \
		"$SUM" "... the small tables hold their rows"
	is "$(psql_as m postgres "select count(*) || ' ' || sum(length(pad)) from big")" "$BIG" \
		"... and the large one all of its"
	is "$(psql_as m postgres "select count(*) from pg_class where relname ~ '^t[0-9]+\$'")" 6000 \
		"... and every table is there"
	pg_stop m
else
	fail "PostgreSQL starts on the mount" "$(tail -n 20 "$TMP/m.log")"
fi
cbfs_umount "$MNT"
is "$RC/$ERR" "0/" "cbfs umount"
pg_stop a

# ---------------------------------------------------------------- manifests of format 1
L=$TMP/legacy
pg_init c
pg_archive c "$L"
cbfs_pg init "$L"
pg_start c || bail "could not start cluster c"
s3_load_data c
backup c "$L" old || bail "the local backup failed"
table_hashes c postgres >"$TMP/c.tables"
pg_stop c
/usr/bin/python3 "$CBFS_SRCDIR/tests/integration/manifest.py" legacy "$L" old
ok "the manifest rewritten as cbfs wrote it before format 2" \
	test -n "$(grep -l '^manifest_sha256 = ' "$L/backups/old.info")"
is "$(mq "$L" old "select value from meta where key = 'format'")" 1 "... format 1, one row per block"
cbfs check "$L" --read-data
is "$RC/$ERR" "0/" "check --read-data reads it"
cbfs_restore "$L@old" r
is "$RC/$ERR" "0/" "restore reads it"
if pg_start r && pg_wait_promoted r; then
	table_hashes r postgres >"$TMP/r.tables"
	ok "... the restored tables equal the source's" diff "$TMP/c.tables" "$TMP/r.tables"
	pg_stop r
else
	fail "the restored copy starts" "$(tail -n 20 "$TMP/r.log")"
fi
MNT2=$(datadir m2)
mkdir -p "$MNT2"
cbfs_mount "$L@old" "$MNT2" -o uid=postgres,gid=postgres
is "$RC/$ERR" "0/" "mount reads it"
if pg_start m2 && pg_wait_promoted m2; then
	table_hashes m2 postgres >"$TMP/m2.tables"
	ok "... the mounted tables equal the source's" diff "$TMP/c.tables" "$TMP/m2.tables"
	pg_stop m2
else
	fail "PostgreSQL starts on the mount of format 1" "$(tail -n 20 "$TMP/m2.log")"
fi
cbfs_umount "$MNT2"
is "$RC/$ERR" "0/" "cbfs umount"
cbfs verify "$L@old"
is "$RC" 0 "verify reads it"
ok "no copy of it is left in the cache" test -z "$(find "${CBFS_CACHE_DIR:-/nonexistent}" -name 'manifest.*' 2>/dev/null)"

done_testing
