#!/usr/bin/env bash
# Tablespaces moved on restore with --tablespace-map NAME=DIR: the links,
# tablespace_map and pg_tablespace_location point at the new directories,
# the data is readable there, and the source's directories are untouched.
source "$(dirname "$0")/lib.sh"

REPO=$TMP/repo
repo_init "$REPO"
pg_init t
pg_archive t "$REPO"
pg_start t || bail "could not start cluster t"
mkdir "$TMP/tsa" "$TMP/tsb"
chown postgres:postgres "$TMP/tsa" "$TMP/tsb"
psql_as t postgres "create tablespace tsa location '$TMP/tsa'" >/dev/null &&
	psql_as t postgres "create tablespace tsb location '$TMP/tsb'" >/dev/null &&
	psql_as t postgres "create database dbt tablespace tsb" >/dev/null &&
	psql_as t postgres "
		create table in_a (id int primary key using index tablespace tsa, v text) tablespace tsa;
		insert into in_a select g, repeat(md5(g::text), 10) from generate_series(1, 20000) g;
		create table plain (id int, v text);
		insert into plain select g, md5(g::text) from generate_series(1, 5000) g;
		create index plain_v on plain (v) tablespace tsa" >/dev/null &&
	psql_as t dbt "
		create table in_b (id int primary key, v text);
		insert into in_b select g, md5(g::text) from generate_series(1, 20000) g" >/dev/null ||
	bail "could not create the tablespaces and their data"
oida=$(psql_as t postgres "select oid from pg_tablespace where spcname = 'tsa'")
oidb=$(psql_as t postgres "select oid from pg_tablespace where spcname = 'tsb'")

backup t "$REPO" ts --jobs 2 || bail "the backup failed"
table_hashes t postgres >"$TMP/source-postgres.hashes"
table_hashes t dbt >"$TMP/source-dbt.hashes"
(cd "$TMP" && find tsa tsb | sort) >"$TMP/source-ts.files"

# a map naming a tablespace the backup does not have
cbfs restore "$REPO@ts" "$TMP/bad" --tablespace-map nosuch="$TMP/x"
if ((RC != 0)) && [[ $ERR == "cbfs: "* && $(wc -l <"$TMP/run.err") == 1 ]]; then
	pass "a map for an unknown tablespace is refused with one line"
else
	fail "a map for an unknown tablespace is refused with one line" "exit $RC" "stderr: $ERR"
fi
if [[ ! -e $TMP/bad || -z $(ls -A "$TMP/bad") ]]; then
	pass "a map for an unknown tablespace wrote nothing"
else
	fail "a map for an unknown tablespace wrote nothing" "$(ls -A "$TMP/bad" | head)"
fi

cbfs_restore "$REPO@ts" r --jobs 2 --tablespace-map tsa="$TMP/tsa-r" --tablespace-map "tsb=$TMP/tsb-r"
is "$RC/$ERR" "0/" "restore with --tablespace-map by name"
R=$(datadir r)
is "$(readlink "$R/pg_tblspc/$oida")" "$TMP/tsa-r" "pg_tblspc/$oida links to the new directory"
is "$(readlink "$R/pg_tblspc/$oidb")" "$TMP/tsb-r" "pg_tblspc/$oidb links to the new directory"
ok "tablespace_map names the new directory of tsa" grep -qx "$oida $TMP/tsa-r" "$R/tablespace_map"
ok "tablespace_map names the new directory of tsb" grep -qx "$oidb $TMP/tsb-r" "$R/tablespace_map"
ok "tsa's files are in the new directory" test -d "$TMP/tsa-r/PG_15_$(sed -n 's/^Catalog version number: *//p' \
	<<<"$("$PGBIN/pg_controldata" "$(datadir t)")")"
is "$(cd "$TMP" && find tsa tsb | sort)" "$(cat "$TMP/source-ts.files")" "the source's tablespace directories are untouched"

if pg_start r && pg_wait_promoted r; then
	pass "the restored copy starts and finishes recovery"
	is "$(sql r postgres "select pg_tablespace_location($oida)")" "$TMP/tsa-r" "pg_tablespace_location of tsa"
	is "$(sql r postgres "select pg_tablespace_location($oidb)")" "$TMP/tsb-r" "pg_tablespace_location of tsb"
	table_hashes r postgres >"$TMP/r-postgres.hashes"
	table_hashes r dbt >"$TMP/r-dbt.hashes"
	ok "tables of postgres equal the source" diff "$TMP/source-postgres.hashes" "$TMP/r-postgres.hashes"
	ok "tables of dbt (in tsb) equal the source" diff "$TMP/source-dbt.hashes" "$TMP/r-dbt.hashes"
	is "$(sql r postgres "set enable_seqscan = off; select count(*) from plain where v = md5('77')")" 1 \
		"an index in tsa answers"
	amcheck_ok r postgres
	amcheck_ok r dbt
	psql_as r postgres "create table new_in_a (x int) tablespace tsa; insert into new_in_a values (1)" >/dev/null
	is "$?" 0 "the restored copy writes into the moved tablespace"
	pg_stop r
else
	fail "the restored copy starts and finishes recovery"
fi

done_testing
