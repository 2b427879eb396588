#!/usr/bin/env bash
# Encryption at rest (issue 7, part 3; docs/design.md §3 "Encryption"):
#  - cbfs init --encrypt: no passphrase, or a passphrase file others can
#    read, is refused with one line; the config holds the wrapped key;
#  - a real cluster whose table holds a known marker string is archived
#    (wal-push with CBFS_PASSPHRASE_FILE in archive_command) and backed up;
#    no file of the repository holds the marker or the table's name, while
#    an unencrypted repository of the same cluster does (so the search can
#    find it);
#  - wal-fetch, restore and a mount with PostgreSQL started on them give the
#    marker back; check --read-data and verify pass;
#  - a wrong passphrase, none, a passphrase file others can read: one line,
#    exact, and its exit code;
#  - damage, in copies of the repository: a flipped byte in a pack (check
#    --read-data and restore name the pack, exit 5), two WAL objects swapped
#    (wal-fetch names the object, exit 5), manifests and records swapped
#    between two backups (restore, mount, info: exit 5);
#  - cbfs key change: the old passphrase is refused, the new one reads
#    everything, and no object but config changed.
source "$(dirname "$0")/lib.sh"
need_mount
exec </dev/null # never a passphrase prompt

REPO=$TMP/repo
PLAIN=$TMP/plain # the same cluster, unencrypted: the marker search's control
MARKER=cbfs-marker-5e1f0a7c9d
TABLE=cbfs_secret_ledger_tbl
PASS=$TMP/pass
NEWPASS=$TMP/newpass

# passfile FILE TEXT [MODE]: a passphrase file for postgres (and root)
passfile() {
	printf '%s\n' "$2" >"$1"
	chown postgres:postgres "$1"
	chmod "${3:-600}" "$1"
}
passfile "$PASS" 'correct horse battery staple'
passfile "$NEWPASS" 'a new passphrase for a new year'
passfile "$TMP/open-pass" 'correct horse battery staple' 644

# ---------------------------------------------------------------- init
cbfs_pg init "$REPO" --encrypt
check_error "init --encrypt without a passphrase is refused" 2 \
	"cbfs: could not create repository \"$REPO\": --encrypt needs a passphrase (set CBFS_PASSPHRASE or CBFS_PASSPHRASE_FILE, or use --passphrase-file)"
ok "and creates nothing" test ! -e "$REPO/config"
cbfs init "$REPO" --encrypt --passphrase-file "$TMP/open-pass"
check_error "init --encrypt with a passphrase file others can read is refused" 2 \
	"cbfs: could not create repository \"$REPO\": passphrase file \"$TMP/open-pass\" has group or world access; permissions should be u=rw (0600) or less"
cbfs init "$REPO" --passphrase-file "$PASS"
is "$RC/$(head -n 1 <<<"$ERR")" "2/cbfs: --passphrase-file needs --encrypt" \
	"init --passphrase-file without --encrypt is a usage error"
ok "and creates nothing" test ! -e "$REPO/config"
cbfs_pg init "$REPO" --encrypt --passphrase-file "$PASS"
is "$RC/$ERR" "0/" "init --encrypt --passphrase-file"
is "$OUT" "initialized repository \"$REPO\" (block size 65536, zstd level 3, encrypted)" "init says encrypted"
CONFIG=$(cat "$REPO/config")
like "$CONFIG" $'(^|\n)encryption = aes-256-gcm\n' "config: encryption = aes-256-gcm"
like "$CONFIG" $'(^|\n)kdf = scrypt\nkdf_n = 131072\nkdf_r = 8\nkdf_p = 1\n' "config: scrypt N=2^17 r=8 p=1"
like "$CONFIG" $'(^|\n)master_key = [0-9a-f]{120}(\n|$)' "config: the wrapped master key"
REPO_ID=$(sed -n 's/^repository_id = //p' "$REPO/config")
repo_init "$PLAIN"
ok "an unencrypted repository's config has no encryption keys" \
	bash -c "! grep -Eq '^(encryption|kdf|master_key)' '$PLAIN/config'"

# ---------------------------------------------------------------- the cluster
pg_init a
pg_conf a "archive_mode = on" \
	"archive_command = 'CBFS_PASSPHRASE_FILE=$PASS $CBFS wal-push $REPO %p'"
pg_start a || bail "could not start cluster a"
{
	# random bytes beside the marker keep zstd from coding it away, so the
	# unencrypted control repository holds the marker as it is
	psql_as a postgres "
		create table $TABLE (id int primary key, secret text, pad bytea);
		insert into $TABLE
		select g, '$MARKER-' || g,
		       decode((select string_agg(md5(random()::text || g || i), '')
		               from generate_series(1, 32) i), 'hex')
		from generate_series(1, 4000) g;
		checkpoint" &&
		pgbench_as a -i -s 1 -q postgres
} >/dev/null 2>"$TMP/data.err" || bail "could not create the data: $(cat "$TMP/data.err")"
seg=$(pg_switch_and_archive a) || bail "no segment archived: $(tail -n 5 "$TMP/a.log")"
pass "archive_command with CBFS_PASSPHRASE_FILE archived $seg"
mkdir -p "$TMP/w"
cp "$(datadir a)/pg_wal/$seg" "$TMP/$seg.orig"
chown postgres:postgres "$TMP/w"

backup a "$REPO" b1 --passphrase-file "$PASS" --jobs 2 || bail "the encrypted backup failed"
backup a "$PLAIN" c1 || bail "the unencrypted backup failed"
psql_as a postgres "insert into $TABLE values (-1, '$MARKER-after-b1')" >/dev/null
CBFS_PASSPHRASE='correct horse battery staple' backup a "$REPO" b2
seg2=$(pg_switch_and_archive a) || bail "no segment archived: $(tail -n 5 "$TMP/a.log")"
ROWS=$(sql a postgres "select count(*) from $TABLE")
pg_stop a # nothing is added to the repositories from now on

# ---------------------------------------------------------------- nothing in the clear
cmp_ok "$(grep -r -a -l -F -e "$MARKER" "$PLAIN" | wc -l)" -gt 0 \
	"control: the unencrypted repository holds the marker in the clear"
cmp_ok "$(find "$REPO" -type f | wc -l)" -gt 10 "the encrypted repository has objects ($(find "$REPO" -type f | wc -l))"
is "$(grep -r -a -l -F -e "$MARKER" "$REPO")" "" "no file of the encrypted repository holds the marker"
is "$(grep -r -a -l -F -e "$TABLE" "$REPO")" "" "no file of it holds the table's name"
is "$(grep -r -a -l -F -e "pgbench_accounts" "$REPO")" "" "nor pgbench_accounts"
is "$(grep -r -a -l -e 'SQLite format' -e 'CBFSWAL1' -e 'stop_lsn' -e 'system_identifier' "$REPO")" "" \
	"nor a manifest, WAL or record header"
is "$(find "$REPO/backups" "$REPO/wal" "$REPO/cluster" -type f ! -name '*.mdb' -exec head -c 8 {} \; -exec echo \; | sort -u)" \
	CBFSENC1 "every object but config, the packs and the manifests starts with CBFSENC1"
cmp_ok "$(find "$REPO/backups" -name '*.mdb' | wc -l)" -ge 1 \
	"the manifests, sealed chunk by chunk, are there too (and hold no header in the clear, above)"
is "$(for p in "$REPO"/packs/*/*.pack; do tail -c 56 "$p" | head -c 8; echo; done | sort -u)" \
	CBFSPKE1 "every pack ends with an encrypted pack's trailer"

# ---------------------------------------------------------------- passphrase errors
cbfs list "$REPO"
check_error "no passphrase: one line" 2 \
	"cbfs: could not open repository \"$REPO\": repository is encrypted and no passphrase was given (set CBFS_PASSPHRASE or CBFS_PASSPHRASE_FILE, or use --passphrase-file)"
CBFS_PASSPHRASE=wrong cbfs list "$REPO"
check_error "a wrong passphrase: one line" 3 "cbfs: could not open repository \"$REPO\": wrong passphrase"
CBFS_PASSPHRASE=wrong cbfs restore "$REPO@b1" "$TMP/r-wrong"
check_error "a wrong passphrase: restore" 3 "cbfs: could not open repository \"$REPO\": wrong passphrase"
ok "the failed restore created nothing" test ! -e "$TMP/r-wrong"
cbfs info "$REPO@b1" --passphrase-file "$TMP/open-pass"
check_error "a passphrase file others can read is refused" 2 \
	"cbfs: could not open repository \"$REPO\": passphrase file \"$TMP/open-pass\" has group or world access; permissions should be u=rw (0600) or less"
CBFS_PASSPHRASE_FILE=$TMP/open-pass cbfs list "$REPO"
check_error "... also from CBFS_PASSPHRASE_FILE" 2 \
	"cbfs: could not open repository \"$REPO\": passphrase file \"$TMP/open-pass\" has group or world access; permissions should be u=rw (0600) or less"
CBFS_PASSPHRASE=wrong cbfs list "$REPO" --passphrase-file "$PASS"
is "$RC/$ERR" "0/" "--passphrase-file wins over CBFS_PASSPHRASE"
cbfs list "$REPO" --json --passphrase-file "$PASS"
is "$(json_get "$OUT" '" ".join(b["label"] for b in j)')" "b1 b2" "cbfs list: b1 and b2"
CBFS_PASSPHRASE_FILE=$PASS cbfs info "$REPO@b2" --json
is "$(json_get "$OUT" 'str(j["system_identifier"])')" "$(sysid a)" "cbfs info with CBFS_PASSPHRASE_FILE"

# ---------------------------------------------------------------- WAL
cbfs_pg wal-fetch --passphrase-file "$PASS" "$REPO" "$seg" "$TMP/w/$seg"
is "$RC/$ERR" "0/" "wal-fetch of an encrypted segment (as postgres)"
ok "the fetched segment is the archived one" cmp "$TMP/$seg.orig" "$TMP/w/$seg"
cbfs_pg wal-fetch "$REPO" 0000000100000000000000F0 "$TMP/w/missing"
is "$RC/$ERR/$OUT" "1//" "wal-fetch of a missing segment without any passphrase: a quiet exit 1"
mkdir -p "$TMP/w-nopass" "$TMP/w-swap" "$TMP/w-old" "$TMP/w-new"
chown postgres:postgres "$TMP/w-nopass" "$TMP/w-swap" "$TMP/w-old" "$TMP/w-new"
cbfs_pg wal-fetch "$REPO" "$seg" "$TMP/w-nopass/$seg"
check_error "wal-fetch of a stored segment without a passphrase: one line" 2 \
	"cbfs: could not open repository \"$REPO\": repository is encrypted and no passphrase was given (set CBFS_PASSPHRASE or CBFS_PASSPHRASE_FILE, or use --passphrase-file)"

# ---------------------------------------------------------------- check and verify
cbfs check "$REPO" --read-data --passphrase-file "$PASS"
is "$RC/$ERR" "0/" "check --read-data of the encrypted repository passes"
like "$OUT" "checked 2 backups, [0-9]+ packs, [0-9]+ WAL files, read [0-9]+ blocks .*: no problems" "it read every block"
cbfs verify "$REPO@b1" --passphrase-file "$PASS" --work-dir "$TMP"
is "$RC" 0 "cbfs verify of an encrypted backup passes (the passphrase reaches the mount and wal-fetch)" ||
	diag "$OUT" "$ERR"

# ---------------------------------------------------------------- restore
# postgres's key cache empty: the restore (as root) hands the key to the
# owner of the data directory, whose server then recovers with every KDF
# forbidden (CBFS_TEST_NO_KDF; see "key cache" below)
cbfs_pg key forget "$REPO"
cbfs_restore "$REPO@b2" r1 --passphrase-file "$PASS"
is "$RC/$ERR" "0/" "restore @b2"
like "$(cat "$(datadir r1)/postgresql.auto.conf")" \
	"restore_command = '''[^']*cbfs'' wal-fetch --passphrase-file ''$PASS'' ''$REPO'' %f %p'" \
	"restore_command names the passphrase file, not the passphrase"
ok "and the passphrase is in no file of the copy" \
	bash -c "! grep -r -a -q -F 'correct horse' '$(datadir r1)'"
if CBFS_TEST_NO_KDF=1 pg_start r1 && pg_wait_promoted r1; then
	pass "r1: PostgreSQL starts on the restored copy and recovers (its wal-fetch needs no KDF)"
	is "$(sql r1 postgres "select count(*) from $TABLE where secret like '$MARKER-%'")" "$ROWS" \
		"r1: every marker row is there"
	is "$(sql r1 postgres "select secret from $TABLE where id = -1")" "$MARKER-after-b1" \
		"r1: with the row written after b1"
	amcheck_ok r1 postgres
	pg_stop r1
else
	fail "r1: PostgreSQL starts on the restored copy and recovers" "$(tail -n 20 "$TMP/r1.log")"
fi

# ---------------------------------------------------------------- mount
MNT=$(datadir m)
mkdir "$MNT"
cbfs_mount "$REPO@b1" "$MNT" -o "uid=postgres,gid=postgres,passphrase_file=$PASS"
is "$RC/$ERR" "0/" "mount.cbfs of the encrypted backup b1"
if pg_start m && pg_wait_promoted m; then
	pass "PostgreSQL starts on the mount and recovers (wal-fetch with the passphrase file)"
	is "$(sql m postgres "select count(*) from $TABLE where secret like '$MARKER-%'")" 4000 \
		"the mount: the marker rows of b1"
	is "$(sql m postgres "select secret from $TABLE where id = 1234")" "$MARKER-1234" \
		"the mount: a row reads back in the clear"
	pg_stop m
else
	fail "PostgreSQL starts on the mount and recovers" "$(tail -n 20 "$TMP/m.log")"
fi
cbfs_umount "$MNT"
is "$RC/$ERR" "0/" "cbfs umount"
cbfs_mount "$REPO@b1" "$MNT" -o uid=postgres,gid=postgres
check_error "a mount without a passphrase: one line" 2 \
	"mount.cbfs: could not open repository \"$REPO\": repository is encrypted and no passphrase was given (set CBFS_PASSPHRASE or CBFS_PASSPHRASE_FILE, or use --passphrase-file)"
ok "and nothing is mounted" test "$(mount_count "$MNT")" = 0

# ---------------------------------------------------------------- key cache
# A key derived from the passphrase is kept in the user's kernel keyring
# (CBFS_KEY_CACHE_TTL seconds); CBFS_TEST_NO_KDF makes every derivation an
# error, so a command that succeeds under it found its key in the cache.
NOKDF="cbfs: could not open repository \"$REPO\": key derivation is disabled (CBFS_TEST_NO_KDF)"
# cache_entries USER: USER's live key cache entries of this repository,
# "perm ttl" each (an invalidated key shows "i" in its flags until the
# kernel's collector takes it)
cache_entries() {
	runuser -u "$1" -- cat /proc/keys | awk -v d="cbfs:$REPO_ID:" \
		'$9 ~ "^" d && $2 !~ /i/ && $4 != "expd" { print $5, $4 }'
}
cbfs key forget "$REPO"
is "$RC/$ERR" "0/" "cbfs key forget REPO"
like "$OUT" "^forgot [0-9]+ cached keys? of repository \"$REPO\"\$" "it says how many it forgot"
is "$(cache_entries root)" "" "root has no cached key of the repository"
CBFS_TEST_NO_KDF=1 cbfs list "$REPO" --passphrase-file "$PASS"
check_error "without a cached key the KDF runs (and the test hook stops it)" 1 "$NOKDF"
cbfs list "$REPO" --passphrase-file "$PASS"
is "$RC/$ERR" "0/" "a command derives the key"
like "$(cache_entries root)" "^3f3f0000 [1-5]m\$" \
	"... and caches it: one entry, for its user only (no group or other rights), ending in 5 minutes"
CBFS_TEST_NO_KDF=1 cbfs list "$REPO" --passphrase-file "$PASS"
is "$RC/$ERR" "0/" "the next command finds the key in the cache (no KDF)"
CBFS_TEST_NO_KDF=1 CBFS_PASSPHRASE=wrong cbfs list "$REPO"
check_error "the cached key does not serve another passphrase" 1 "$NOKDF"
CBFS_PASSPHRASE=wrong cbfs list "$REPO"
check_error "a wrong passphrase with a cached key: still one line" 3 \
	"cbfs: could not open repository \"$REPO\": wrong passphrase"
cbfs list "$REPO"
check_error "no passphrase with a cached key: still refused" 2 \
	"cbfs: could not open repository \"$REPO\": repository is encrypted and no passphrase was given (set CBFS_PASSPHRASE or CBFS_PASSPHRASE_FILE, or use --passphrase-file)"
cbfs key forget "$REPO"
is "$OUT" "forgot 1 cached key of repository \"$REPO\"" "key forget drops the entry"
is "$(cache_entries root)" "" "... from the keyring"
CBFS_KEY_CACHE_TTL=0 cbfs list "$REPO" --passphrase-file "$PASS"
is "$RC/$ERR/$(cache_entries root)" "0//" "CBFS_KEY_CACHE_TTL=0: nothing cached"
CBFS_KEY_CACHE_TTL=5m cbfs list "$REPO" --passphrase-file "$PASS"
check_error "an invalid CBFS_KEY_CACHE_TTL: one line" 2 \
	"cbfs: could not open repository \"$REPO\": invalid CBFS_KEY_CACHE_TTL \"5m\" (seconds, 0 to 86400)"
cbfs key forget
like "$OUT" "^forgot [0-9]+ cached keys?\$" "cbfs key forget (every repository)"
cbfs key frobnicate
check_error "an unknown key command" 2 $'cbfs: unknown key command "frobnicate" (change, forget)\nTry "cbfs key --help" for more information.'
# a root mount for postgres hands the key to postgres's cache: the
# server's restore_command then needs no KDF at all
cbfs_pg key forget "$REPO"
is "$RC/$(cache_entries postgres)" "0/" "postgres has no cached key of the repository"
cbfs_mount "$REPO@b1" "$MNT" -o "uid=postgres,gid=postgres,passphrase_file=$PASS"
is "$RC/$ERR" "0/" "mount.cbfs again (as root, for postgres)"
like "$(cache_entries postgres)" "^3f3f0000 [1-5]m\$" "the mount put the key into postgres's cache"
if CBFS_TEST_NO_KDF=1 pg_start m && pg_wait_promoted m; then
	pass "PostgreSQL recovers on the mount with every KDF forbidden: wal-fetch used the cached key"
	is "$(sql m postgres "select count(*) from $TABLE where secret like '$MARKER-%'")" 4000 \
		"the mount: the marker rows of b1"
	pg_stop m
else
	fail "PostgreSQL recovers on the mount with every KDF forbidden" "$(tail -n 20 "$TMP/m.log")"
fi
cbfs_umount "$MNT"
is "$RC/$ERR" "0/" "cbfs umount"

# ---------------------------------------------------------------- damage, in copies
copy() {
	rm -rf "${TMP:?}/$1"
	cp -a "$REPO" "$TMP/$1" && echo "$TMP/$1"
}

# a flipped byte in the biggest pack
D=$(copy flipped)
packfile=$(find "$D/packs" -name '*.pack' -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2)
packkey=${packfile#"$D"/}
flip_byte "$packfile" 300
cbfs check "$D" --passphrase-file "$PASS"
is "$RC/$ERR" "0/" "a flipped byte inside a block: the structure is still sound"
cbfs check "$D" --read-data --passphrase-file "$PASS"
is "$RC" 5 "check --read-data finds the flipped byte: exit 5"
like "$OUT" "pack \"$packkey\" offset [0-9]+: block [0-9a-f]{64} is corrupt: authentication failed" \
	"... naming the pack, the offset and the block"
cbfs restore "$D@b1" "$TMP/r-flipped" --jobs 1 --passphrase-file "$PASS"
is "$RC" 5 "restore of a backup with the flipped block: exit 5"
like "$ERR" "^cbfs: restore into \"$TMP/r-flipped\" is incomplete \(remove it and retry\): could not restore \"[^\"]+\" at offset [0-9]+: pack \"$packkey\" offset [0-9]+: block [0-9a-f]{64} is corrupt: authentication failed$" \
	"... one line naming the file, the pack and the block"

# two WAL objects swapped
D=$(copy walswap)
wdir=$D/wal/00000001
x=$(cd "$wdir" && ls | grep -E '^[0-9A-F]{24}$' | sort | head -n 1)
y=$(cd "$wdir" && ls | grep -E '^[0-9A-F]{24}$' | sort | sed -n 2p)
mv "$wdir/$x" "$wdir/swap.tmp" && mv "$wdir/$y" "$wdir/$x" && mv "$wdir/swap.tmp" "$wdir/$y"
pass "swapped the WAL objects $x and $y"
cbfs wal-fetch --passphrase-file "$PASS" "$D" "$y" "$TMP/w-swap/$y"
check_error "wal-fetch of a swapped WAL object" 5 \
	"cbfs: object \"wal/00000001/$y\" in repository \"$D\" is corrupt: authentication failed"
ok "and nothing is written" test ! -e "$TMP/w-swap/$y"
cbfs wal-fetch --passphrase-file "$PASS" "$D" "$x" "$TMP/w-swap/$x"
check_error "... and of the other one" 5 \
	"cbfs: object \"wal/00000001/$x\" in repository \"$D\" is corrupt: authentication failed"

# the manifests of b1 and b2 swapped
D=$(copy manifestswap)
m1=$(cd "$D/backups" && ls b1.*.mdb)
m2=$(cd "$D/backups" && ls b2.*.mdb)
mv "$D/backups/$m1" "$D/backups/swap.tmp" && mv "$D/backups/$m2" "$D/backups/$m1" &&
	mv "$D/backups/swap.tmp" "$D/backups/$m2"
cbfs restore "$D@b2" "$TMP/r-swapped" --passphrase-file "$PASS"
is "$RC" 5 "restore of a backup whose manifest was swapped: exit 5"
like "$ERR" "^cbfs: manifest \"backups/$m2\" of backup \"b2\" is corrupt: (index: authentication failed|[0-9]+ bytes short)$" \
	"... naming the object"
ok "the failed restore left no data directory behind" test ! -e "$TMP/r-swapped/PG_VERSION"
cbfs_mount "$D@b1" "$MNT" -o "uid=postgres,gid=postgres,passphrase_file=$PASS"
is "$RC" 5 "a mount of a backup whose manifest was swapped: exit 5"
like "$ERR" "^mount.cbfs: manifest \"backups/$m1\" of backup \"b1\" is corrupt: (index: authentication failed|[0-9]+ bytes short)$" \
	"... naming the object"
ok "and nothing is mounted" test "$(mount_count "$MNT")" = 0

# the records of b1 and b2 swapped
D=$(copy recordswap)
mv "$D/backups/b1.info" "$D/backups/swap.tmp" && mv "$D/backups/b2.info" "$D/backups/b1.info" &&
	mv "$D/backups/swap.tmp" "$D/backups/b2.info"
cbfs info "$D@b1" --passphrase-file "$PASS"
check_error "info of a backup whose record was swapped" 5 \
	"cbfs: object \"backups/b1.info\" in repository \"$D\" is corrupt: authentication failed"

# the config of another repository (same passphrase): its key does not open these objects
D=$(copy otherkey)
other=$TMP/other
cbfs init "$other" --encrypt --passphrase-file "$PASS"
sed -i '/^master_key = /d; /^kdf_salt = /d' "$D/config"
grep -E '^(master_key|kdf_salt) = ' "$other/config" >>"$D/config"
cbfs list "$D" --passphrase-file "$PASS"
check_error "another repository's wrapped key: the passphrase does not open it here" 3 \
	"cbfs: could not open repository \"$D\": wrong passphrase"

# ---------------------------------------------------------------- key change
# every object but config, with its content and modification time
objects() {
	(cd "$REPO" && find . -type f ! -path ./config -printf '%p %T@ %s\n' | LC_ALL=C sort &&
		find . -type f ! -path ./config -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}
objects >"$TMP/objects.before"
cmp_ok "$(grep -c '\.pack ' "$TMP/objects.before")" -gt 1 "there are packs to compare"
CBFS_PASSPHRASE=wrong CBFS_NEW_PASSPHRASE=whatever cbfs key change "$REPO"
check_error "key change with a wrong current passphrase" 3 \
	"cbfs: could not open repository \"$REPO\": wrong passphrase"
cbfs key change "$REPO" --passphrase-file "$PASS"
check_error "key change without a new passphrase" 2 \
	"cbfs: could not change the passphrase of repository \"$REPO\": no new passphrase was given (set CBFS_NEW_PASSPHRASE or use --new-passphrase-file)"
cbfs key change "$PLAIN"
check_error "key change of an unencrypted repository" 2 \
	"cbfs: could not change the passphrase of repository \"$PLAIN\": it is not encrypted"
is "$(cat "$REPO/config")" "$CONFIG" "the config is untouched by the refused changes"
cbfs key change "$REPO" --passphrase-file "$PASS" --new-passphrase-file "$NEWPASS"
is "$RC/$ERR" "0/" "cbfs key change"
is "$OUT" "changed the passphrase of repository \"$REPO\"" "it says so"
isnt "$(cat "$REPO/config")" "$CONFIG" "the config changed"
is "$(sed -n 's/^repository_id = //p' "$REPO/config")" "$REPO_ID" "same repository id"
isnt "$(sed -n 's/^master_key = //p' "$REPO/config")" "$(sed -n 's/^master_key = //p' <<<"$CONFIG")" \
	"another wrapped key"
is "$(find "$REPO" -name '.tmp*' | wc -l)" 0 "no temp file left"
objects >"$TMP/objects.after"
ok "no object but config changed: no pack rewritten, same content and times" \
	diff "$TMP/objects.before" "$TMP/objects.after"
cbfs list "$REPO" --passphrase-file "$PASS"
check_error "the old passphrase is refused" 3 "cbfs: could not open repository \"$REPO\": wrong passphrase"
cbfs_pg wal-fetch --passphrase-file "$PASS" "$REPO" "$seg2" "$TMP/w-old/$seg2"
check_error "... also by wal-fetch" 3 "cbfs: could not open repository \"$REPO\": wrong passphrase"
CBFS_PASSPHRASE='a new passphrase for a new year' CBFS_NEW_PASSPHRASE='a new passphrase for a new year' \
	cbfs key change "$REPO"
is "$RC/$ERR" "0/" "a key change with both from the environment"
cbfs check "$REPO" --read-data --passphrase-file "$NEWPASS"
is "$RC/$ERR" "0/" "check --read-data with the new passphrase: every block reads"
cbfs_pg wal-fetch --passphrase-file "$NEWPASS" "$REPO" "$seg2" "$TMP/w-new/$seg2"
is "$RC/$ERR" "0/" "wal-fetch with the new passphrase"
cbfs_restore "$REPO@b2" r2 --passphrase-file "$NEWPASS"
is "$RC/$ERR" "0/" "restore @b2 with the new passphrase"
if pg_start r2 && pg_wait_promoted r2; then
	pass "r2: PostgreSQL starts after the key change"
	is "$(sql r2 postgres "select count(*) from $TABLE where secret like '$MARKER-%'")" "$ROWS" \
		"r2: the marker rows are there"
	pg_stop r2
else
	fail "r2: PostgreSQL starts after the key change" "$(tail -n 20 "$TMP/r2.log")"
fi

done_testing
