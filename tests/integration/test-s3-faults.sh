#!/usr/bin/env bash
# S3 through faults (issue 5, DESIGN §2 "S3"): every request of cbfs goes
# through tests/s3/faultproxy.py with its default faults on (about 10%
# answered 500/503, 5% connection resets before, after or in the middle of
# an answer, 5% delayed 0.2-1 s).  The archiver's wal-push, a backup, a
# restore and a mount must all still succeed, with the same data: the
# archiver never saw a failure, the restored copy is byte for byte the one
# restored without the proxy, every file read through the mount is too, and
# both copies start and show the source's tables.  The proxy's counters
# must show faults in each phase, and every kind of fault overall.
source "$(dirname "$0")/lib.sh"
need_mount
source "$(dirname "$0")/lib-s3.sh"

BUCKET=cbfs-faults
s3_setup "$BUCKET"
REPO=s3://$BUCKET/a
fp_start proxy --seed "${S3_FAULT_SEED:-424242}" || bail "could not start the fault proxy"
# through the proxy (retries quick: 20 ms first backoff), and directly
CONF=$TMP/cbfs.conf
CONF_DIRECT=$TMP/cbfs-direct.conf
s3_config "$CONF" "$FP_ENDPOINT" "s3_retry_base_ms = 20"
s3_config "$CONF_DIRECT"
s3_env_off
export CBFS_CONFIG=$CONF # also for the clusters, run by postgres

# phase NAME: begins a phase; phase_end checks that it met faults.
phase() {
	fp_sync
	_phase=$1 _faults0=$(fp_stat faults) _requests0=$(fp_stat requests) _t0=$(date +%s%N)
}
phase_end() {
	fp_sync
	local f=$(($(fp_stat faults) - _faults0)) r=$(($(fp_stat requests) - _requests0))
	cmp_ok "$f" -gt 0 "$_phase: faults were injected ($f in $r requests, $((($(date +%s%N) - _t0) / 1000000)) ms)"
}

# ---------------------------------------------------------------- archive
cbfs_pg init "$REPO"
is "$RC/$ERR" "0/" "cbfs init through the faults"

pg_init a
pg_archive a "$REPO"
pg_start a || bail "could not start cluster a"
s3_load_data a

phase "archive"
for ((i = 0; i < 8; i++)); do
	psql_as a postgres "update pgbench_accounts set abalance = abalance + 1 where aid % 8 = $i" >/dev/null
	last=$(pg_switch_and_archive a) || break
done
ok "the archiver stored 8 more segments ($last the last)" test "$i" = 8
is "$(psql_as a postgres "select failed_count from pg_stat_archiver")" 0 \
	"the archiver's wal-push never failed"
phase_end

# ---------------------------------------------------------------- backup
phase "backup"
backup a "$REPO" b1 --jobs 2 || bail "the backup through the faults failed"
if ! table_hashes a postgres >"$TMP/src.tables" || ! lo_hashes a postgres >"$TMP/src.lo"; then
	bail "could not read the source"
fi
psql_as a postgres "update pgbench_accounts set abalance = abalance + 1 where aid % 3 = 0" >/dev/null
backup a "$REPO" b2 --jobs 2 # a second one, deduplicated against the first
cbfs_pg list "$REPO" --json
is "$(json_get "$OUT" '" ".join(b["label"] for b in j)')" "b1 b2" "cbfs list through the faults shows both"
phase_end
pg_switch_and_archive a >/dev/null || fail "the archiver still archives"
is "$(psql_as a postgres "select failed_count from pg_stat_archiver")" 0 \
	"the archiver's wal-push never failed (also during the backup)"
pg_stop a

# files DIR: "sha256 path" of every regular file below DIR, sorted by path.
files() {
	(cd "$1" && find . -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 sha256sum)
}

# ---------------------------------------------------------------- restore
CBFS_CONFIG=$CONF_DIRECT cbfs_restore "$REPO@b1" r0
is "$RC/$ERR" "0/" "restore @b1 without the proxy (the reference)"
files "$(datadir r0)" >"$TMP/r0.files" || bail "could not read the reference copy"

phase "restore"
cbfs_restore "$REPO@b1" r1 --jobs 2
is "$RC/$ERR" "0/" "restore @b1 through the faults"
files "$(datadir r1)" >"$TMP/r1.files"
ok "every restored file equals the reference ($(wc -l <"$TMP/r0.files") files)" \
	diff "$TMP/r0.files" "$TMP/r1.files"
if pg_start r1 && pg_wait_promoted r1; then
	pass "r1 starts and recovers (wal-fetch through the faults)"
	table_hashes r1 postgres >"$TMP/r1.tables"
	lo_hashes r1 postgres >"$TMP/r1.lo"
	ok "r1: the tables equal the source" diff "$TMP/src.tables" "$TMP/r1.tables"
	ok "r1: the large object equals the source" diff "$TMP/src.lo" "$TMP/r1.lo"
	pg_stop r1
else
	fail "r1 starts and recovers (wal-fetch through the faults)" "$(tail -n 20 "$TMP/r1.log")"
fi
phase_end

# ---------------------------------------------------------------- mount
MNT=$(datadir m)
mkdir "$MNT"
phase "mount"
cbfs_mount "$REPO@b1" "$MNT" -o uid=postgres,gid=postgres
is "$RC/$ERR" "0/" "mount @b1 through the faults"
# what the mount makes up for PostgreSQL is not in the backup's files
files "$MNT" | grep -Ev ' (postgresql\.auto\.conf|backup_label|recovery\.signal)$' >"$TMP/m.files"
ok "every file read through the mount equals the reference" \
	diff <(grep -Ev ' (postgresql\.auto\.conf|backup_label|recovery\.signal)$' "$TMP/r0.files") "$TMP/m.files"
if pg_start m && pg_wait_promoted m; then
	pass "PostgreSQL starts on the mount and recovers"
	table_hashes m postgres >"$TMP/m.tables"
	lo_hashes m postgres >"$TMP/m.lo"
	ok "m: the tables equal the source" diff "$TMP/src.tables" "$TMP/m.tables"
	ok "m: the large object equals the source" diff "$TMP/src.lo" "$TMP/m.lo"
	pg_stop m
else
	fail "PostgreSQL starts on the mount and recovers" "$(tail -n 20 "$TMP/m.log")"
fi
phase_end
cbfs_umount "$MNT"
is "$RC/$ERR" "0/" "cbfs umount"

# ---------------------------------------------------------------- the proxy's account
fp_stop
is "$FP_EXIT" 0 "the fault proxy exits 0"
for k in error_500 error_503 reset_before reset_after_request reset_mid_body delay; do
	cmp_ok "$(fp_stat "$k")" -gt 0 "the proxy injected $k ($(fp_stat "$k") times)"
done
is "$(fp_stat upstream_errors)" 0 "the proxy always reached the server"
diag "proxy: $(fp_stat requests) requests, $(fp_stat faults) faults, $(fp_stat delay) delays"

done_testing
