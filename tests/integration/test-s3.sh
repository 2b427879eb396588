#!/usr/bin/env bash
# S3 repositories end to end (issue 5, DESIGN §2 "S3") against a real Swift
# s3api server: cbfs init of s3://bucket/prefix and bucket:/prefix; settings
# from the environment and from a configuration file (CBFS_CONFIG, mode
# 0600; a world-readable one holding the secret is refused); PostgreSQL 15
# archiving with cbfs wal-push into S3 through that file; cbfs backup,
# list, info, restore-point; restores of the backup and of the restore
# point, and a mount of the backup, each started and compared with the
# source; wal-fetch of a missing segment; wrong credentials, a missing
# bucket and a missing repository with their exact messages.
source "$(dirname "$0")/lib.sh"
need_mount
source "$(dirname "$0")/lib-s3.sh"

BUCKET=cbfs-it
s3_setup "$BUCKET"
REPO=s3://$BUCKET/cluster/a
CONF=$TMP/cbfs.conf

# ---------------------------------------------------------------- init
# settings from the environment (AWS_*)
cbfs_pg init "$REPO"
is "$RC/$ERR" "0/" "cbfs init $REPO (settings from the environment)"
like "$OUT" "^initialized repository \"$REPO\"" "init says which repository"
cbfs init "$REPO"
check_error "a second init is refused" 3 \
	"cbfs: could not create repository \"$REPO\": repository already exists"
cbfs init "$BUCKET:/cluster/a"
check_error "bucket:/prefix names the same repository" 3 \
	"cbfs: could not create repository \"$BUCKET:/cluster/a\": repository already exists"
cbfs init "$BUCKET:/other"
is "$RC/$ERR" "0/" "cbfs init $BUCKET:/other"
cbfs list "s3://$BUCKET/other"
is "$RC/$ERR" "0/" "s3://$BUCKET/other lists the repository made as $BUCKET:/other"
cbfs list "s3://$BUCKET/cluster"
check_error "a prefix above a repository is not one" 3 \
	"cbfs: could not open repository \"s3://$BUCKET/cluster\": not a cbfs repository"

# from now on, settings from a configuration file only: the archiver, the
# restored and the mounted clusters (run by postgres) read it too
s3_config "$CONF"
s3_env_off
export CBFS_CONFIG=$CONF
cbfs list "$REPO"
is "$RC/$ERR" "0/" "settings from CBFS_CONFIG (mode 0600)"
cbfs_pg list "$REPO"
is "$RC/$ERR" "0/" "postgres reads the same file"
chmod 644 "$CONF"
cbfs list "$REPO"
check_error "a world-readable configuration file holding the secret is refused" 2 \
	"cbfs: configuration file \"$CONF\" holds s3_secret_access_key but others can read it (chmod o-r)"
chmod 600 "$CONF"
CBFS_CONFIG=$TMP/missing.conf cbfs list "$REPO"
check_error "no credentials anywhere" 2 \
	"cbfs: could not open repository \"$REPO\": no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or s3_access_key_id and s3_secret_access_key in the configuration file)"

# ---------------------------------------------------------------- source cluster
pg_init a
pg_archive a "$REPO"
pg_start a || bail "could not start cluster a"
s3_load_data a
psql_as a postgres "create table t (id int primary key, phase text);
	insert into t values (1, 'before-backup')" >/dev/null || bail "could not create table t"

seg=$(pg_switch_and_archive a) || bail "no segment archived into S3: $(tail -n 5 "$TMP/a.log")"
pass "archive_command (cbfs wal-push) archived $seg into S3"
mkdir "$TMP/w"
cp "$(datadir a)/pg_wal/$seg" "$TMP/w/$seg.orig"
chown -R postgres:postgres "$TMP/w"
cbfs_pg wal-fetch "$REPO" "$seg" "$TMP/w/$seg"
is "$RC/$ERR" "0/" "wal-fetch $seg from S3"
ok "the fetched segment equals the original" cmp "$TMP/w/$seg.orig" "$TMP/w/$seg"
cbfs_pg wal-fetch "$REPO" 0000000100000000000000FE "$TMP/w/missing"
is "$RC/$ERR/$OUT" "1//" "wal-fetch of a missing segment: exit 1, nothing printed"
ok "nothing written for the missing segment" test ! -e "$TMP/w/missing"

# ---------------------------------------------------------------- backup, list, info
backup a "$REPO" b1 || bail "the backup into S3 failed"
# snapshot NAME PREFIX: the content of cluster NAME into $TMP/PREFIX.*
snapshot() {
	table_hashes "$1" postgres >"$TMP/$2.tables" && lo_hashes "$1" postgres >"$TMP/$2.lo"
}
snapshot a src || bail "could not read the source"
cmp_ok "$(grep -c . "$TMP/src.tables")" -ge 6 "the source has tables"

cbfs list "$REPO"
is "$RC" 0 "cbfs list"
like "$OUT" "b1" "cbfs list shows b1"
cbfs list "$REPO" --json
is "$(json_get "$OUT" '" ".join(b["label"] for b in j)')" b1 "cbfs list --json"
cbfs info "$REPO@b1" --json
is "$RC" 0 "cbfs info @b1 --json"
is "$(json_get "$OUT" 'str(j["system_identifier"])')" "$(sysid a)" "info: system identifier"
is "$(json_get "$OUT" 'str(j["bad_pages"])')" 0 "info: no bad pages"
cmp_ok "$(json_get "$OUT" 'j["file_count"]')" -gt 900 "info: file count"
cbfs info "$BUCKET:/cluster/a"
is "$RC" 0 "cbfs info through the bucket:/prefix spelling"
like "$OUT" "b1" "it shows b1"

# ---------------------------------------------------------------- restore point
psql_as a postgres "insert into t values (2, 'before-point')" >/dev/null
cbfs restore-point "$REPO" p1 --dbname "$(conninfo a)"
is "$RC" 0 "cbfs restore-point p1 (waits for its WAL in S3)" || diag "$ERR"
psql_as a postgres "insert into t values (3, 'after-point')" >/dev/null
pg_switch_and_archive a >/dev/null || fail "the last segment was archived"
cbfs list "$REPO" --json --points
is "$(json_get "$OUT" '" ".join(p["name"] for p in j)')" p1 "cbfs list --points shows p1"

# ---------------------------------------------------------------- restores
rows() { sql "$1" postgres "select string_agg(id::text, ',' order by id) from t"; }

# start_copy NAME WHAT: starts a restored or mounted copy until promoted.
start_copy() {
	if pg_start "$1" && pg_wait_promoted "$1"; then
		pass "$2: PostgreSQL starts and finishes recovery"
		return 0
	fi
	fail "$2: PostgreSQL starts and finishes recovery" "$(tail -n 20 "$TMP/$1.log")"
	return 1
}

cbfs_restore "$REPO@b1" r1 --jobs 2
is "$RC/$ERR" "0/" "restore @b1 from S3"
like "$(cat "$(datadir r1)/postgresql.auto.conf")" "wal-fetch ''$REPO'' %f %p" "r1: restore_command fetches from S3"
if start_copy r1 "r1 (@b1)"; then
	snapshot r1 r1
	ok "r1: the tables equal the source at the backup" diff "$TMP/src.tables" "$TMP/r1.tables"
	ok "r1: the large object equals the source" diff "$TMP/src.lo" "$TMP/r1.lo"
	is "$(rows r1)" 1 "r1: no row of after the backup"
	amcheck_ok r1 postgres
	pg_stop r1
fi

cbfs_restore "$REPO@p1" r2
is "$RC/$ERR" "0/" "restore @p1 from S3"
if start_copy r2 "r2 (@p1)"; then
	is "$(rows r2)" 1,2 "r2: the rows committed before the point, none after"
	snapshot r2 r2
	ok "r2: the other tables equal the source" \
		diff <(grep -v '^public\.t ' "$TMP/src.tables") <(grep -v '^public\.t ' "$TMP/r2.tables")
	pg_stop r2
fi

# ---------------------------------------------------------------- mount
MNT=$(datadir m)
mkdir "$MNT"
cbfs_mount "$REPO@b1" "$MNT" -o uid=postgres,gid=postgres
is "$RC/$ERR" "0/" "mount.cbfs $REPO@b1"
if start_copy m "the mount (@b1)"; then
	snapshot m m
	ok "m: the tables equal the source at the backup" diff "$TMP/src.tables" "$TMP/m.tables"
	ok "m: the large object equals the source" diff "$TMP/src.lo" "$TMP/m.lo"
	is "$(rows m)" 1 "m: no row of after the backup"
	pg_stop m
fi
cbfs_umount "$MNT"
is "$RC/$ERR" "0/" "cbfs umount"

# ---------------------------------------------------------------- verify
cbfs verify "$REPO@b1" --json
is "$RC" 0 "cbfs verify $REPO@b1 passes (settings from the file reach the mount and wal-fetch)" ||
	diag "$OUT" "$ERR"
cmp_ok "$(json_get "$OUT" 'j["bytes_checked"]' 2>/dev/null || echo 0)" -gt 0 "verify read the backup from S3"

# ---------------------------------------------------------------- failures
# the environment wins over the file: a wrong secret there
AWS_SECRET_ACCESS_KEY=not-the-secret-0815 cbfs list "$REPO"
check_error "wrong secret: cbfs list" 3 \
	"cbfs: could not open repository \"$REPO\": could not read object \"$REPO/config\": access denied (HTTP 403 SignatureDoesNotMatch)"
AWS_SECRET_ACCESS_KEY=not-the-secret-0815 cbfs_pg wal-fetch "$REPO" "$seg" "$TMP/w/denied"
check_error "wrong secret: wal-fetch fails loudly, not as a missing segment" 3 \
	"cbfs: could not open repository \"$REPO\": could not read object \"$REPO/config\": access denied (HTTP 403 SignatureDoesNotMatch)"
AWS_ACCESS_KEY_ID=nobody:none cbfs restore "$REPO@b1" "$TMP/r9"
check_error "unknown access key: cbfs restore" 3 \
	"cbfs: could not open repository \"$REPO\": could not read object \"$REPO/config\": access denied (HTTP 403 SignatureDoesNotMatch)"
ok "the failed restore left no data directory behind" test ! -e "$TMP/r9/PG_VERSION"

cbfs list "s3://cbfs-no-bucket/x"
check_error "missing bucket: cbfs list" 3 \
	"cbfs: could not open repository \"s3://cbfs-no-bucket/x\": could not read object \"s3://cbfs-no-bucket/x/config\": bucket \"cbfs-no-bucket\" does not exist"
cbfs init "cbfs-no-bucket:/x"
check_error "missing bucket: cbfs init" 3 \
	"cbfs: could not create repository \"cbfs-no-bucket:/x\": could not write object \"s3://cbfs-no-bucket/x/config\": bucket \"cbfs-no-bucket\" does not exist"
cbfs_pg wal-fetch "s3://cbfs-no-bucket/x" "$seg" "$TMP/w/nobucket"
check_error "missing bucket: wal-fetch fails loudly" 3 \
	"cbfs: could not open repository \"s3://cbfs-no-bucket/x\": could not read object \"s3://cbfs-no-bucket/x/config\": bucket \"cbfs-no-bucket\" does not exist"

done_testing
