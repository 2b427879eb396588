#!/usr/bin/env bash
# cbfs copy (issue 19, item 1): a second repository.  Backups, their WAL,
# later WAL, restore points and pins go over; only blocks the destination
# lacks are stored; the destination restores, mounts and passes check
# --read-data on its own (plain, and encrypted with its own key, both
# ways); a copy killed after its packs were stored, run again, stores
# nothing twice; expire in the source keeps a backup being copied, gc in
# the destination waits for it; and the bad input of the issue: a copy
# into its own source, into another cluster's repository, with a wrong
# passphrase, a malformed rate, another block size.
source "$(dirname "$0")/lib.sh"
need_mount

R1=$TMP/r1
repo_init "$R1"
pg_init src
pg_archive src "$R1"
pg_start src || bail "could not start cluster src"
pgbench_as src -i -s 4 -q postgres >/dev/null 2>&1 || bail "pgbench -i failed"
backup src "$R1" b1 || bail "backup b1"
pgbench_as src -n -t 500 postgres >/dev/null 2>&1
cbfs restore-point "$R1" p1 --dbname "$(conninfo src)" --wait 60
is "$RC" 0 "restore point p1"
psql_as src postgres "create table after_p1 as select g from generate_series(1, 1000) g" >/dev/null
backup src "$R1" b2 || bail "backup b2"
cbfs pin "$R1@b1"
is "$RC" 0 "pin b1 in the source"
SYSID=$(sysid src)

# ---------------------------------------------------------------- a first copy
R2=$TMP/r2
repo_init "$R2"
cbfs copy "$R1" "$R2"
is "$RC/$ERR" "0/" "cbfs copy into an empty repository"
like "$OUT" "(^|"$'\n'")copy complete: 2 backups \([0-9]+ blocks, [0-9]+ new; read .*\), [0-9]+ WAL files, 1 restore points, 1 pins, " \
	"... 2 backups, the WAL, a restore point and a pin"
is "$(labels "$R2" | tr '\n' ' ')" "$(labels "$R1" | tr '\n' ' ')" "the destination lists the same backups"
cbfs list "$R2" --json
is "$(json_get "$OUT" '[b["label"] for b in j if b["pinned"]]')" b1 "... b1 pinned there too"
cbfs info "$R1@b1" --json
START=$(json_get "$OUT" 'j["wal_start"]')
for f in "$R1"/wal/00000001/*; do
	n=$(basename "$f")
	[[ $n < $START ]] && continue
	[[ -e $R2/wal/00000001/$n ]] || echo "$n"
done >"$TMP/missing-wal"
is "$(wc -l <"$TMP/missing-wal")" 0 "every WAL file from b1's start on is in the destination"
ok_cbfs "check --read-data of the destination" check "$R2" --read-data
cbfs copy "$R1" "$R2"
like "$OUT" "^copy complete: 0 backups \(0 blocks, 0 new; read 0 B, stored 0 B\), 0 WAL files, 0 restore points, 0 pins, " \
	"run again: nothing left to copy"
PACKS=$(find "$R2/packs" -type f | wc -l)

# ---------------------------------------------------------------- the copy restores and mounts on its own
table_hashes src postgres >"$TMP/src.tables"
pg_stop src
mv "$R1" "$TMP/r1.away" # the destination alone
if cbfs_restore "$R2@p1" at_p1 --max-rate 500M && pg_start at_p1 && pg_wait_promoted at_p1; then
	pass "restore of the copy to restore point p1, with the copy's WAL"
	is "$(psql_as at_p1 postgres "select count(*) from pg_class where relname = 'after_p1'")" 0 \
		"... the point's state (the table made after it is not there)"
	pg_stop at_p1
else
	fail "restore of the copy to restore point p1" "$ERR"
fi
mkdir -p "$(datadir m2)"
cbfs_mount "$R2@b2" "$(datadir m2)" -o uid=postgres,gid=postgres,overlay="$TMP/ov-m2"
if pg_start m2 && pg_wait_promoted m2; then
	table_hashes m2 postgres >"$TMP/m2.tables"
	ok "a mount of the copy's newest backup: the source's tables" diff "$TMP/src.tables" "$TMP/m2.tables"
	amcheck_ok m2 postgres
	pg_stop m2
else
	fail "PostgreSQL on a mount of the copy"
fi

# ---------------------------------------------------------------- what is mounted (item 7)
cbfs mounts "$R2" --json
is "$(json_get "$OUT" '" ".join("%s:%s:%s:%s" % (m["backup"], m["command"], m["state"], m["mountpoint"]) for m in j)')" \
	"b2:mount:alive:$(datadir m2)" "cbfs mounts: the live mount, its backup and mount point"
cbfs list "$R2"
like "$OUT" $'\nb1 .* pinned\n' "cbfs list marks the pinned backup"
like "$OUT" $'\nb2 .* mounted(\n|$)' "... and the mounted one"
cbfs list "$R2" --json
is "$(json_get "$OUT" '" ".join("%s:%s:%s" % (b["label"], b["pinned"], b["mounted"]) for b in j)')" \
	"b1:True:False b2:False:True" "... in JSON too"
cbfs_umount "$(datadir m2)"
cbfs mounts "$R2" --json
is "$OUT" "[]" "unmounted: no registration left"
# a mount of another host (its process cannot be looked at) and a dead one of this host
reg() { # KEY HOST PID
	printf 'command = mount\nlabel = b1\nhost = %s\nboot_id = x\npid = %s\npid_start = 1\nsince = %s\ntoken = 00\nmountpoint = /srv/elsewhere\n' \
		"$2" "$3" "$(date +%s)" >"$R2/mounts/$1"
}
mkdir -p "$R2/mounts"
reg b1.1111111111111111 db-elsewhere 4242
reg b1.2222222222222222 "$(hostname)" 999999
cbfs mounts "$R2"
like "$OUT" $'\nb1 +mount +db-elsewhere +4242 .* other host +/srv/elsewhere' "a mount of another host: listed as such"
like "$OUT" $'\nb1 +mount +[^ ]+ +999999 .* dead ' "a mount of this host whose process is gone: dead"
cbfs expire "$R2" --keep-last 1 --dry-run
like "$OUT" "keep +b1 .*mounted" "expire keeps b1 for the other host's mount"
cbfs mounts "$R2" --prune </dev/null
check_error "--prune without a terminal or --force: one line" 2 \
	"cbfs: 1 registration of mounts on other hosts not removed: confirm on a terminal, or use --force"
ok "... this host's dead one is removed all the same" test ! -e "$R2/mounts/b1.2222222222222222"
ok "... the other host's stays" test -e "$R2/mounts/b1.1111111111111111"
cbfs mounts "$R2" --prune --force
like "$OUT" "1 registration removed" "--prune --force removes the other host's"
ok "... gone" test ! -e "$R2/mounts/b1.1111111111111111"
cbfs mounts "$R2" --force
is "$RC:$(head -n 1 <<<"$ERR")" "2:cbfs: --force goes with --prune" "--force alone"
mv "$TMP/r1.away" "$R1"

# ---------------------------------------------------------------- a second backup copies little
pg_start src || bail "could not restart src"
pgbench_as src -n -t 300 postgres >/dev/null 2>&1
backup src "$R1" b3 || bail "backup b3"
cbfs copy "$R1" "$R2" --since b3 --max-rate 200M --jobs 3
is "$RC/$ERR" "0/" "copy --since b3 --max-rate 200M --jobs 3"
cbfs info "$R1@b3" --json
BACKED=$(json_get "$OUT" 'j["stored_size"]')
cbfs info "$R2@b3" --json
COPIED=$(json_get "$OUT" 'j["stored_size"]')
cmp_ok "${COPIED:-999999999}" -le "$((BACKED + BACKED / 20 + 65536))" \
	"... b3: the copy stored $COPIED bytes, what its backup stored in the source ($BACKED): only what changed"

# ---------------------------------------------------------------- killed, then again
backup src "$R1" b4 --io-nice idle --max-rate 100M || bail "backup b4"
bg_cbfs killed copy-commit copy "$R1" "$R2"
if wait_reached copy-commit; then
	kill -9 "$BG_PID"
	wait "$BG_PID" 2>/dev/null
	pass "a copy killed after storing b4's packs, before its record"
else
	fail "the copy reached copy-commit" "$(cat "$TMP/killed.err")"
fi
ok "... b4 is not listed in the destination" test ! -e "$R2/backups/b4.info"
P1=$(find "$R2/packs" -type f | wc -l)
cbfs copy "$R1" "$R2"
is "$RC/$ERR" "0/" "the copy run again"
like "$OUT" "copied backup b4: [0-9]+ blocks, 0 new " "... stores no block twice (b4's packs are found)"
is "$(find "$R2/packs" -type f | wc -l)" "$P1" "... and no new pack"
ok_cbfs "check --read-data after the killed copy" check "$R2" --read-data --max-rate 500M

# ---------------------------------------------------------------- encrypted, with its own key, both ways
printf 'dest secret\n' >"$TMP/p3"
chmod 600 "$TMP/p3"
cbfs init "$TMP/r3" --encrypt --passphrase-file "$TMP/p3"
is "$RC" 0 "an encrypted destination"
cbfs copy "$R1" "$TMP/r3" --dest-passphrase-file "$TMP/p3"
is "$RC/$ERR" "0/" "copy into it (sealed with its own key)"
ok "... no plaintext block id of the source in its packs" \
	bash -c "! grep -rqF '$(mq "$R1" b1 "select hex(substr(ids, 1, 32)) from runs limit 1" | tr A-F a-f)' '$TMP/r3'"
ok_cbfs "check --read-data of the encrypted copy" check "$TMP/r3" --read-data --passphrase-file "$TMP/p3"
repo_init "$TMP/r5"
CBFS_PASSPHRASE_FILE=$TMP/p3 cbfs copy "$TMP/r3" "$TMP/r5"
is "$RC/$ERR" "0/" "copy of the encrypted repository into a plain one"
is "$(labels "$TMP/r5" | tr '\n' ' ')" "$(labels "$R1" | tr '\n' ' ')" "... every backup went over"
if cbfs_restore "$TMP/r5@b2" from_r5 && pg_start from_r5 && pg_wait_promoted from_r5; then
	pass "restore from it"
	is "$(psql_as from_r5 postgres "select count(*) from after_p1")" 1000 "... the data of b2"
	pg_stop from_r5
else
	fail "restore from the twice-copied repository" "$ERR"
fi

# ---------------------------------------------------------------- next to expire and gc
backup src "$R1" b5 || bail "backup b5"
cbfs expire "$R2" --keep-last 2 # b2 goes (b1 is pinned): gc has packs to free
bg_cbfs paused copy-registered copy "$R1" "$R2"
if wait_reached copy-registered; then
	cbfs expire "$R1" --keep-last 1
	like "$OUT" "keep +b5 " "expire in the source while b5 is being copied ..."
	cbfs gc "$R2"
	like "$OUT" "gc deferred: 1 running" "... gc in the destination waits for the copy"
	release copy-registered
	wait "$BG_PID"
	is "$?" 0 "... and the copy finishes"
	like "$(cat "$TMP/paused.out")" "copied backup b5: " "... with b5"
else
	fail "the copy reached copy-registered" "$(cat "$TMP/paused.err")"
fi
ok_cbfs "check --read-data of the destination after it all" check "$R2" --read-data

# ---------------------------------------------------------------- a source gc has rewritten
# b1 unpinned and expired: its packs, which b5 still uses in part, are
# rewritten by gc (relocation maps); a copy into a new repository reads
# the kept backup through them
cbfs unpin "$R1@b1"
cbfs expire "$R1" --keep-last 1
like "$OUT" "expire +b1" "b1 unpinned and expired in the source"
cbfs gc "$R1" --max-waste 0
is "$RC" 0 "gc of the source after the expire"
cmp_ok "$(find "$R1/moved" -type f 2>/dev/null | wc -l)" -gt 0 "... it rewrote packs (relocation maps)"
repo_init "$TMP/r6"
cbfs copy "$R1" "$TMP/r6"
is "$RC/$ERR" "0/" "a copy of the rewritten source into a new repository"
is "$(labels "$TMP/r6" | tr '\n' ' ')" "$(labels "$R1" | tr '\n' ' ')" "... every kept backup"
ok_cbfs "check --read-data of that copy" check "$TMP/r6" --read-data
if cbfs_restore "$TMP/r6@b5" from_r6 && pg_start from_r6 && pg_wait_promoted from_r6; then
	pass "the newest backup restored from it starts"
	is "$(psql_as from_r6 postgres "select count(*) from after_p1")" 1000 "... with its data"
	amcheck_ok from_r6 postgres
	pg_stop from_r6
else
	fail "restore from the copy of the rewritten source" "$ERR"
fi

# ---------------------------------------------------------------- one node of several
NR=$TMP/nodes
repo_init "$NR"
cbfs backup "$NR" --node n1 --pgdata "$(datadir src)" --dbname "$(conninfo src)" --label n1b1
is "$RC" 0 "a backup as node n1 of a repository of nodes"
repo_init "$TMP/nodes2"
cbfs copy "$NR" "$TMP/nodes2" --node n1
is "$RC/$ERR" "0/" "copy --node n1"
cbfs list "$TMP/nodes2" --node n1 --json
is "$(json_get "$OUT" '" ".join(b["label"] + ":" + b["node"] for b in j)')" "n1b1:n1" "... its backup is node n1's there"
cbfs restore "$TMP/nodes2@n1b1" "$TMP/n1-restored" --node n1
is "$RC" 0 "... and restores from there"

# ---------------------------------------------------------------- bad input
D1=$(cd "$R1" && pwd)
cbfs copy "$R1" "$R1"
check_error "copy into its own source" 2 \
	"cbfs: could not copy repository \"$R1\" into \"$R1\": they are the same repository"
repo_init "$TMP/other"
printf 'system_identifier = 123\n' >"$TMP/other/cluster"
cbfs copy "$R1" "$TMP/other"
check_error "copy into another cluster's repository" 2 \
	"cbfs: could not copy into repository \"$TMP/other\": it holds database system 123, not $SYSID of repository \"$R1\""
CBFS_DEST_PASSPHRASE=wrong cbfs copy "$R1" "$TMP/r3"
check_error "a wrong destination passphrase" 3 "cbfs: could not open repository \"$TMP/r3\": wrong passphrase"
CBFS_PASSPHRASE=wrong cbfs copy "$TMP/r3" "$R2"
check_error "a wrong source passphrase" 3 "cbfs: could not open repository \"$TMP/r3\": wrong passphrase"
cbfs copy "$R1" "$TMP/r3"
check_error "an encrypted destination without a passphrase" 2 \
	"cbfs: could not open repository \"$TMP/r3\": repository is encrypted and no passphrase was given (set CBFS_DEST_PASSPHRASE or CBFS_DEST_PASSPHRASE_FILE, or use --dest-passphrase-file)"
for r in 0 fast -5M; do
	cbfs copy "$R1" "$R2" --max-rate "$r"
	is "$RC:$(head -n 1 <<<"$ERR")" "2:cbfs: invalid rate \"$r\" (bytes a second, at least 1k: 50M, 1G)" \
		"--max-rate $r: refused"
done
cbfs backup "$R1" --pgdata "$(datadir src)" --dbname "$(conninfo src)" --io-nice 9
is "$RC:$(head -n 1 <<<"$ERR")" '2:cbfs: invalid --io-nice "9" (idle, or 0 to 7)' "backup --io-nice 9: refused"
for cmd in "backup $R1 --pgdata $(datadir src)" "restore $R1 $TMP/never" "check $R1 --read-data"; do
	# shellcheck disable=SC2086 # words intended
	cbfs $cmd --max-rate 0
	is "$RC:$(head -n 1 <<<"$ERR")" '2:cbfs: invalid rate "0" (bytes a second, at least 1k: 50M, 1G)' \
		"${cmd%% *} --max-rate 0: refused"
done
ok "... nothing restored" test ! -e "$TMP/never"
CBFS_MAX_RATE=fast cbfs check "$R1"
is "$RC:$(head -n 1 <<<"$ERR")" '2:cbfs: invalid rate "fast" (bytes a second, at least 1k: 50M, 1G)' \
	"a malformed CBFS_MAX_RATE: refused"
cbfs_pg init "$TMP/big" --block-size 128k
cbfs copy "$R1" "$TMP/big"
check_error "another block size" 2 \
	"cbfs: could not copy repository \"$R1\" into \"$TMP/big\": its block size is 131072, not 65536 (make it with cbfs init --block-size 65536)"
cbfs copy "$R1" "$TMP/nowhere"
like "$RC:$ERR" "^[1-9]:cbfs: could not open repository \"$TMP/nowhere\": " "a destination that is not a repository"
ok "... nothing was made there" test ! -e "$TMP/nowhere"
is "$(find "$TMP/other" "$TMP/big" -path '*/packs/*' -type f -o -path '*/backups/*' -type f -o -path '*/wal/*' -type f | wc -l)" 0 \
	"... and nothing written into the refused repositories"
: "$D1" "$PACKS"

done_testing
