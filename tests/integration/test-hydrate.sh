#!/usr/bin/env bash
# Hydration and materialize (issue 18, item 3): `cbfs hydrate` copies a
# mounted backup into its overlay in the background at a limited rate; an
# unmount interrupts it and the next mount of that overlay goes on; at
# 100% the data is the backup's, and `cbfs umount --materialize` turns the
# mount into an ordinary data directory that PostgreSQL starts on with no
# mount involved.  Refusals of --materialize (not hydrated, server
# running, target not empty, another file system, not a mount) are one
# line each.
source "$(dirname "$0")/lib.sh"
need_mount

REPO=$TMP/repo
repo_init "$REPO"
pg_init src
pg_archive src "$REPO"
pg_start src || bail "could not start cluster src"
pgbench_as src -i -s 4 -q postgres >/dev/null 2>&1 || bail "pgbench -i failed"
psql_as src postgres "create table kept as select g, md5(g::text) t from generate_series(1, 50000) g" \
	>/dev/null || bail "could not create table kept"
backup src "$REPO" b1 || bail "the backup failed"
table_hashes src postgres >"$TMP/src.tables"
pg_stop src

MNT=$(datadir m)
OV=$TMP/ov
mkdir -p "$MNT"
OWNER=uid=postgres,gid=postgres
status() { cbfs hydrate "$MNT" --status --json && json_get "$OUT" "$1"; }

# ---------------------------------------------------------------- hydrate, interrupted, resumed
cbfs_mount "$REPO@b1" "$MNT" -o "$OWNER,overlay=$OV"
is "$RC/$ERR" "0/" "mount with a persistent overlay"
is "$(status 'j["state"]')" "not started" "--status before: not started"
cbfs hydrate "$MNT" --rate 8M
is "$RC/$ERR" "0/" "cbfs hydrate --rate 8M"
like "$OUT" "^hydration of \"$MNT\" asked for \(at most 8(\.0)? MB/s\); see \"cbfs hydrate $MNT --status\"$" \
	"... says so"
for ((i = 0; i < 100; i++)); do
	[[ $(status 'j["state"]') == running ]] && (($(status 'j["bytes_done"]') > 0)) && break
	sleep 0.2
done
sleep 1
TOTAL=$(status 'j["bytes_total"]')
DONE1=$(status 'j["bytes_done"]')
cmp_ok "$TOTAL" -gt 30000000 "--status: $TOTAL bytes to hydrate in all"
cmp_ok "$DONE1" -gt 0 "--status: it is under way ($DONE1 bytes)"
cmp_ok "$DONE1" -lt "$TOTAL" "... not done at 8 MB/s yet"
DPID=$(mount_daemon_pid "$MNT")
cbfs_umount "$MNT"
is "$RC/$ERR" "0/" "umount in the middle of it"
ok "... the daemon ends at once, its hydration stopped" wait_gone "$DPID" 5
like "$(cat "$OV/hydrate.status")" "state = (stopped|running)" "the status file says it did not finish"
cbfs_mount "$REPO@b1" "$MNT" -o "$OWNER,overlay=$OV"
is "$RC/$ERR" "0/" "remount the same overlay"
cbfs hydrate "$MNT" --wait
is "$RC" 0 "it goes on by itself; cbfs hydrate --wait returns when it is done"
like "$OUT" "^hydration of \"$MNT\": done, $TOTAL of $TOTAL bytes \(100\.0%\)" "... 100%"
like "$(cat "$OV/mount.log")" "hydration started: [0-9]+ bytes of [0-9]+ files to bring up \([1-9][0-9]* here already\)" \
	"the remount's log: it started from where it was"
like "$(cat "$OV/mount.log")" "hydration done: " "... and that it finished"

# ---------------------------------------------------------------- the data
if pg_start m && pg_wait_promoted m; then
	pass "PostgreSQL on the hydrated mount"
	table_hashes m postgres >"$TMP/m.tables"
	ok "... every table as in the backup" diff "$TMP/src.tables" "$TMP/m.tables"
	amcheck_ok m postgres
	psql_as m postgres "insert into kept values (0, 'after')" >/dev/null
else
	fail "PostgreSQL on the hydrated mount" "$(tail -n 20 "$TMP/m.log")"
fi

# ---------------------------------------------------------------- refusals
cbfs umount "$MNT" --materialize "$TMP/out"
check_error "--materialize while the server runs: refused" 2 \
	"cbfs: could not materialize \"$MNT\": the server on it is running (pid ${PG_PID[m]})"
ok "... still mounted" is_mounted "$MNT"
pg_stop m
mkdir -p "$TMP/full"
echo x >"$TMP/full/f"
cbfs umount "$MNT" --materialize "$TMP/full"
check_error "--materialize into a folder that is not empty: refused" 8 \
	"cbfs: could not materialize \"$MNT\" into \"$TMP/full\": it is not empty"
OTHER=$TMP/otherfs
mkdir -p "$OTHER"
mount -t tmpfs -o size=8m tmpfs "$OTHER" || bail "could not mount a tmpfs"
at_exit umount -l "$OTHER"
cbfs umount "$MNT" --materialize "$OTHER/d"
check_error "--materialize into another file system: refused" 8 \
	"cbfs: could not materialize \"$MNT\" into \"$OTHER/d\": it is not on the file system of the mount's overlay \"$OV\""
cbfs hydrate "$TMP"
check_error "cbfs hydrate of a folder that is no mount" 2 \
	"cbfs: could not hydrate \"$TMP\": not a mounted backup"
# a second mount, not hydrated
M2=$(datadir m2)
mkdir -p "$M2"
cbfs_mount "$REPO@b1" "$M2" -o "$OWNER,overlay=$TMP/ov2"
cbfs umount "$M2" --materialize "$TMP/out2"
like "$RC/$ERR" "^2/cbfs: could not materialize into \"$TMP/out2\": hydration is not complete \([0-9]+ of $TOTAL bytes of the backup are in the overlay\)$" \
	"--materialize before hydration: refused"
ok "... nothing made" test ! -e "$TMP/out2"
cbfs_umount "$M2"

# ---------------------------------------------------------------- materialize
cbfs umount "$MNT" --materialize "$TMP/out"
is "$RC/$ERR" "0/" "cbfs umount --materialize"
like "$OUT" "^materialized \"$MNT\" into \"$TMP/out\" \([0-9]+ files moved\); start it with pg_ctl -D $TMP/out$" \
	"... says where"
ok "the mount is gone" bash -c "! awk -v m='$MNT' '\$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo"
for ((i = 0; i < 50; i++)); do
	[[ -e $OV ]] || break
	sleep 0.1
done
ok "the overlay, used up, is gone" test ! -e "$OV"
ok "pg_wal in the result is a folder of its own" test -d "$TMP/out/pg_wal" -a ! -L "$TMP/out/pg_wal"
is "$(stat -c %U "$TMP/out/PG_VERSION")" postgres "its files belong to postgres"
OUTDIR=$TMP/out
datadir() { [[ $1 == out ]] && echo "$OUTDIR" || echo "$TMP/$1"; }
if pg_start out; then
	pass "PostgreSQL starts on the materialized directory"
	is "$(findmnt -n -T "$OUTDIR" -o FSTYPE)" "$(findmnt -n -T "$TMP" -o FSTYPE)" "... a plain folder, no mount"
	is "$(psql_as out postgres "select t from kept where g = 0")" after "... with what was written on the mount"
	psql_as out postgres "delete from kept where g = 0" >/dev/null
	table_hashes out postgres >"$TMP/out.tables"
	ok "... and every table as in the backup" diff "$TMP/src.tables" "$TMP/out.tables"
	amcheck_ok out postgres
	pg_stop out
else
	fail "PostgreSQL starts on the materialized directory" "$(tail -n 20 "$TMP/out.log")"
fi

done_testing
