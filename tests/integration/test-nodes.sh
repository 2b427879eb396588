#!/usr/bin/env bash
# Several nodes in one repository (issue 15, docs/design.md §8): two
# independent PostgreSQL servers archive and back up as nodes "a" and "b"
# of one repository; blocks are shared, WAL, backups, points and pins are
# each node's.  A server of another system identifier is refused as a node
# (both identifiers named); a repository of named nodes wants --node; every
# command takes --node; gc stays safe while another node backs up; and a
# repository made before nodes (the default node) works as it always did,
# also once named nodes join it.
source "$(dirname "$0")/lib.sh"
need_mount

REPO=$TMP/repo
repo_init "$REPO"
for n in a b; do
	pg_init "$n"
	pg_conf "$n" "archive_mode = on" "archive_command = '$CBFS wal-push --node $n $REPO %p'"
	pg_start "$n" || bail "could not start $n"
done
psql_as a postgres "create table t (id int primary key, v text); insert into t select g, 'a' || g from generate_series(1, 50000) g" >/dev/null
psql_as b postgres "create table t (id int primary key, v text); insert into t select g, 'b' || g from generate_series(1, 30000) g" >/dev/null
backup a "$REPO" a1 --node a
backup b "$REPO" b1 --node b
ok "the nodes' claims" test -f "$REPO/nodes/a" -a -f "$REPO/nodes/b"
ok "one packs folder for both" test -d "$REPO/packs" -a ! -e "$REPO/node/a/packs"
seg=$(pg_switch_and_archive a)
ok "a's WAL is a's ($seg)" test -f "$REPO/node/a/wal/00000001/$seg"

# ---------------------------------------------------------------- identities
cbfs backup "$REPO" --node a --pgdata "$(datadir b)" --dbname "$(conninfo b)"
check_error "another server backing up as node a" 4 "cbfs: node \"a\" of repository \"$REPO\" belongs to database system $(sysid a), not $(sysid b)"
bseg=$(ls "$(datadir b)/pg_wal" | grep -E '^[0-9A-F]{24}$' | head -n 1)
cbfs_pg wal-push --node a "$REPO" "$(datadir b)/pg_wal/$bseg"
check_error "another server pushing WAL as node a" 4 "cbfs: WAL file \"$bseg\" belongs to database system $(sysid b), not $(sysid a) of node \"a\" of repository \"$REPO\""
cbfs backup "$REPO" --pgdata "$(datadir a)" --dbname "$(conninfo a)"
check_error "no --node in a repository of named nodes" 2 "cbfs: repository \"$REPO\" holds nodes a and b: choose one with --node"
ok "... and the default node was not made" test ! -e "$REPO/cluster"
cbfs backup "$REPO" --node ../a --pgdata "$(datadir a)" --dbname "$(conninfo a)"
check_error "an invalid node name" 2 "cbfs: invalid node name \"../a\" (1 to 63 letters, digits, '.', '_' or '-', not starting with '.' or '-')"

# ---------------------------------------------------------------- every command takes --node
cbfs list "$REPO" --node b --json
is "$(json_get "$OUT" '" ".join(x["node"] + "/" + x["label"] for x in j)')" "b/b1" "list --node b"
cbfs info "$REPO@latest" --node a --json
is "$(json_get "$OUT" 'j["label"] + " " + j["node"]')" "a1 a" "info --node a"
cbfs pin "$REPO@b1" --node b
is "$RC/$OUT" "0/backup b1 pinned" "pin --node b"
ok "... b's pin" test -f "$REPO/node/b/pins/b1"
HB=$(table_hashes b postgres)
cbfs_restore "$REPO@b1" rb --node b && pg_start rb && pg_wait_promoted rb &&
	is "$(table_hashes rb postgres)" "$HB" "restore --node b: b's rows"
pg_stop rb
mkdir -p "$TMP/ma"
cbfs_mount "$REPO@a1" "$TMP/ma" -o node=a,uid=postgres,gid=postgres
is "$RC/$ERR" "0/" "mount -o node=a"
ok "... its own registration" test -n "$(ls "$REPO/node/a/mounts" 2>/dev/null)"
cbfs_umount "$TMP/ma"
cbfs verify "$REPO@latest" --node a
is "$RC" 0 "verify --node a"
cbfs check "$REPO" --read-data
is "$RC" 0 "check of both nodes"
like "$OUT" $'node "a":\nbackup "a1": ok' "... node by node"
cbfs check "$REPO" --node b
like "$OUT" $'^node "b":\nbackup "b1": ok' "check --node b"
like "$OUT" $'\npacks: [0-9]+ used by node b\'s backups, 0 missing\n' "... the packs it uses"

# ---------------------------------------------------------------- gc while another node backs up
psql_as a postgres "update t set v = v || 'x' where id % 3 = 0; checkpoint" >/dev/null
backup a "$REPO" a2 --node a
psql_as b postgres "update t set v = v || 'y'; checkpoint" >/dev/null
bg_cbfs bb backup-registered backup "$REPO" --node b --pgdata "$(datadir b)" --dbname "$(conninfo b)" --label b2
BB=$BG_PID
wait_reached backup-registered || fail "b's backup registered"
cbfs expire "$REPO" --keep-last 1
like "$OUT" "a: expire  a1" "expire node by node: a1 goes"
like "$OUT" "b: keep    b1 \\(newest, pinned, last\\)" "... b1 stays (pinned)"
cbfs gc "$REPO" --max-waste 0
like "$OUT" "gc deferred: 1 running backup" "gc defers while node b's backup runs"
like "$OUT" "running: .* of node b" "... naming it"
release backup-registered
wait "$BB"
is "$?" 0 "b's backup completes"
cbfs gc "$REPO" --max-waste 0
like "$OUT" "gc complete: removed [1-9][0-9]* packs?" "gc completes afterwards"
cbfs check "$REPO" --read-data
is "$RC" 0 "check --read-data: every node's backups whole"
HB2=$(table_hashes b postgres)
cbfs_restore "$REPO@b2" rb2 --node b && pg_start rb2 && pg_wait_promoted rb2 &&
	is "$(table_hashes rb2 postgres)" "$HB2" "b2 restores after gc"
pg_stop rb2
HA=$(table_hashes a postgres)
cbfs_restore "$REPO@a2" ra2 --node a && pg_start ra2 && pg_wait_promoted ra2 &&
	is "$(table_hashes ra2 postgres)" "$HA" "a2 restores after gc"
pg_stop ra2

# ---------------------------------------------------------------- a repository made before nodes
OLD=$TMP/old
repo_init "$OLD"
pg_init c
pg_conf c "archive_mode = on" "archive_command = '$CBFS wal-push $OLD %p'"
pg_start c || bail "could not start c"
psql_as c postgres "create table t as select g from generate_series(1, 1000) g" >/dev/null
backup c "$OLD" c1
ok "the default node where it always was" test -f "$OLD/cluster" -a -f "$OLD/backups/c1.info"
cbfs backup "$OLD" --node a --pgdata "$(datadir a)" --dbname "$(conninfo a)" --label na
is "$RC" 0 "a named node joins it"
cbfs list "$OLD" --json
is "$(json_get "$OUT" '" ".join(x["node"] + "/" + x["label"] for x in j)')" "default/c1 a/na" "list: the default node and the new one"
HC=$(table_hashes c postgres)
cbfs_restore "$OLD@c1" rc1 && pg_start rc1 && pg_wait_promoted rc1 &&
	is "$(table_hashes rc1 postgres)" "$HC" "restore without --node: the default node, as before"
pg_stop rc1
cbfs check "$OLD"
is "$RC" 0 "check of the old repository and its new node"

done_testing
