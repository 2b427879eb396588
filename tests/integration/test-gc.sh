#!/usr/bin/env bash
# cbfs gc (issue 7, DESIGN §3.9) on a real PostgreSQL 15 cluster: after
# expire, gc removes unused packs and rewrites mostly unused ones (with
# relocation maps that restore, mount and check follow, through chains);
# point-in-time recovery to a restore point inside the kept window still
# works through the mount.  Concurrency, forced with pause points
# (CBFS_TEST_PAUSE): a backup registered before gc's plan defers it; a
# backup that starts after the plan keeps away from its packs while gc
# removes them (without that, it would reuse the packs of a killed backup
# that gc removes, and check would find them missing).  gc killed with -9
# at each step and at random moments, then run again: every kept backup
# intact, check --read-data clean.
source "$(dirname "$0")/lib.sh"
need_mount

REPO=$TMP/repo
repo_init "$REPO"
pg_init d
pg_archive d "$REPO"
pg_start d || bail "could not start cluster d"
pgbench_as d -i -s 4 -q postgres >"$TMP/pgbench.out" 2>&1 || bail "pgbench -i failed"
psql_as d postgres "create table marker (v text)" >/dev/null

npacks() { find "$REPO/packs" -name '*.pack' | wc -l; }
change() { # change some pages of pgbench_accounts
	psql_as d postgres "update pgbench_accounts set abalance = abalance + 1 where aid % $1 = 0; checkpoint" >/dev/null
}
bg_wait() {
	wait "$1"
	BG_RC=$?
}
check_clean() { # NAME: check --read-data finds nothing
	cbfs check "$REPO" --read-data
	if ((RC == 0)); then pass "$1"; else fail "$1" "exit $RC" "$OUT" "$ERR"; fi
}

# ---------------------------------------------------------------- history
backup d "$REPO" b1
change 3
psql_as d postgres "select pg_create_restore_point('rp1')" >/dev/null
cbfs restore-point "$REPO" rp1x --dbname "$(conninfo d)"
backup d "$REPO" b2
change 5
backup d "$REPO" b3
psql_as d postgres "insert into marker values ('at-rp3')" >/dev/null
cbfs restore-point "$REPO" rp3 --dbname "$(conninfo d)"
is "$RC" 0 "restore point rp3 after b3"
psql_as d postgres "update marker set v = 'after-rp3'" >/dev/null
change 7
backup d "$REPO" b4
H4=$(table_hashes d postgres)

cbfs gc "$REPO" --dry-run
is "$RC" 0 "gc --dry-run"
like "$OUT" "^would remove 0 unused packs" "nothing unused before expire"
cbfs gc "$REPO"
like "$OUT" "nothing to collect" "gc with nothing to do"

cbfs expire "$REPO" --keep-last 2
like "$OUT" "expired 2 of 4 backups, [1-9][0-9]* WAL files .* and 1 restore point;" "expire --keep-last 2 keeps b3 and b4"
before=$(npacks)
cbfs gc "$REPO" --max-waste 0
is "$RC" 0 "gc --max-waste 0"
like "$OUT" "gc complete: removed [1-9][0-9]* packs?, rewrote [1-9][0-9]* packs? .*freed [0-9.]+ [kMG]?B" "gc removes and rewrites packs and says what it freed"
after=$(npacks)
cmp_ok "$after" -lt "$before" "fewer packs ($before -> $after)"
nmaps=$(find "$REPO/moved" -type f | wc -l)
cmp_ok "$nmaps" -gt 0 "relocation maps for the rewritten packs: $nmaps"
is "$(ls "$REPO/gc" 2>/dev/null | wc -l)" 0 "no plan is left"
ok "the lock is released" test ! -e "$REPO/lock"
check_clean "check --read-data after expire and gc"

# PITR inside the kept window, through the mount (its blocks are read through the maps)
mount_query() { # NAME SPEC SQL: mounts SPEC, starts it, prints SQL's result
	local name=$1 spec=$2 mnt
	mnt=$(datadir "$name")
	mkdir -p "$mnt"
	cbfs_mount "$spec" "$mnt" -o uid=postgres,gid=postgres
	((RC == 0)) || {
		echo "mount failed: $ERR"
		return
	}
	if pg_start "$name" >/dev/null && pg_wait_promoted "$name"; then
		psql_as "$name" postgres "$3"
		pg_stop "$name"
	else
		echo "start failed: $(tail -n 5 "$TMP/$name.log")"
	fi
	cbfs_umount "$mnt"
}
is "$(mount_query m3 "$REPO@rp3" "select v from marker")" "at-rp3" \
	"mounted at restore point rp3 (inside the kept window) after expire and gc"
mkdir -p "$TMP/nomnt"
cbfs mount "$REPO@rp1x" "$TMP/nomnt"
check_error "a restore point before the window is gone" 7 "cbfs: backup or restore point \"rp1x\" not found in repository \"$REPO\""

# a chain of relocations: b4 still names packs rewritten once, then again
change 11
backup d "$REPO" b5
H5=$(table_hashes d postgres)
cbfs expire "$REPO" --keep-last 2
cbfs gc "$REPO" --max-waste 0
is "$RC" 0 "a second gc rewrites the rewritten packs"
chained=0
for m in "$REPO"/moved/*/*; do
	for t in $(awk 'NF == 4 {print $3}' "$m" | sort -u); do
		[[ -e $REPO/moved/${t:0:2}/$t ]] && chained=1
	done
done
is "$chained" 1 "some map points at a pack that has itself moved"
cbfs_restore "$REPO@b4" r4 && pg_start r4 && pg_wait_promoted r4 &&
	is "$(table_hashes r4 postgres)" "$H4" "b4 restores through the chain of maps, equal to the source then"
pg_stop r4
check_clean "check --read-data after the second gc"

# ---------------------------------------------------------------- a backup registered before the plan defers gc
change 13
cbfs expire "$REPO" --keep-last 1 # b4 goes: its unique blocks become unused
bg_cbfs bA backup-registered backup "$REPO" --pgdata "$(datadir d)" --dbname "$(conninfo d)" --label bA
A=$BG_PID
wait_reached backup-registered || fail "backup bA reached its pause point"
before=$(npacks)
cbfs gc "$REPO" --max-waste 0
is "$RC" 0 "gc while an earlier-registered backup runs"
like "$OUT" "gc deferred: 1 running backup may use what would be removed" "gc defers"
like "$OUT" "running: backup bA \\(host .*, pid $A\\)" "and names the backup"
is "$(npacks)" "$before" "nothing was removed"
is "$(ls "$REPO/gc" | wc -l)" 1 "the plan stays for later backups to see"
release backup-registered
bg_wait "$A"
is "$BG_RC" 0 "the backup completes"
cbfs gc "$REPO" --max-waste 0
like "$OUT" "gc complete: removed [1-9]" "gc again once it has finished"
is "$(ls "$REPO/gc" | wc -l)" 0 "both plans are gone"
check_clean "check --read-data after the deferred gc"

# ---------------------------------------------------------------- a backup that starts after the plan keeps away from it
# new data, stored by a backup killed just before its record: its packs are unused but in the dedup index
psql_as d postgres "create table x2 as select g, md5(g::text) || repeat(md5(random()::text), 8) as t from generate_series(1, 60000) g; checkpoint" >/dev/null
bg_cbfs kb backup-commit backup "$REPO" --pgdata "$(datadir d)" --dbname "$(conninfo d)" --label kb
KB=$BG_PID
wait_reached backup-commit || fail "backup kb reached its pause point"
kill -9 "$KB"
wait "$KB" 2>/dev/null
rm -f "$PAUSE"/*
bg_cbfs gcB gc-sweep gc "$REPO"
G=$BG_PID
wait_reached gc-sweep || fail "gc reached its sweep"
like "$(cat "$TMP/gcB.err")" "removing the registration of backup kb \\(host .*\\) since .*: it is no longer running" \
	"gc removes the killed backup's registration"
bg_cbfs nb backup-indexed backup "$REPO" --pgdata "$(datadir d)" --dbname "$(conninfo d)" --label nb
NB=$BG_PID
wait_reached backup-indexed || fail "backup nb reached its pause point"
release gc-sweep
bg_wait "$G"
is "$BG_RC" 0 "gc sweeps while backup nb runs"
like "$(cat "$TMP/gcB.out")" "gc complete: removed [1-9][0-9]* packs?" "it removed the killed backup's packs"
release backup-indexed
bg_wait "$NB"
is "$BG_RC" 0 "backup nb completes"
like "$(cat "$TMP/nb.out")" "stored [0-9.]+ MB new" "nb stored x2's blocks again rather than reuse the doomed packs"
H_NB=$(table_hashes d postgres)
check_clean "check --read-data: nb names no removed pack"
cbfs_restore "$REPO@nb" rnb && pg_start rnb && pg_wait_promoted rnb &&
	is "$(table_hashes rnb postgres)" "$H_NB" "nb restores, equal to the source"
pg_stop rnb

# ---------------------------------------------------------------- expire killed between a record and its manifest
rm -f "$PAUSE"/*
backup d "$REPO" b6
bg_cbfs ex expire-record-removed expire "$REPO" --keep-last 1
EX=$BG_PID
wait_reached expire-record-removed || fail "expire reached its pause point"
kill -9 "$EX"
wait "$EX" 2>/dev/null
cbfs gc "$REPO"
like "$OUT" "removed 1 manifest" "gc removes the manifest a killed expire left"
like "$ERR" "removing the lock of repository .* left by expire" "and breaks the dead expire's lock"

# ---------------------------------------------------------------- gc killed with -9 at each step, and at random
n=0
for point in gc-planned gc-repack-stored gc-maps-stored gc-pack-removed random random random; do
	n=$((n + 1))
	rm -f "$PAUSE"/*
	change $((13 + n))
	backup d "$REPO" "k$n"
	cbfs expire "$REPO" --keep-last 2 >/dev/null
	if [[ $point == random ]]; then
		bg_cbfs "gck$n" none gc "$REPO" --max-waste 0
		sleep "0.$((RANDOM % 10))$((RANDOM % 10))"
	else
		bg_cbfs "gck$n" "$point" gc "$REPO" --max-waste 0
		wait_reached "$point" || fail "gc reached $point"
	fi
	kill -9 "$BG_PID" 2>/dev/null
	wait "$BG_PID" 2>/dev/null
	cbfs check "$REPO"
	is "$RC" 0 "gc killed at $point ($n): the kept backups are whole"
	cbfs gc "$REPO" --max-waste 0
	is "$RC" 0 "gc killed at $point ($n): gc runs again"
	check_clean "gc killed at $point ($n): check --read-data after the rerun"
done
H_LAST=$(table_hashes d postgres)
cbfs_restore "$REPO@k$n" rk && pg_start rk && pg_wait_promoted rk &&
	is "$(table_hashes rk postgres)" "$H_LAST" "the newest backup restores after all that"
pg_stop rk

# ---------------------------------------------------------------- an encrypted repository
EREPO=$TMP/erepo
CBFS_PASSPHRASE=gc-test-passphrase cbfs_pg init "$EREPO" --encrypt # postgres runs the restore_command
is "$RC" 0 "an encrypted repository"
export CBFS_PASSPHRASE=gc-test-passphrase
backup d "$EREPO" e1
change 29
backup d "$EREPO" e2
HE2=$(table_hashes d postgres)
cbfs expire "$EREPO" --keep-last 1
cbfs gc "$EREPO" --max-waste 0
like "$OUT" "gc complete: removed [0-9]+ packs?, rewrote [1-9][0-9]* packs?" "gc rewrites encrypted packs"
ok "relocation maps are sealed like every other object" test -z "$(grep -rl 'cbfs-moved' "$EREPO/moved")"
cbfs check "$EREPO" --read-data
is "$RC" 0 "check --read-data of the encrypted repository after gc"
cbfs_restore "$EREPO@e2" re2 && pg_start re2 && pg_wait_promoted re2 &&
	is "$(table_hashes re2 postgres)" "$HE2" "e2 restores from the encrypted repository after gc"
pg_stop re2
unset CBFS_PASSPHRASE
cbfs gc "$EREPO"
like "$ERR" "passphrase" "gc of an encrypted repository without a passphrase fails"
isnt "$RC" 0 "... with a non-zero exit"

# ---------------------------------------------------------------- a mounted backup is kept
# The mount registers itself (mounts/<label>.<r>); expire keeps a backup
# with a live registration, so gc keeps its packs and the mount goes on
# reading.  A registration whose daemon died is removed by the next expire.
registrations() { ls "$REPO/mounts" 2>/dev/null | grep -c "^$1\\." || true; }
backup d "$REPO" b7
change 13
backup d "$REPO" b8
M7=$(datadir m7)
mkdir -p "$M7"
cbfs_mount "$REPO@b7" "$M7" -o uid=postgres,gid=postgres
is "$RC/$ERR" "0/" "mount b7"
is "$(registrations b7)" 1 "the mount registered itself (mounts/b7.*)"
change 17
backup d "$REPO" b9
cbfs expire "$REPO" --keep-last 1
like "$OUT" $'(^|\n)keep    b7 \\(mounted\\)\n' "expire keeps the mounted b7"
like "$OUT" $'(^|\n)expire  b8\n' "and expires b8, older than b9 and not mounted"
cbfs gc "$REPO" --max-waste 0
is "$RC" 0 "gc after that expire"
ok "every file of the mounted b7 reads whole after expire and gc" \
	bash -c "find '$M7' -type f -print0 | xargs -0 cat >/dev/null"
if pg_start m7 && pg_wait_promoted m7; then
	pass "PostgreSQL starts on the mounted b7 after expire and gc (its WAL was kept)"
	pg_stop m7
else
	fail "PostgreSQL starts on the mounted b7 after expire and gc" "$(tail -n 5 "$TMP/m7.log")"
fi
cbfs_umount "$M7"
is "$RC/$ERR" "0/" "umount b7"
is "$(registrations b7)" 0 "the registration is gone with the mount"
cbfs expire "$REPO" --keep-last 1
like "$OUT" $'(^|\n)expire  b7\n' "unmounted, b7 is expired"
# a mount killed with -9 leaves its registration: the next expire drops it
backup d "$REPO" b10
cbfs_mount "$REPO@b9" "$M7" -o uid=postgres,gid=postgres
is "$(registrations b9)" 1 "mount b9: registered"
dpid=$(mount_daemon_pid "$M7")
kill -9 "$dpid"
ok "its daemon is gone after kill -9" wait_gone "$dpid" 10
cbfs_umount "$M7"
is "$(registrations b9)" 1 "the dead mount's registration is still there"
cbfs expire "$REPO" --keep-last 1 --dry-run
like "$OUT" $'(^|\n)expire  b9\n' "expire --dry-run: b9 would go (its mount is dead)"
is "$(registrations b9)" 1 "... and a dry run removes nothing"
cbfs expire "$REPO" --keep-last 1
like "$OUT" $'(^|\n)expire  b9\n' "expire: b9 goes"
is "$(registrations b9)" 0 "and the dead registration with it"
check_clean "check --read-data after the mounted-backup expire"
# a mount that registers while an expire holds the lock waits for it (that
# expire may have listed the mounts before the registration was stored)
# and then finds its backup kept, since this expire lists them after
rm -f "$PAUSE"/*
backup d "$REPO" b11
bg_cbfs exm expire-locked expire "$REPO" --keep-last 1
EXM=$BG_PID
wait_reached expire-locked || fail "expire reached expire-locked"
"$MOUNT_CBFS" "$REPO@b10" "$M7" -o uid=postgres,gid=postgres >"$TMP/m10.out" 2>"$TMP/m10.err" &
MP=$!
_mounts+=("$M7")
for ((i = 0; i < 100; i++)); do
	[[ $(registrations b10) == 1 ]] && break
	sleep 0.1
done
is "$(registrations b10)" 1 "mount b10 registered while expire holds the lock"
sleep 0.5
ok "... and waits for that expire" kill -0 "$MP"
release expire-locked
bg_wait "$EXM"
wait "$MP"
is "$?/$(cat "$TMP/m10.err")" "0/" "then the mount completes"
like "$(cat "$TMP/exm.out")" $'(^|\n)keep    b10 \\(mounted\\)\n' "and the expire kept b10"
ok "every file of the mounted b10 reads" bash -c "find '$M7' -type f -print0 | xargs -0 cat >/dev/null"
cbfs_umount "$M7"

# ---------------------------------------------------------------- the lock and bad input
rm -f "$PAUSE"/*
bg_cbfs gcL gc-locked gc "$REPO"
L=$BG_PID
wait_reached gc-locked || fail "gc reached gc-locked"
cbfs gc "$REPO"
like "$ERR" "^cbfs: repository \"$REPO\" is locked by gc \\(host .*, pid $L\\) since .*Z$" "a second gc is refused while one runs"
is "$RC" 1 "... exit 1"
cbfs expire "$REPO" --keep-last 1
like "$ERR" "is locked by gc" "expire too"
release gc-locked
bg_wait "$L"
is "$BG_RC" 0 "the first gc finishes"
cbfs gc "$REPO" --max-waste 101
check_error "--max-waste 101" 2 "cbfs: invalid value \"101\" for --max-waste: must be 0 to 100
Try \"cbfs gc --help\" for more information."
cbfs gc "$REPO" --running-timeout soon
check_error "a bad --running-timeout" 2 "cbfs: invalid value \"soon\" for --running-timeout: must be a duration such as 12h or 3d
Try \"cbfs gc --help\" for more information."
cbfs gc "$TMP/nosuch"
check_error "gc of a missing repository" 3 "cbfs: could not open repository \"$TMP/nosuch\": No such file or directory"

done_testing
