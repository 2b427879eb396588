#!/usr/bin/env bash
# expire, gc and pin on an S3 repository (a real Swift s3api server):
# backups of a changing cluster, expire keeping one, gc rewriting packs
# (relocation maps in S3), a backup that starts after gc's plan while gc is
# paused before its sweep, and a gc killed with -9 mid-rewrite then run
# again; afterwards check --read-data is clean and the kept backups restore
# equal to the source.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib-s3.sh"

BUCKET=cbfs-gc
s3_setup "$BUCKET"
REPO=s3://$BUCKET/gc
s3_config "$TMP/cbfs.conf"
s3_env_off
export CBFS_CONFIG=$TMP/cbfs.conf
cbfs_pg init "$REPO"
is "$RC/$ERR" "0/" "init $REPO"

pg_init d
pg_archive d "$REPO"
pg_start d || bail "could not start cluster d"
pgbench_as d -i -s 3 -q postgres >"$TMP/pgbench.out" 2>&1 || bail "pgbench -i failed"
change() {
	psql_as d postgres "update pgbench_accounts set abalance = abalance + 1 where aid % $1 = 0; checkpoint" >/dev/null
}
backup d "$REPO" b1
change 3
backup d "$REPO" b2
cbfs pin "$REPO@b1"
is "$RC/$OUT" "0/backup b1 pinned" "pin b1 in S3"
change 5
backup d "$REPO" b3
H3=$(table_hashes d postgres)
cbfs expire "$REPO" --keep-last 1
like "$OUT" "keep    b1 \\(pinned\\)" "the pinned backup stays"
like "$OUT" "expired 1 of 3 backups" "b2 expires"
cbfs unpin "$REPO@b1"
cbfs expire "$REPO" --keep-last 1
like "$OUT" "expired 1 of 2 backups" "b1 expires once unpinned"
cbfs gc "$REPO" --max-waste 0
is "$RC" 0 "gc in S3"
like "$OUT" "gc complete: removed [1-9][0-9]* packs?, rewrote [1-9][0-9]* packs?" "gc removes and rewrites packs in S3"
cbfs check "$REPO" --read-data
is "$RC" 0 "check --read-data after gc (blocks read through relocation maps in S3)"
cbfs_restore "$REPO@b3" r3 && pg_start r3 && pg_wait_promoted r3 &&
	is "$(table_hashes r3 postgres)" "$H3" "b3 restores from S3 after gc, equal to the source"
pg_stop r3

# a backup registered after the plan, while gc waits before its sweep
change 7
cbfs expire "$REPO" --keep-last 1 >/dev/null
backup d "$REPO" b4
cbfs expire "$REPO" --keep-last 1 >/dev/null
bg_cbfs g gc-sweep gc "$REPO" --max-waste 0
G=$BG_PID
wait_reached gc-sweep || fail "gc reached its sweep"
change 11
bg_cbfs b5 none backup "$REPO" --pgdata "$(datadir d)" --dbname "$(conninfo d)" --label b5
B5=$BG_PID
wait "$B5"
is "$?" 0 "backup b5 runs to its end while gc waits before its sweep"
H5=$(table_hashes d postgres)
release gc-sweep
wait "$G"
is "$?" 0 "gc sweeps after b5 has finished"
cbfs check "$REPO" --read-data
is "$RC" 0 "check --read-data: b5 and gc did not get in each other's way"

# gc killed with -9 after its new packs are stored, before the maps
rm -f "$PAUSE"/*
change 13
backup d "$REPO" b6
cbfs expire "$REPO" --keep-last 1 >/dev/null
bg_cbfs k gc-repack-stored gc "$REPO" --max-waste 0
wait_reached gc-repack-stored || fail "gc reached gc-repack-stored"
kill -9 "$BG_PID"
wait "$BG_PID" 2>/dev/null
cbfs gc "$REPO" --max-waste 0
is "$RC" 0 "gc runs again after a kill"
like "$ERR" "removing the lock of repository \"$REPO\" left by gc" "and breaks the dead gc's lock"
cbfs check "$REPO" --read-data
is "$RC" 0 "check --read-data after the rerun"
H6=$(table_hashes d postgres)
cbfs_restore "$REPO@b6" r6 && pg_start r6 && pg_wait_promoted r6 &&
	is "$(table_hashes r6 postgres)" "$H6" "b6 restores from S3, equal to the source"
pg_stop r6

done_testing
