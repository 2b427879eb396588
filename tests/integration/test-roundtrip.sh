#!/usr/bin/env bash
# Round trip (issue 2, §6): a cluster with several databases, a tablespace,
# TOAST-sized values, large objects, an unlogged table and B-tree, hash, GIN,
# GiST and BRIN indexes, archiving with cbfs wal-push, is backed up while
# idle and again under a pgbench write load; each backup is restored,
# started, and checked against the source at the backup's end.
source "$(dirname "$0")/lib.sh"

REPO=$TMP/repo
repo_init "$REPO"
pg_init a
pg_archive a "$REPO"
pg_start a || bail "could not start cluster a"
SYSID=$(sysid a)

# ---------------------------------------------------------------- data
mkdir "$TMP/ts1"
chown postgres:postgres "$TMP/ts1"
{
	psql_as a postgres "create tablespace ts1 location '$TMP/ts1'" &&
		psql_as a postgres "create database db1" &&
		psql_as a postgres "create database db2 tablespace ts1" &&
		pgbench_as a -i -s 5 -q postgres &&
		psql_as a db1 "
		create table items (
			id int primary key, name text, tags text[], doc jsonb,
			tsv tsvector, pos point, created timestamptz, val int);
		insert into items
		select g, 'name-' || (g % 5000), array['t' || (g % 17), 't' || (g % 31)],
		       jsonb_build_object('k', g % 11, 'g', g),
		       to_tsvector('simple', 'w' || (g % 97) || ' w' || (g % 13)),
		       point(g % 100, g / 500), '2026-01-01'::timestamptz + g * interval '1 minute',
		       (g * 7919) % 100000
		from generate_series(1, 50000) g;
		create index items_name_hash on items using hash (name);
		create index items_tags_gin on items using gin (tags);
		create index items_doc_gin on items using gin (doc jsonb_path_ops);
		create index items_pos_gist on items using gist (pos);
		create index items_tsv_gist on items using gist (tsv);
		create index items_created_brin on items using brin (created);
		create index items_val on items (val);
		create index items_name_spgist on items using spgist (name);

		create table toasty (id int primary key, big text, squeezable text);
		insert into toasty
		select g, (select string_agg(md5(random()::text || g || i), '')
		           from generate_series(1, 3200) i),
		       repeat('cbfs ', 200000)
		from generate_series(1, 20) g;

		create table in_ts1 (id int primary key using index tablespace ts1, v text) tablespace ts1;
		insert into in_ts1 select g, md5(g::text) from generate_series(1, 10000) g;

		create unlogged table ul (id int primary key, v text);
		insert into ul select g, md5(g::text) from generate_series(1, 1000) g;

		create sequence seq1;
		select setval('seq1', 4242);

		select lo_from_bytea(0, convert_to('small large object', 'UTF8'));
		select lo_from_bytea(0, decode((select string_agg(md5(random()::text || i), '')
		                                from generate_series(1, 65536) i), 'hex'));
		select lo_from_bytea(0, convert_to(repeat('lo ', 100000), 'UTF8'));
		checkpoint" &&
		psql_as a db2 "
		create table t2 (id int primary key, v text);
		insert into t2 select g, md5(g::text) from generate_series(1, 20000) g;
		create materialized view mv2 as select id % 10 k, count(*) from t2 group by 1"
} >/dev/null 2>"$TMP/data.err" || bail "could not create the data: $(cat "$TMP/data.err")"

DBS=(postgres db1 db2)
INDEX_QUERIES=(
	"select count(*) from items where name = 'name-123'"
	"select count(*) from items where tags @> array['t7']"
	"select count(*) from items where doc @> '{\"k\": 3}'"
	"select count(*) from items where pos <@ box '((0,0),(10,10))'"
	"select count(*) from items where tsv @@ to_tsquery('simple', 'w42')"
	"select count(*) from items where created between '2026-01-10' and '2026-01-11'"
	"select count(*) from items where val between 100 and 5000"
	"select count(*) from items where name like 'name-12%'"
)

# snapshot PREFIX NAME: content of every database of NAME into $TMP/PREFIX.*
snapshot() {
	local prefix=$1 name=$2 db q
	for db in "${DBS[@]}"; do
		table_hashes "$name" "$db" >"$TMP/$prefix.$db.tables" || return 1
		lo_hashes "$name" "$db" >"$TMP/$prefix.$db.lo" || return 1
	done
	for q in "${INDEX_QUERIES[@]}"; do
		psql_as "$name" db1 "set enable_seqscan = off; set enable_bitmapscan = on; $q" || return 1
	done >"$TMP/$prefix.indexq"
	psql_as "$name" db1 "select last_value from seq1" >"$TMP/$prefix.seq" || return 1
}

# common_checks NAME: what every restored copy must show.
common_checks() {
	local name=$1 db
	is "$(sql "$name" postgres "show archive_mode")" off "$name: archive_mode is off in the restored copy"
	like "$(sql "$name" postgres "show restore_command")" "wal-fetch" "$name: restore_command uses cbfs wal-fetch"
	ok "$name: recovery reached a consistent state" grep -q "consistent recovery state reached" "$TMP/$name.log"
	ok "$name: recovery.signal is gone after promotion" test ! -e "$(datadir "$name")/recovery.signal"
	is "$(sql "$name" db1 "select count(*) from ul")" 0 "$name: the unlogged table came back empty"
	is "$(sql "$name" db1 "select relpersistence from pg_class where relname = 'ul'")" u \
		"$name: the unlogged table is still unlogged"
	for db in "${DBS[@]}"; do
		amcheck_ok "$name" "$db"
	done
	ok "$name: the large objects equal the source" diff "$TMP/src.db1.lo" "$TMP/$name.db1.lo"
	ok "$name: index scans answer as on the source" diff "$TMP/src.indexq" "$TMP/$name.indexq"
	is "$(sql "$name" db1 "select count(*) from in_ts1")" 10000 "$name: the table in the tablespace is readable"
	is "$(sql "$name" db1 "select sum(length(big)) from toasty")" $((20 * 3200 * 32)) "$name: the TOAST values are whole"
	is "$(sql "$name" db1 "select count(*) from items where tsv @@ to_tsquery('simple', 'w5')")" \
		"$(psql_as a db1 "select count(*) from items where tsv @@ to_tsquery('simple', 'w5')")" \
		"$name: a GiST tsvector query answers as on the source"
	is "$(sql "$name" db1 "insert into items (id) values (-1) returning id")" -1 "$name: the restored copy takes writes"
}

# start_restored NAME: starts a restored copy and waits for the promotion.
start_restored() {
	if pg_start "$1" && pg_wait_promoted "$1"; then
		pass "$1: the restored copy starts and finishes recovery"
		return 0
	fi
	fail "$1: the restored copy starts and finishes recovery" "$(tail -n 20 "$TMP/$1.log")"
	return 1
}

TS1_OID=$(psql_as a postgres "select oid from pg_tablespace where spcname = 'ts1'")

# ---------------------------------------------------------------- idle backup
backup a "$REPO" idle --jobs 2 || bail "the idle backup failed"
snapshot src a || bail "could not read the source"
ul_rows=$(psql_as a db1 "select count(*) from ul")
is "$ul_rows" 1000 "the source's unlogged table has rows"

# ---------------------------------------------------------------- backup under load
background runuser -u postgres -- "$PGBIN/pgbench" -h "$SOCK" -p "${PG_PORT[a]}" -U postgres \
	-n -c 4 -j 2 -T 15 postgres >"$TMP/pgbench.log" 2>&1
pgbench_pid=$BG_PID
sleep 3
backup a "$REPO" load --jobs 2
wait "$pgbench_pid"
is "$?" 0 "pgbench ran during the backup" || diag "$(cat "$TMP/pgbench.log")"
history_src=$(psql_as a postgres "select count(*) from pgbench_history")

# ---------------------------------------------------------------- list and info
cbfs list "$REPO"
is "$RC" 0 "cbfs list"
like "$OUT" "idle" "cbfs list shows the idle backup"
like "$OUT" "load" "cbfs list shows the backup under load"
cbfs list "$REPO" --json
is "$(json_get "$OUT" '" ".join(b["label"] for b in j)')" "idle load" "cbfs list --json: both backups, oldest first"
KEYS="bad_pages file_count label logical_size pg_version start_lsn start_time stop_lsn stop_time stored_size system_identifier timeline"
is "$(json_get "$OUT" "' '.join(sorted(set.intersection(*[set(b) for b in j]) & set('$KEYS'.split())))" 2>&1)" \
	"$KEYS" "cbfs list --json: every backup has the documented keys"
cbfs info "$REPO@load" --json
is "$RC" 0 "cbfs info @load --json"
info=$OUT
is "$(json_get "$info" 'j["label"]')" load "info: label"
is "$(json_get "$info" 'str(j["system_identifier"])')" "$SYSID" "info: system identifier"
is "$(json_get "$info" 'str(j["timeline"])')" 1 "info: timeline"
like "$(json_get "$info" 'str(j["pg_version"])')" "^15" "info: PostgreSQL version"
is "$(json_get "$info" 'str(j["bad_pages"])')" 0 "info: no bad pages"
is "$(json_get "$info" '[int(x, 16) for x in j["start_lsn"].split("/")] <= [int(x, 16) for x in j["stop_lsn"].split("/")]')" \
	true "info: start_lsn <= stop_lsn"
cmp_ok "$(json_get "$info" 'j["file_count"]')" -gt 900 "info: file count"
cbfs info "$REPO"
is "$RC" 0 "cbfs info (latest, text)"
like "$OUT" "load" "cbfs info defaults to the latest backup"

# ---------------------------------------------------------------- restore the idle backup
cbfs_restore "$REPO@idle" r1 --jobs 2 --tablespace-map "$TS1_OID=$TMP/ts1-r1"
is "$RC/$ERR" "0/" "restore @idle (tablespace mapped by OID)"
for f in backup_label tablespace_map recovery.signal; do
	ok "r1: restore wrote $f" test -f "$(datadir r1)/$f"
done
ok "r1: postgresql.auto.conf asks for recovery_target = 'immediate'" \
	grep -Eq "^recovery_target *= *'immediate'" "$(datadir r1)/postgresql.auto.conf"
is "$(stat -c %a "$(datadir r1)")" 700 "r1: the data directory has mode 0700"
if start_restored r1; then
	snapshot r1 r1
	for db in "${DBS[@]}"; do
		# the restored unlogged table is empty, the source's is not
		ok "r1: tables of $db equal the source" \
			diff <(grep -v '^public\.ul ' "$TMP/src.$db.tables") <(grep -v '^public\.ul ' "$TMP/r1.$db.tables")
	done
	ok "r1: the sequence equals the source" diff "$TMP/src.seq" "$TMP/r1.seq"
	common_checks r1
	pg_stop r1
fi

# ---------------------------------------------------------------- restore the backup under load
cbfs_restore "$REPO@latest" r2 --jobs 2 --tablespace-map "ts1=$TMP/ts1-r2"
is "$RC/$ERR" "0/" "restore @latest (the backup under load)"
if start_restored r2; then
	snapshot r2 r2
	for db in db1 db2; do
		ok "r2: tables of $db equal the source" \
			diff <(grep -v '^public\.ul ' "$TMP/src.$db.tables") <(grep -v '^public\.ul ' "$TMP/r2.$db.tables")
	done
	for t in accounts tellers branches; do
		c=${t:0:1}
		is "$(sql r2 postgres "select (select sum(${c}balance) from pgbench_$t) = (select coalesce(sum(delta), 0) from pgbench_history)")" \
			t "r2: sum of pgbench_$t balances equals the history"
	done
	is "$(sql r2 postgres "select count(*) from pgbench_accounts")" 500000 "r2: pgbench_accounts rows"
	is "$(sql r2 postgres "select count(*) from pgbench_tellers")" 50 "r2: pgbench_tellers rows"
	is "$(sql r2 postgres "select count(*) from pgbench_branches")" 5 "r2: pgbench_branches rows"
	h=$(sql r2 postgres "select count(*) from pgbench_history")
	cmp_ok "$h" -gt 0 "r2: the backup holds transactions of the load"
	cmp_ok "$h" -le "$history_src" "r2: and no more than the source has"
	common_checks r2
	pg_stop r2
fi

done_testing
