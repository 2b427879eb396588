#!/usr/bin/env bash
# cbfs wal-push and wal-fetch (DESIGN §5): archive_command pushes, the same
# content pushed twice is fine, different content is refused and never
# overwrites, another cluster's segment is refused, a missing segment is a
# quiet exit 1, a corrupt stored object is a loud exit 5.
source "$(dirname "$0")/lib.sh"

REPO=$TMP/repo
repo_init "$REPO"

pg_init a
pg_archive a "$REPO"
pg_start a || bail "could not start cluster a"
psql_as a postgres "create table t as select g from generate_series(1, 10000) g" >/dev/null

# archive_command stores segments
seg=$(pg_switch_and_archive a) || bail "segment not archived by cbfs wal-push: $(tail -n 5 "$TMP/a.log")"
pass "archive_command archived $seg"
mkdir "$TMP/w" "$TMP/w2" "$TMP/w3"
cp "$(datadir a)/pg_wal/$seg" "$TMP/w/$seg"
chown -R postgres:postgres "$TMP/w" "$TMP/w2" "$TMP/w3"

cbfs_pg wal-fetch "$REPO" "$seg" "$TMP/w3/fetched"
is "$RC/$ERR" "0/" "wal-fetch of an archived segment"
ok "fetched segment equals the original" cmp "$TMP/w/$seg" "$TMP/w3/fetched"

# the same content again
cbfs_pg wal-push "$REPO" "$TMP/w/$seg"
is "$RC/$ERR" "0/" "wal-push of the same content again exits 0"

# different content under the same name
cp "$TMP/w/$seg" "$TMP/w2/$seg"
flip_byte "$TMP/w2/$seg" $((1024 * 1024 + 100))
chown postgres:postgres "$TMP/w2/$seg"
cbfs_pg wal-push "$REPO" "$TMP/w2/$seg"
check_error "wal-push of different content is refused" 6 \
	"cbfs: WAL file \"$seg\" already exists in repository \"$REPO\" with different content"
rm -f "$TMP/w3/fetched"
cbfs_pg wal-fetch "$REPO" "$seg" "$TMP/w3/fetched"
is "$RC" 0 "wal-fetch after the refused push"
ok "the stored segment was not overwritten" cmp "$TMP/w/$seg" "$TMP/w3/fetched"

# a segment of another cluster, under a name the repository does not have
pg_init b
pg_start b || bail "could not start cluster b"
for ((i = 0; i < 12; i++)); do
	psql_as b postgres "select pg_logical_emit_message(false, 'cbfs', 'x'); select pg_switch_wal()" >/dev/null
done
segb=$(psql_as b postgres "
	select pg_walfile_name(pg_current_wal_insert_lsn())
	from (select pg_logical_emit_message(false, 'cbfs', 'x')) m")
psql_as b postgres "select pg_switch_wal()" >/dev/null
mkdir "$TMP/wb"
cp "$(datadir b)/pg_wal/$segb" "$TMP/wb/$segb"
chown -R postgres:postgres "$TMP/wb"
cbfs_pg wal-fetch "$REPO" "$segb" "$TMP/w3/b"
is "$RC" 1 "precondition: $segb is not in the repository"
cbfs_pg wal-push "$REPO" "$TMP/wb/$segb"
check_error "wal-push of another cluster's segment is refused" 4 \
	"cbfs: WAL file \"$segb\" belongs to database system $(sysid b), not $(sysid a) of repository \"$REPO\""
cbfs_pg wal-fetch "$REPO" "$segb" "$TMP/w3/b"
is "$RC" 1 "the refused segment was not stored"
pg_stop b

# missing segment and history file: quiet exit 1, nothing written
cbfs_pg wal-fetch "$REPO" 0000000100000000000000FE "$TMP/w3/missing"
is "$RC/$ERR" "1/" "wal-fetch of a missing segment: exit 1, nothing on stderr"
ok "no file written for the missing segment" test ! -e "$TMP/w3/missing"
cbfs_pg wal-fetch "$REPO" 00000002.history "$TMP/w3/missing"
is "$RC/$ERR" "1/" "wal-fetch of a missing history file: exit 1, nothing on stderr"

# corrupt stored object
mapfile -t objs < <(find "$REPO/wal" -type f -name "*$seg*" 2>/dev/null)
if ((${#objs[@]} == 1)); then
	pass "one object in $REPO/wal stores $seg"
	obj=${objs[0]}
	size=$(stat -c %s "$obj")
	flip_byte "$obj" $((size / 2))
	cbfs_pg wal-fetch "$REPO" "$seg" "$TMP/w3/corrupt"
	is "$RC" 5 "wal-fetch of a corrupt object exits 5"
	like "$ERR" "^cbfs: .*($seg|$(basename "$obj"))" "the message names the object"
	is "$(wc -l <"$TMP/run.err")" 1 "the message is one line"
	if [[ -e $TMP/w3/corrupt ]] && cmp -s "$TMP/w3/corrupt" "$TMP/w/$seg"; then
		fail "no wrong data handed out" "the corrupt object was fetched as the original?"
	else
		pass "no wrong data handed out"
	fi
else
	fail "one object in $REPO/wal stores $seg" "found: ${objs[*]:-none}" "$(find "$REPO/wal" | head -n 30)"
fi

# the server keeps archiving through all this
seg2=$(pg_switch_and_archive a)
ok "archive_command still works" test -n "$seg2"

# prefetch: after serving segment N, wal-fetch fetches N+1.. into a spool
# beside DEST in the background; the next call serves it from there
s1=$(pg_switch_and_archive a) || bail "no segment archived"
psql_as a postgres "insert into t select g from generate_series(1, 1000) g" >/dev/null
s2=$(pg_switch_and_archive a) || bail "no segment archived"
mkdir -p "$TMP/pf/pg_wal"
chown -R postgres:postgres "$TMP/pf"
cbfs_pg wal-fetch "$REPO" "$s1" "$TMP/pf/pg_wal/RECOVERYXLOG"
is "$RC/$ERR" "0/" "wal-fetch $s1"
for ((i = 0; i < 50; i++)); do
	[[ -f $TMP/pf/pg_wal/cbfs-prefetch/$s2 ]] && break
	sleep 0.1
done
ok "the next segment ($s2) was prefetched into pg_wal/cbfs-prefetch" test -f "$TMP/pf/pg_wal/cbfs-prefetch/$s2"
cbfs_pg wal-fetch "$REPO" "$s2" "$TMP/pf/pg_wal/RECOVERYXLOG"
is "$RC/$ERR" "0/" "wal-fetch $s2"
ok "it was served from the spool" test ! -e "$TMP/pf/pg_wal/cbfs-prefetch/$s2"
ok "and equals the original" cmp "$TMP/pf/pg_wal/RECOVERYXLOG" "$(datadir a)/pg_wal/$s2"
ok "the older spooled segment is pruned" test ! -e "$TMP/pf/pg_wal/cbfs-prefetch/$s1"

# background push: a call for segment N with more segments ready in
# archive_status starts a pusher that stores them ahead and leaves markers;
# the archiver's call for one of them then returns at once, but only for
# the very file the marker names and only for the repository it names
s3=$(pg_switch_and_archive a) || bail "no segment archived"
Q=$TMP/q/pg_wal
mkdir -p "$Q/archive_status"
for s in "$seg2" "$s1" "$s2" "$s3"; do
	cbfs wal-fetch "$REPO" "$s" "$Q/$s" || bail "could not fetch $s: $ERR"
	touch "$Q/archive_status/$s.ready"
done
chown -R postgres:postgres "$TMP/q"
REPO2=$TMP/repo2
repo_init "$REPO2"
cbfs_pg wal-push "$REPO2" "$Q/$seg2"
is "$RC/$ERR" "0/" "wal-push $seg2 with three more segments ready"
for ((i = 0; i < 100; i++)); do
	[[ -f $Q/cbfs-push/$s1.ok && -f $Q/cbfs-push/$s2.ok && -f $Q/cbfs-push/$s3.ok ]] && break
	sleep 0.1
done
ok "the pusher left markers for $s1, $s2 and $s3" \
	test -f "$Q/cbfs-push/$s1.ok" -a -f "$Q/cbfs-push/$s2.ok" -a -f "$Q/cbfs-push/$s3.ok"
for s in "$s1" "$s2" "$s3"; do
	rm -f "$TMP/w3/q"
	cbfs_pg wal-fetch "$REPO2" "$s" "$TMP/w3/q"
	ok "$s was stored ahead, whole" cmp "$TMP/w3/q" "$Q/$s"
done
mv "$Q/archive_status/$seg2.ready" "$Q/archive_status/$seg2.done"
chmod 000 "$Q/$s1" # answered from the marker, the file is not read again
cbfs_pg wal-push "$REPO2" "$Q/$s1"
is "$RC/$ERR" "0/" "the archiver's call for $s1 is answered from the marker (file not read)"
chmod 600 "$Q/$s1"
ok "and the marker is gone" test ! -e "$Q/cbfs-push/$s1.ok"
mv "$Q/archive_status/$s1.ready" "$Q/archive_status/$s1.done"
cp "$Q/$s2" "$TMP/q/other"
flip_byte "$TMP/q/other" $((2 * 1024 * 1024 + 7))
chown postgres:postgres "$TMP/q/other"
mv "$TMP/q/other" "$Q/$s2"
cbfs_pg wal-push "$REPO2" "$Q/$s2"
check_error "a marker for another file is not trusted" 6 \
	"cbfs: WAL file \"$s2\" already exists in repository \"$REPO2\" with different content"
REPO3=$TMP/repo3
repo_init "$REPO3"
cbfs_pg wal-push "$REPO3" "$Q/$s3"
is "$RC/$ERR" "0/" "wal-push $s3 into another repository"
rm -f "$TMP/w3/q"
cbfs_pg wal-fetch "$REPO3" "$s3" "$TMP/w3/q"
ok "a marker for another repository is not trusted: $s3 is stored there" cmp "$TMP/w3/q" "$Q/$s3"

done_testing
