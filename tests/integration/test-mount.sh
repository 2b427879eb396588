#!/usr/bin/env bash
# Mount (issue 3, DESIGN §6): a cluster with pgbench data, TOAST values, large
# objects and a second database is backed up and mounted with mount.cbfs;
# PostgreSQL started on the mount as postgres recovers and shows the source's
# data; it takes a pgbench write load, and keeps it across a restart and an
# unmount/remount with the same overlay; a mount without overlay= is pristine
# again; the repository is not changed by any of it.
source "$(dirname "$0")/lib.sh"
need_mount

REPO=$TMP/repo
MNT=$TMP/m # the data directory of cluster "m"
OV=$TMP/ov
PG_UID=$(id -u postgres)
PG_GID=$(id -g postgres)
repo_init "$REPO"
pg_init src
pg_archive src "$REPO"
pg_start src || bail "could not start cluster src"

# ---------------------------------------------------------------- data
mkdir "$TMP/ts1"
chown postgres:postgres "$TMP/ts1"
{
	pgbench_as src -i -s 5 -q postgres &&
		psql_as src postgres "create tablespace ts1 location '$TMP/ts1'" &&
		psql_as src postgres "create database db2" &&
		psql_as src postgres "
		create table toasty (id int primary key, big text, squeezable text);
		insert into toasty
		select g, (select string_agg(md5(random()::text || g || i), '')
		           from generate_series(1, 3200) i),
		       repeat('cbfs ', 200000)
		from generate_series(1, 20) g;
		select lo_from_bytea(0, convert_to('small large object', 'UTF8'));
		select lo_from_bytea(0, decode((select string_agg(md5(random()::text || i), '')
		                                from generate_series(1, 65536) i), 'hex'));
		checkpoint" &&
		psql_as src db2 "
		create table t2 (id int primary key, v text, j jsonb);
		insert into t2 select g, md5(g::text), jsonb_build_object('g', g)
		from generate_series(1, 20000) g;
		create index t2_v on t2 (v);
		create table in_ts1 (id int primary key using index tablespace ts1, v text) tablespace ts1;
		insert into in_ts1 select g, md5(g::text) from generate_series(1, 5000) g"
} >/dev/null 2>"$TMP/data.err" || bail "could not create the data: $(cat "$TMP/data.err")"

DBS=(postgres db2)
backup src "$REPO" b1 --jobs 2 || bail "the backup failed"

# snapshot PREFIX NAME: content of every database of NAME into $TMP/PREFIX.*
snapshot() {
	local prefix=$1 name=$2 db
	for db in "${DBS[@]}"; do
		table_hashes "$name" "$db" >"$TMP/$prefix.$db.tables" || return 1
		lo_hashes "$name" "$db" >"$TMP/$prefix.$db.lo" || return 1
	done
}
snapshot src src || bail "could not read the source"
cmp_ok "$(grep -c . "$TMP/src.postgres.lo")" -eq 2 "the source has large objects"
cmp_ok "$(grep -c . "$TMP/src.postgres.tables")" -ge 5 "the source has tables"
# The source stops here, so that its archiving adds nothing to the repository
# from now on: every file of the repository is hashed before and after.
pg_stop src
repo_files() {
	(cd "$REPO" && find . -type f | LC_ALL=C sort | xargs -d '\n' sha256sum)
}
# repo_tree: every entry but the mounts' registrations (mounts/, made by
# the first mount, and so the top folder's time) -- checked apart
repo_tree() {
	(cd "$REPO" && find . -mindepth 1 ! -path ./mounts ! -path './mounts/*' \
		-printf '%y %m %u %s %T@ %p\n' | LC_ALL=C sort -k6)
}
repo_files >"$TMP/repo.before" || bail "could not hash the repository"
repo_tree >"$TMP/tree.before"
cmp_ok "$(grep -c ' \./packs/' "$TMP/repo.before")" -gt 0 "the repository has packs to hash"

# same_as_source NAME WHAT: NAME's content equals the source's.
same_as_source() {
	local name=$1 what=$2 db
	snapshot "$name" "$name" || {
		fail "$what: read the data" "$(tail -n 5 "$TMP/$name.log")"
		return 1
	}
	for db in "${DBS[@]}"; do
		ok "$what: the tables of $db equal the source" diff "$TMP/src.$db.tables" "$TMP/$name.$db.tables"
		ok "$what: the large objects of $db equal the source" diff "$TMP/src.$db.lo" "$TMP/$name.$db.lo"
	done
}

# start_on_mount WHAT: starts cluster m and waits until it leaves recovery.
start_on_mount() {
	if pg_start m && pg_wait_promoted m; then
		pass "$1: PostgreSQL starts on the mount and finishes recovery"
		return 0
	fi
	fail "$1: PostgreSQL starts on the mount and finishes recovery" "$(tail -n 20 "$TMP/m.log")"
	return 1
}

# umount_ok WHAT: cbfs umount, the mount is gone and its daemon exits.
umount_ok() {
	local pid
	pid=$(mount_daemon_pid "$MNT")
	cbfs_umount "$MNT"
	is "$RC/$ERR" "0/" "$1: cbfs umount"
	ok "$1: the mount point is no longer mounted" test "$(mount_count "$MNT")" = 0
	if [[ -n $pid ]] && wait_gone "$pid" 10; then
		pass "$1: the daemon exits after the unmount"
	else
		fail "$1: the daemon exits after the unmount" "pid: '$pid'"
	fi
}

mkdir "$MNT"

# ---------------------------------------------------------------- first mount
cbfs_mount "$REPO@b1" "$MNT" -o "uid=postgres,gid=postgres,overlay=$OV"
is "$RC/$ERR/$OUT" "0//" "mount.cbfs REPO@b1 with a persistent overlay"
# it returned once the mount is ready: no waiting here
ok "the mount is there as soon as mount.cbfs returns" is_mounted "$MNT"
is "$(awk -v m="$MNT" '$5 == m { sub(/.* - /, ""); print $1, $2 }' /proc/self/mountinfo)" "fuse.cbfs $REPO@b1" \
	"mountinfo shows fuse.cbfs and the source"
ok "the daemon runs" mount_daemon_pid "$MNT"
is "$(stat -c '%u %g %a' "$MNT")" "$PG_UID $PG_GID 700" "the mount root is owned by postgres with mode 0700"
# shellcheck disable=SC2012 # ls -ln is what is checked
like "$(ls -lnd "$MNT")" "^drwx------ +[0-9]+ $PG_UID $PG_GID " "ls -ln: postgres's uid and mode 0700 on the mount root"
# shellcheck disable=SC2012
is "$(ls -ln "$MNT" | awk 'NR > 1 && ($3 != '"$PG_UID"' || $4 != '"$PG_GID"')' | head -n 3)" "" \
	"ls -ln: every entry of the mount root is owned by postgres"
is "$(stat -c '%u %g' "$MNT/base/1/1259" 2>&1)" "$PG_UID $PG_GID" "a relation file is owned by postgres"
is "$(cat "$MNT/PG_VERSION" 2>&1)" 15 "PG_VERSION reads through the mount"
ok "backup_label is injected" test -f "$MNT/backup_label"
ok "backup_label is the backup's" grep -q "^LABEL: " "$MNT/backup_label"
ok "recovery.signal is injected" test -f "$MNT/recovery.signal"
AUTO=$(cat "$MNT/postgresql.auto.conf" 2>&1)
like "$AUTO" "restore_command = '''[^']*/cbfs'' wal-fetch ''$REPO'' %f %p'" \
	"postgresql.auto.conf: restore_command through cbfs wal-fetch" || diag "$AUTO"
like "$AUTO" "recovery_target = 'immediate'" "postgresql.auto.conf: recovery_target = 'immediate'"
like "$AUTO" "archive_mode = 'off'|archive_mode = off" "postgresql.auto.conf: archive_mode = off"
ok "the overlay directory holds the daemon's log" test -f "$OV/mount.log"
TS_OID=$(ls "$MNT/pg_tblspc")
like "$(readlink "$MNT/pg_tblspc/$TS_OID")" "^\.\./\.cbfs_tablespaces/[0-9]+$" \
	"the tablespace link points inside the mount (relative)"
ok "the tablespace's version folder is there" test -d "$MNT/pg_tblspc/$TS_OID/$(ls "$TMP/ts1")"

if ! start_on_mount "first mount"; then
	done_testing
fi
is "$(sql m postgres "show archive_mode")" off "archive_mode is off on the mount"
ok "recovery reached a consistent state" grep -q "consistent recovery state reached" "$TMP/m.log"
ok "recovery.signal is gone after the promotion" test ! -e "$MNT/recovery.signal"
same_as_source m "first mount"
for db in "${DBS[@]}"; do
	amcheck_ok m "$db"
done
is "$(sql m postgres "select sum(length(big)) from toasty")" $((20 * 3200 * 32)) "the TOAST values are whole"
is "$(sql m db2 "select count(*), sum(id) from in_ts1")" "5000|12502500" "the table in the tablespace reads through the mount"
is "$(sql m db2 "insert into in_ts1 values (-1, 'x') returning id")" -1 "and takes writes"
is "$(sql m postgres "select pg_tablespace_location(oid) from pg_tablespace where spcname = 'ts1'")" \
	"../.cbfs_tablespaces/$(readlink "$MNT/pg_tblspc/$TS_OID" | sed 's|.*/||')" "pg_tablespace_location shows the link"

# ---------------------------------------------------------------- write load
pgbench_as m -n -c 4 -j 2 -T 10 postgres >"$TMP/pgbench.out" 2>&1
is "$?" 0 "pgbench -T 10 write load on the mount" || diag "$(tail -n 20 "$TMP/pgbench.out")"
tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$TMP/pgbench.out")
cmp_ok "${tx:-0}" -gt 100 "pgbench committed transactions on the mount"
{
	psql_as m postgres "create table on_mount (id int primary key, v text);
		insert into on_mount select g, md5(g::text) from generate_series(1, 1000) g" &&
		psql_as m db2 "update t2 set v = 'changed' where id <= 100"
} >/dev/null 2>"$TMP/write.err"
is "$?" 0 "a new table and an update on the mount" || diag "$(cat "$TMP/write.err")"
history=$(sql m postgres "select count(*) from pgbench_history")
cmp_ok "$history" -gt 0 "pgbench_history has rows"
is "$(sql m postgres "select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history)")" \
	t "balances match the history after the load"
amcheck_ok m postgres

# ---------------------------------------------------------------- restart
pg_stop m
ok "the server stopped cleanly" grep -q "database system is shut down" "$TMP/m.log"
if start_on_mount "restart"; then
	is "$(sql m postgres "select count(*) from pgbench_history")" "$history" "restart: the pgbench transactions are there"
	is "$(sql m postgres "select count(*) from on_mount")" 1000 "restart: the new table is there"
	is "$(sql m db2 "select count(*) from t2 where v = 'changed'")" 100 "restart: the update is there"
	amcheck_ok m postgres
	pg_stop m
fi
umount_ok "first mount"
ok "the persistent overlay is kept after the unmount" test -f "$OV/mount.log"

# ---------------------------------------------------------------- remount, same overlay
cbfs_mount "$REPO@b1" "$MNT" -o "uid=postgres,gid=postgres,overlay=$OV"
is "$RC/$ERR" "0/" "remount with the same overlay"
ok "remount: recovery.signal is not injected again" test ! -e "$MNT/recovery.signal"
if start_on_mount "remount with the overlay"; then
	is "$(sql m postgres "select count(*) from on_mount")" 1000 "remount: the table created on the mount is there"
	is "$(sql m postgres "select count(*) from pgbench_history")" "$history" "remount: the pgbench transactions are there"
	is "$(sql m db2 "select count(*) from t2 where v = 'changed'")" 100 "remount: the update is there"
	is "$(sql m postgres "select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history)")" \
		t "remount: balances match the history"
	amcheck_ok m postgres
	amcheck_ok m db2
	pg_stop m
fi
umount_ok "remount with the overlay"

# ---------------------------------------------------------------- remount, no overlay
mkdir -p "$TMP/cd"
temp_overlays() { find "$TMP/cd" -maxdepth 1 -name 'cbfs-overlay-*' | LC_ALL=C sort; }
cbfs_mount "$REPO@latest" "$MNT" -o uid=postgres,gid=postgres,cache_dir="$TMP/cd"
is "$RC/$ERR" "0/" "mount @latest without overlay="
tmp_ov=$(temp_overlays)
is "$(grep -c . <<<"$tmp_ov")" 1 "a temporary overlay is in cache_dir"
is "$(stat -c %U "$tmp_ov")" postgres "it belongs to the user PostgreSQL runs as"
is "$(readlink "$MNT/pg_wal")" "$tmp_ov/pg_wal" "pg_wal is a link to the overlay's local pg_wal"
ok "the temporary overlay holds the daemon's log" test -f "$tmp_ov/mount.log"
ok "pristine: recovery.signal is injected" test -f "$MNT/recovery.signal"
if start_on_mount "pristine mount"; then
	is "$(psql_as m postgres "select count(*) from on_mount" 2>&1)" \
		'ERROR:  relation "on_mount" does not exist
LINE 1: select count(*) from on_mount
                             ^' "pristine: the table created on the other mount is absent"
	is "$(sql m postgres "select count(*) from pgbench_history")" 0 "pristine: no pgbench transactions"
	same_as_source m "pristine mount"
	amcheck_ok m postgres
	pg_stop m
fi
umount_ok "pristine mount"
gone=0
for ((i = 0; i < 50; i++)); do
	[[ -z $(temp_overlays) ]] && gone=1 && break
	sleep 0.2
done
ok "the temporary overlay is removed after the unmount" test "$gone" = 1

# ---------------------------------------------------------------- the repository
repo_files >"$TMP/repo.after"
ok "no file of the repository changed (sha256 of every file)" diff "$TMP/repo.before" "$TMP/repo.after"
repo_tree >"$TMP/tree.after"
ok "nothing in the repository was created, removed or modified (names, sizes, mtimes)" \
	diff "$TMP/tree.before" "$TMP/tree.after"
is "$(find "$REPO/mounts" -type f | wc -l)" 0 \
	"the mounts registered themselves (mounts/) and removed their registrations when they ended"

done_testing
