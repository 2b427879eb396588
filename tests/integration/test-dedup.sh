#!/usr/bin/env bash
# Deduplication (DESIGN §3.3, §4): every backup is logically full and
# physically incremental.  A second backup right after the first stores
# almost nothing; one after a small change stores about that change; the
# deduplicated backup restores to the same data.
source "$(dirname "$0")/lib.sh"

REPO=$TMP/repo
repo_init "$REPO"
pg_init d
pg_archive d "$REPO"
pg_start d || bail "could not start cluster d"
pgbench_as d -i -s 5 -q postgres >"$TMP/pgbench-init.out" 2>&1 ||
	bail "pgbench -i failed: $(tail -n 5 "$TMP/pgbench-init.out")"
# ~30 MB that does not compress: 30000 rows of 960 random bytes
psql_as d postgres "
	create table rnd (g int primary key, b bytea);
	insert into rnd
	select g, (select decode(string_agg(md5(random()::text || g || i), ''), 'hex')
	           from generate_series(1, 60) i)
	from generate_series(1, 30000) g;
	checkpoint" >/dev/null || bail "could not create table rnd"

# size of the repository without its WAL
repo_bytes() {
	local all wal
	all=$(du -sb "$REPO" | cut -f1)
	wal=$(du -sb "$REPO/wal" 2>/dev/null | cut -f1)
	echo $((all - ${wal:-0}))
}

# field LABEL KEY
field() {
	cbfs info "$REPO@$1" --json
	((RC == 0)) || {
		echo "info-failed:$RC:$ERR"
		return
	}
	json_get "$OUT" "j[\"$2\"]"
}

size0=$(repo_bytes)
backup d "$REPO" z-one --jobs 2 || bail "the first backup failed"
size1=$(repo_bytes)
backup d "$REPO" y-two --jobs 2 || bail "the second backup failed"
size2=$(repo_bytes)

stored1=$(field z-one stored_size)
stored2=$(field y-two stored_size)
logical1=$(field z-one logical_size)
logical2=$(field y-two logical_size)
diag "first backup: logical $logical1, stored $stored1, repository +$((size1 - size0)) bytes"
diag "second backup: logical $logical2, stored $stored2, repository +$((size2 - size1)) bytes"

cmp_ok "$stored1" -ge 25000000 "the first backup stored the 30 MB of random data"
cmp_ok "$logical2" -ge "$((logical1 * 95 / 100))" "the second backup is logically full"
cmp_ok "$((stored2 * 50))" -le "$stored1" "the second backup stores at most 2% of the first"
cmp_ok "$(((size2 - size1) * 50))" -le "$((size1 - size0))" \
	"the repository grows by at most 2% of the first backup"

# a small change: about 1% of the random rows, contiguous
psql_as d postgres "
	update rnd set b = (select decode(string_agg(md5(random()::text || g || i), ''), 'hex')
	                    from generate_series(1, 60) i)
	where g <= 300;
	checkpoint" >/dev/null
backup d "$REPO" x-three --jobs 2 || bail "the third backup failed"
size3=$(repo_bytes)
stored3=$(field x-three stored_size)
diag "third backup: stored $stored3, repository +$((size3 - size2)) bytes"
cmp_ok "$stored3" -ge 250000 "the third backup stored the changed rows"
cmp_ok "$((stored3 * 10))" -le "$stored1" "the third backup stores at most 10% of the first"

# Backups taken back to back, often within one second, keep the order they
# were taken in (their labels sort the other way round).
backup d "$REPO" w-four --jobs 2
backup d "$REPO" v-five --jobs 2
is "$(labels "$REPO" | tr '\n' ' ')" "z-one y-two x-three w-four v-five " \
	"cbfs list: the backups in the order they were taken"
is "$(field latest label)" v-five "@latest is the last backup taken"

# the deduplicated backup restores to the same data
table_hashes d postgres >"$TMP/source.hashes"
rows_before=$(psql_as d postgres "select count(*) from rnd")
cbfs_restore "$REPO@latest" r --jobs 2
is "$RC/$ERR" "0/" "restore of the latest backup"
if pg_start r && pg_wait_promoted r; then
	pass "the restored copy starts and finishes recovery"
	table_hashes r postgres >"$TMP/restored.hashes"
	ok "restored tables equal the source" diff "$TMP/source.hashes" "$TMP/restored.hashes"
	is "$(sql r postgres "select count(*) from rnd")" "$rows_before" "row count of rnd"
	amcheck_ok r postgres
	pg_stop r
else
	fail "the restored copy starts and finishes recovery"
fi

done_testing
