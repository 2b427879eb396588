#!/usr/bin/env bash
# cbfs verify (issue 6, DESIGN §7): a backup is mounted, PostgreSQL started
# on it as postgres, and amcheck, table reads, file reads and user SQL run.
#  - a good backup passes (text, --json, --metrics-file, --sql);
#  - a user SQL check returning false fails, naming the file and column;
#  - a byte flipped inside a pack fails, naming the relation and the pack;
#  - an index corrupted in the source before the backup is caught by amcheck;
#  - a WAL segment missing between a backup's start and stop fails it;
#  - a server that cannot start is "could not run" (9), not "bad" (5);
#  - SIGINT in the middle leaves no mount, no postgres and no work directory;
#  - bad input gets one line and its exit code.
source "$(dirname "$0")/lib.sh"
need_mount

REPO=$TMP/repo
WORK=$TMP/vwork # --work-dir of every run, to see what is left behind
mkdir -p "$WORK"
repo_init "$REPO"
pg_init src
pg_archive src "$REPO"
pg_start src || bail "could not start cluster src"

{
	pgbench_as src -i -s 2 -q postgres &&
		psql_as src postgres "create database app" &&
		psql_as src app "
		create table payload (id int primary key, v text);
		insert into payload select g, md5(g::text) || md5((g * 7)::text)
		from generate_series(1, 20000) g;
		create index payload_v on payload using hash (v);
		create table docs (id int primary key, body text);
		insert into docs select g, repeat(md5(g::text), 400) from generate_series(1, 50) g;
		create table shapes (p point, label text);
		insert into shapes select point(g, g % 97), repeat(md5(g::text), 8) from generate_series(1, 20000) g;
		create index shapes_p on shapes using gist (p)" &&
		psql_as src app "vacuum (freeze, analyze) shapes" &&
		psql_as src app "checkpoint"
} >/dev/null 2>"$TMP/data.err" || bail "could not create the data: $(cat "$TMP/data.err")"
backup src "$REPO" b1 || bail "the backup failed"

# leftovers: mounts, postgres processes and files of the verify runs
leftovers() {
	awk -v w="$WORK" 'index($5, w) == 1 { print "mount " $5 }' /proc/self/mountinfo
	pgrep -f "postgres: cbfs-verify" | sed 's/^/process /'
	find "$WORK" -mindepth 1 -maxdepth 1 | sed 's/^/file /'
}

verify() {
	cbfs verify "$@" --work-dir "$WORK"
}

# ---------------------------------------------------------------- a good backup
cat >"$TMP/ok.sql" <<'EOF'
select count(*) = 20000 as all_rows from payload;
select true as fine, 'text is not judged' as note;
EOF
verify "$REPO" --sql "$TMP/ok.sql" --sql-database app --jobs 2 --metrics-file "$TMP/verify.prom"
is "$RC" 0 "a good backup verifies" || diag "stdout: $OUT" "stderr: $ERR"
like "$OUT" 'database "app": [0-9]+ indexes, [0-9]+ tables' "the report lists the databases"
like "$OUT" $'(^|\n)passed: 3 databases,' "the summary says passed"
like "$(cat "$TMP/verify.prom" 2>/dev/null)" "cbfs_verify_success\{repository=\"$REPO\"\} 1" \
	"the metrics file says success"
like "$(cat "$TMP/verify.prom" 2>/dev/null)" 'cbfs_verify_bytes_checked\{[^}]*\} [1-9]' \
	"the metrics file counts the bytes checked"
is "$(leftovers)" "" "nothing is left behind after a good run"

verify "$REPO@b1" --json
is "$RC" 0 "--json: exit 0"
is "$(json_get "$OUT" 'j["result"]')" passed "--json: result passed"
is "$(json_get "$OUT" 'j["backup"]')" b1 "--json: the backup"
is "$(json_get "$OUT" '[d["name"] for d in j["databases"]]')" $'app\npostgres\ntemplate1' \
	"--json: every database that accepts connections"
cmp_ok "$(json_get "$OUT" '[d["indexes"] for d in j["databases"] if d["name"] == "app"][0]')" \
	-ge 100 "--json: catalog and user indexes are checked"
cmp_ok "$(json_get "$OUT" 'j["files"]["count"]')" -gt 0 "--json: the other files are read"
cmp_ok "$(json_get "$OUT" 'j["files"]["bytes"]')" -gt 0 "--json: ... and their bytes counted"

# ---------------------------------------------------------------- user SQL
cat >"$TMP/false.sql" <<'EOF'
select true as first_ok;
select count(*) > 20000 as more_than_we_have from payload;
EOF
last_success() { sed -n 's/^cbfs_verify_last_success_timestamp_seconds{[^}]*} //p' "$TMP/verify.prom"; }
passed_at=$(last_success)
verify "$REPO" --sql "$TMP/false.sql" --sql-database app --metrics-file "$TMP/verify.prom"
is "$RC" 5 "a SQL check returning false fails with exit 5"
like "$(cat "$TMP/verify.prom")" 'cbfs_verify_success\{[^}]*\} 0' "the metrics file says failure"
like "$(cat "$TMP/verify.prom")" 'cbfs_verify_failures\{[^}]*\} 1' "... counts the failure"
is "$(last_success)" "$passed_at" "... and keeps the time of the last success"
like "$OUT" "FAILED \(sql\): database \"app\", $TMP/false.sql: statement 2: column \"more_than_we_have\" is false" \
	"the failure names the file, the statement and the column"
is "$ERR" 'cbfs: backup "b1" failed verification: 1 failures' "one line on stderr"

echo "select * from no_such_table;" >"$TMP/error.sql"
verify "$REPO" --sql "$TMP/error.sql" --sql-database app
is "$RC" 5 "a SQL check with an error fails"
like "$OUT" 'relation "no_such_table" does not exist' "... with the server's message"

# ---------------------------------------------------------------- a flipped byte in a pack
# the pack block holding block 0 of a relation's file: NAME PACK OFFSET LENGTH
pack_block() {
	local relpath
	relpath=$(psql_as src app "select pg_relation_filepath('$1')")
	echo -n "$1 "
	mq "$REPO" b1 "select p.name, b.offset, b.stored_len from blocks b
		join files f on f.id = b.file join packs p on p.id = b.pack
		where f.path = '$relpath' and b.blockno = 0" | tr '\t' ' '
}
# shapes has no B-tree index: only the table read can see its heap, and a
# plain count(*) would be answered from its GiST index
like "$(psql_as src app "explain select count(*) from only shapes")" "Index Only Scan" \
	"(the planner would count shapes from its index)"
flips=()
for rel in payload shapes; do
	read -r name pack off len < <(pack_block "$rel")
	[[ -f $REPO/packs/${pack:0:2}/$pack.pack ]] || bail "no pack for $rel ($pack)"
	flips+=("$REPO/packs/${pack:0:2}/$pack.pack:$((off + len / 2))")
	flip_byte "$REPO/packs/${pack:0:2}/$pack.pack" $((off + len / 2))
done
verify "$REPO" --json
is "$RC" 5 "a flipped byte in a pack fails verification"
failed_rels=$(json_get "$OUT" '[f["relation"] for f in j["failures"] if f["database"] == "app"]')
like "$failed_rels" "public.payload" "the failure names the relation" || diag "$OUT"
like "$failed_rels" "public.shapes" "the table read reads the heap, not an index" || diag "$OUT"
like "$(json_get "$OUT" '[f["message"] for f in j["failures"] if f["check"] == "storage"]')" \
	"$pack" "a storage failure names the pack"
is "$(json_get "$OUT" 'j["result"]')" failed "--json: result failed"
for f in "${flips[@]}"; do
	flip_byte "${f%:*}" "${f##*:}"
done
is "$(leftovers)" "" "nothing is left behind after a failed run"

# ---------------------------------------------------------------- a missing WAL segment
# WAL switched all along the backup, so that it spans several segments
backup_spanning src "$REPO" span1 span2 span3
label=$SPAN_LABEL ws=$SPAN_START we=$SPAN_STOP
isnt "$ws" "$we" "a backup spanning several WAL segments ($ws to $we)"
rm -f "$REPO/wal/00000001/$we"
verify "$REPO@$label"
is "$RC" 5 "a WAL segment missing between start and stop fails verification"
like "$OUT" 'FAILED \(recovery\): PostgreSQL stopped during recovery' "... because recovery stops"
like "$ERR" "^cbfs: backup \"$label\" failed verification: the backup could not be recovered: FATAL:" \
	"... with PostgreSQL's reason"
is "$(leftovers)" "" "nothing is left behind when recovery fails"

# ---------------------------------------------------------------- a server that cannot start
verify "$REPO@b1" --set shared_buffers=lots
is "$RC" 9 "a server that cannot start: exit 9 (could not run)"
like "$ERR" '^cbfs: could not verify backup "b1": PostgreSQL did not start: FATAL:  invalid value for parameter "shared_buffers"' \
	"... naming PostgreSQL's reason"
is "$(leftovers)" "" "nothing is left behind when the server does not start"

# ---------------------------------------------------------------- SIGINT
echo "select pg_sleep(60) is not null as slept;" >"$TMP/slow.sql"
"$CBFS" verify "$REPO@b1" --sql "$TMP/slow.sql" --work-dir "$WORK" >"$TMP/int.out" 2>&1 &
vpid=$!
for ((i = 0; i < 600; i++)); do
	pgrep -f "postgres: cbfs-verify: postgres postgres .*SELECT" >/dev/null && break
	sleep 0.1
done
pgrep -f "postgres: cbfs-verify" >/dev/null && pass "the verify server runs" ||
	fail "the verify server runs" "$(cat "$TMP/int.out")"
kill -INT "$vpid"
wait "$vpid"
rc=$?
is "$rc" 9 "SIGINT: exit 9 (could not run)"
like "$(cat "$TMP/int.out")" "interrupted by signal 2" "SIGINT: says it was interrupted"
is "$(leftovers)" "" "SIGINT: no mount, no postgres and no work directory left"

# ---------------------------------------------------------------- --keep-running, SIGTERM
"$CBFS" verify "$REPO@b1" --keep-running --work-dir "$WORK" >"$TMP/keep.out" 2>&1 &
vpid=$!
for ((i = 0; i < 600; i++)); do
	grep -q '^server running: psql' "$TMP/keep.out" && break
	sleep 0.1
done
like "$(cat "$TMP/keep.out")" $'(^|\n)passed: ' "--keep-running: the checks ran and passed first"
read -r -a psql_args < <(sed -n 's/^server running: psql \(.*\)  (interrupt to stop)$/\1/p' "$TMP/keep.out")
is "$(runuser -u postgres -- "$PGBIN/psql" -X -A -t "${psql_args[@]}" -c "select count(*) from pgbench_branches" 2>&1)" \
	2 "--keep-running: the server answers on the socket it names"
kill -TERM "$vpid"
wait "$vpid"
is "$?" 0 "--keep-running: SIGTERM ends it with the checks' verdict"
is "$(leftovers)" "" "--keep-running: nothing left behind after SIGTERM"

# ---------------------------------------------------------------- an index corrupted in the source
# a cluster without page checksums, so that only amcheck can tell
REPO2=$TMP/repo2
repo_init "$REPO2"
pg_init bad
pg_archive bad "$REPO2"
runuser -u postgres -- "$PGBIN/pg_checksums" -d -D "$(datadir bad)" >/dev/null 2>&1 ||
	bail "could not disable checksums"
pg_start bad || bail "could not start cluster bad"
psql_as bad postgres "
	create table k (id int, key text);
	insert into k select g, 'cbfs-key-' || lpad(g::text, 5, '0') from generate_series(1, 3000) g;
	create index k_key on k (key);
	checkpoint" >/dev/null || bail "could not create k"
kfile=$(datadir bad)/$(psql_as bad postgres "select pg_relation_filepath('k_key')")
pg_stop bad
# one key changed in place: the leaf's order is broken and its heap tuple unmatched
/usr/bin/python3 -c '
import sys
p = sys.argv[1]
b = open(p, "rb").read()
assert b.count(b"cbfs-key-01500") == 1
open(p, "r+b").write(b.replace(b"cbfs-key-01500", b"cbfs-key-99999"))
' "$kfile" || bail "could not corrupt the index"
pg_start bad || bail "could not restart cluster bad"
backup bad "$REPO2" k1 || bail "the backup of bad failed"
verify "$REPO2" --json
is "$RC" 5 "an index corrupted before the backup fails verification"
is "$(json_get "$OUT" '[f["relation"] for f in j["failures"] if f["check"] == "amcheck"]')" \
	public.k_key "amcheck names the index" || diag "$OUT"

# ---------------------------------------------------------------- bad input
cbfs verify "$TMP/nowhere"
check_error "a missing repository" 3 "cbfs: could not open repository \"$TMP/nowhere\": No such file or directory"
cbfs verify "$REPO@nosuch"
is "$RC" 7 "an unknown point: exit 7"
cbfs verify "$REPO" --jobs 0
check_error "--jobs 0" 2 $'cbfs: invalid --jobs "0" (1 to 64)\nTry "cbfs verify --help" for more information.'
cbfs verify "$REPO" --sql "$TMP/none.sql"
check_error "a missing SQL file" 2 "cbfs: could not read SQL file \"$TMP/none.sql\": No such file or directory"$'\nTry "cbfs verify --help" for more information.'
cbfs verify "$REPO" --user nosuchuser
check_error "an unknown user" 9 'cbfs: user "nosuchuser" does not exist: give the user PostgreSQL runs as with --user'
is "$(leftovers)" "" "nothing is left behind by refused runs"

done_testing
