#!/usr/bin/env bash
# An encrypted repository in S3 (issue 7, part 3) against the real Swift
# s3api server, with the settings and CBFS_PASSPHRASE_FILE in the
# environment of every cbfs run (archive_command, restore_command and the
# mount's included): cbfs init --encrypt, archiving with wal-push, backup,
# check --read-data, a restore and a mount started with PostgreSQL and
# giving a known marker back; no object in the object server's storage holds
# the marker; two WAL objects swapped in the bucket are refused by wal-fetch
# (exit 5, naming the object); a wrong passphrase is one line; cbfs key
# change replaces the config object in S3 (a plain PUT) and the old
# passphrase stops working while the new one reads every block.
source "$(dirname "$0")/lib.sh"
need_mount
source "$(dirname "$0")/lib-s3.sh"
exec </dev/null # never a passphrase prompt

BUCKET=cbfs-enc
s3_setup "$BUCKET"
REPO=s3://$BUCKET/cluster/enc
CONF=$TMP/cbfs.conf
MARKER=cbfs-s3-marker-93b1d07e44
PASS=$TMP/pass
NEWPASS=$TMP/newpass
s3_config "$CONF"
s3_env_off
export CBFS_CONFIG=$CONF
printf '%s\n' 'an S3 passphrase' >"$PASS"
printf '%s\n' 'the next S3 passphrase' >"$NEWPASS"
chown postgres:postgres "$PASS" "$NEWPASS"
chmod 600 "$PASS" "$NEWPASS"
export CBFS_PASSPHRASE_FILE=$PASS

cbfs_pg init "$REPO" --encrypt
is "$RC/$ERR" "0/" "cbfs init --encrypt $REPO (passphrase from CBFS_PASSPHRASE_FILE)"
like "$OUT" "encrypted\)$" "init says encrypted"

# ---------------------------------------------------------------- the cluster
pg_init a
pg_archive a "$REPO"
pg_start a || bail "could not start cluster a"
{
	# random bytes beside the marker: no compression hides it, only encryption
	psql_as a postgres "
		create table ledger (id int primary key, secret text, pad bytea);
		insert into ledger
		select g, '$MARKER-' || g,
		       decode((select string_agg(md5(random()::text || g || i), '')
		               from generate_series(1, 32) i), 'hex')
		from generate_series(1, 3000) g;
		checkpoint"
} >/dev/null 2>"$TMP/data.err" || bail "could not create the data: $(cat "$TMP/data.err")"
seg=$(pg_switch_and_archive a) || bail "no segment archived into S3: $(tail -n 5 "$TMP/a.log")"
pass "archive_command archived $seg into the encrypted S3 repository"
backup a "$REPO" b1 --jobs 2 || bail "the backup into S3 failed"
seg2=$(pg_switch_and_archive a) || bail "no segment archived into S3: $(tail -n 5 "$TMP/a.log")"
pg_stop a

cbfs check "$REPO" --read-data
is "$RC/$ERR" "0/" "check --read-data of the encrypted S3 repository"
like "$OUT" "read [0-9]+ blocks .*: no problems" "it read the blocks"
stored=$(find "$TMP/s3/srv" -type f -name '*.data' | wc -l)
cmp_ok "$stored" -gt 5 "the object server stores $stored objects"
is "$(grep -r -a -l -F -e "$MARKER" "$TMP/s3/srv")" "" "none of them holds the marker"
is "$(grep -r -a -l -F -e "ledger" "$TMP/s3/srv" | head -n 3)" "" "nor the table's name"

# ---------------------------------------------------------------- restore and mount
cbfs_restore "$REPO@b1" r1
is "$RC/$ERR" "0/" "restore @b1 from encrypted S3"
if pg_start r1 && pg_wait_promoted r1; then
	pass "r1: PostgreSQL starts and recovers (wal-fetch from encrypted S3)"
	is "$(sql r1 postgres "select count(*) from ledger where secret like '$MARKER-%'")" 3000 \
		"r1: the marker rows"
	pg_stop r1
else
	fail "r1: PostgreSQL starts and recovers (wal-fetch from encrypted S3)" "$(tail -n 20 "$TMP/r1.log")"
fi
MNT=$(datadir m)
mkdir "$MNT"
cbfs_mount "$REPO@b1" "$MNT" -o uid=postgres,gid=postgres
is "$RC/$ERR" "0/" "mount.cbfs $REPO@b1"
if pg_start m && pg_wait_promoted m; then
	pass "PostgreSQL starts on the mount of encrypted S3 and recovers"
	is "$(sql m postgres "select secret from ledger where id = 2999")" "$MARKER-2999" \
		"the mount: a marker row in the clear"
	pg_stop m
else
	fail "PostgreSQL starts on the mount of encrypted S3 and recovers" "$(tail -n 20 "$TMP/m.log")"
fi
cbfs_umount "$MNT"
is "$RC/$ERR" "0/" "cbfs umount"

# ---------------------------------------------------------------- refused
CBFS_PASSPHRASE=wrong cbfs list "$REPO"
check_error "a wrong passphrase" 3 "cbfs: could not open repository \"$REPO\": wrong passphrase"
# two WAL objects swapped in the bucket, in a copy of the repository
COPY=s3://$BUCKET/cluster/copy
P=$S3_ENDPOINT/$BUCKET/cluster
# (s3curl signs for $AWS_REGION, which s3_env_off removed)
s3get() { AWS_REGION=$S3_REGION s3curl -f -o "$2" "$P/$1"; }
s3put() { AWS_REGION=$S3_REGION s3curl -f -X PUT --data-binary "@$2" "$P/$1" -o /dev/null; }
ok "copy the config" s3get enc/config "$TMP/config.obj"
ok "... to another prefix" s3put copy/config "$TMP/config.obj"
ok "get WAL object $seg" s3get "enc/wal/00000001/$seg" "$TMP/x.obj"
ok "get WAL object $seg2" s3get "enc/wal/00000001/$seg2" "$TMP/y.obj"
ok "put $seg2's object under $seg's name" s3put "copy/wal/00000001/$seg" "$TMP/y.obj"
ok "and $seg's under $seg2's" s3put "copy/wal/00000001/$seg2" "$TMP/x.obj"
mkdir -p "$TMP/w"
chown postgres:postgres "$TMP/w"
cbfs_pg wal-fetch "$COPY" "$seg" "$TMP/w/$seg"
check_error "wal-fetch of a swapped WAL object in S3" 5 \
	"cbfs: object \"wal/00000001/$seg\" in repository \"$COPY\" is corrupt: authentication failed"

# ---------------------------------------------------------------- key change
CBFS_NEW_PASSPHRASE='the next S3 passphrase' cbfs key change "$REPO"
is "$RC/$ERR" "0/" "cbfs key change in S3 (the config object replaced)"
cbfs list "$REPO"
check_error "the old passphrase is refused" 3 "cbfs: could not open repository \"$REPO\": wrong passphrase"
CBFS_PASSPHRASE_FILE=$NEWPASS cbfs check "$REPO" --read-data
is "$RC/$ERR" "0/" "the new passphrase reads every block"
CBFS_PASSPHRASE_FILE=$NEWPASS cbfs_pg wal-fetch "$REPO" "$seg2" "$TMP/w/$seg2"
is "$RC/$ERR" "0/" "and wal-fetch works with it"

done_testing
