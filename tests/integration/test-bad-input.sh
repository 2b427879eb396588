#!/usr/bin/env bash
# Bad input (issue 2, §5): each case gives one exact line on stderr, the
# documented exit code, and leaves nothing half-written.
source "$(dirname "$0")/lib.sh"

REPO=$TMP/repo
repo_init "$REPO"
pg_init a
pg_archive a "$REPO"
pg_start a || bail "could not start cluster a"
psql_as a postgres "create table t as select g from generate_series(1, 1000) g" >/dev/null
backup a "$REPO" first --jobs 2 || bail "the first backup failed"

# --- repository missing or not a repository
NOPE=$TMP/nope
cbfs list "$NOPE"
check_error "list: missing repository" 3 "cbfs: could not open repository \"$NOPE\": No such file or directory"
cbfs info "$NOPE@first"
check_error "info: missing repository" 3 "cbfs: could not open repository \"$NOPE\": No such file or directory"
cbfs backup "$NOPE" --pgdata "$(datadir a)" --dbname "$(conninfo a)"
check_error "backup: missing repository" 3 "cbfs: could not open repository \"$NOPE\": No such file or directory"
cbfs restore "$NOPE" "$TMP/r0"
check_error "restore: missing repository" 3 "cbfs: could not open repository \"$NOPE\": No such file or directory"
ok "restore from a missing repository created nothing" test ! -e "$TMP/r0"
ok "no repository was created" test ! -e "$NOPE"

EMPTY=$TMP/empty
mkdir "$EMPTY"
cbfs list "$EMPTY"
check_error "list: empty directory" 3 "cbfs: could not open repository \"$EMPTY\": not a cbfs repository"
NOTREPO=$TMP/notrepo
mkdir "$NOTREPO"
echo hello >"$NOTREPO/somefile"
cbfs list "$NOTREPO"
check_error "list: directory that is not a repository" 3 "cbfs: could not open repository \"$NOTREPO\": not a cbfs repository"
cbfs backup "$NOTREPO" --pgdata "$(datadir a)" --dbname "$(conninfo a)"
check_error "backup: directory that is not a repository" 3 "cbfs: could not open repository \"$NOTREPO\": not a cbfs repository"
cbfs restore "$NOTREPO" "$TMP/r0"
check_error "restore: directory that is not a repository" 3 "cbfs: could not open repository \"$NOTREPO\": not a cbfs repository"
is "$(ls -A "$NOTREPO")" somefile "the directory was left alone"
is "$(ls -A "$EMPTY")" "" "the empty directory was left alone"

# --- init
cbfs init "$NOTREPO"
check_error "init into a non-empty directory" nz "cbfs: could not create repository \"$NOTREPO\": directory is not empty"
is "$(ls -A "$NOTREPO")" somefile "init left the non-empty directory alone"
cbfs init "$REPO"
check_error "init of an existing repository" nz "cbfs: could not create repository \"$REPO\": repository already exists"
is "$(labels "$REPO")" first "the existing repository still lists its backup"
for bs in 12k 4k 2M 0 abc; do
	cbfs init "$TMP/bs-$bs" --block-size "$bs"
	# a usage error: one line, and PostgreSQL's "Try ... --help" hint may follow
	if ((RC != 0)) && [[ $ERR =~ ^cbfs:\ [^$'\n']+($'\n'Try\ [^$'\n']+)?$ ]]; then
		pass "init --block-size $bs is refused with one line"
	else
		fail "init --block-size $bs is refused with one line" "exit $RC" "stderr: $ERR"
	fi
	if [[ ! -e $TMP/bs-$bs || -z $(ls -A "$TMP/bs-$bs") ]]; then
		pass "init --block-size $bs left no repository"
	else
		fail "init --block-size $bs left no repository" "$(ls -A "$TMP/bs-$bs")"
	fi
done
for bs in 8k 65536 1M; do
	ok_cbfs "init --block-size $bs" init "$TMP/bsok-$bs" --block-size "$bs"
done

# --- PGDATA not a data directory
NOTPG=$TMP/notpg
mkdir "$NOTPG"
cbfs backup "$REPO" --pgdata "$NOTPG" --dbname "$(conninfo a)"
check_error "backup: PGDATA is not a data directory" 4 "cbfs: \"$NOTPG\" is not a PostgreSQL data directory"

# --- another cluster than the repository's
pg_init b
pg_start b || bail "could not start cluster b"
cbfs backup "$REPO" --pgdata "$(datadir b)" --dbname "$(conninfo b)" --label other
check_error "backup: another database system" 4 \
	"cbfs: repository \"$REPO\" belongs to database system $(sysid a), not $(sysid b)"
pg_stop b

# --- server unreachable
port=$(free_port)
cbfs backup "$REPO" --pgdata "$(datadir a)" --dbname "host=$SOCK port=$port user=postgres dbname=postgres"
is "$RC" 4 "backup: server unreachable exits 4"
like "$ERR" "^cbfs: could not connect to the server: " "backup: server unreachable message"
is "$(wc -l <"$TMP/run.err")" 1 "backup: server unreachable message is one line"

# --- wal_level minimal
REPO2=$TMP/repo2
repo_init "$REPO2"
pg_init m
pg_conf m "wal_level = minimal" "max_wal_senders = 0" "archive_mode = off"
pg_start m || bail "could not start cluster m"
cbfs backup "$REPO2" --pgdata "$(datadir m)" --dbname "$(conninfo m)" --label minimal
check_error "backup: wal_level minimal" 4 \
	"cbfs: cannot back up: wal_level is \"minimal\"; it must be \"replica\" or \"logical\""
is "$(labels "$REPO2")" "" "no backup listed after the refused backup"
pg_stop m

# --- unknown label
cbfs info "$REPO@nosuch"
check_error "info: unknown label" 7 "cbfs: backup \"nosuch\" not found in repository \"$REPO\""
cbfs restore "$REPO@nosuch" "$TMP/r1"
check_error "restore: unknown label" 7 "cbfs: backup or restore point \"nosuch\" not found in repository \"$REPO\""
if [[ ! -e $TMP/r1 || -z $(ls -A "$TMP/r1") ]]; then
	pass "restore of an unknown label wrote nothing"
else
	fail "restore of an unknown label wrote nothing" "$(ls -A "$TMP/r1")"
fi

# --- restore target not empty
mkdir "$TMP/r2"
echo keep >"$TMP/r2/keep"
cbfs restore "$REPO@first" "$TMP/r2"
check_error "restore: target not empty" 8 "cbfs: could not restore into \"$TMP/r2\": directory is not empty"
is "$(ls -A "$TMP/r2")" keep "the non-empty target was left alone"

# --- after all that, the repository is as it was
is "$(labels "$REPO")" first "the repository lists exactly its one backup"
cbfs info "$REPO@first" --json
is "$RC" 0 "info of the backup"

done_testing
