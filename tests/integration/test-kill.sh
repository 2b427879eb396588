#!/usr/bin/env bash
# A backup killed with kill -9 at several moments (DESIGN §3.2): early, half
# way through, and at its first write into the repository.  No backup is
# listed for it, the earlier backup still restores and starts, and the next
# backup succeeds.
source "$(dirname "$0")/lib.sh"

REPO=$TMP/repo
repo_init "$REPO"
pg_init k
pg_archive k "$REPO"
pg_start k -c max_wal_size=1GB || bail "could not start cluster k"
pgbench_as k -i -s 20 -q postgres >"$TMP/pgbench-init.out" 2>&1 ||
	bail "pgbench -i failed: $(tail -n 5 "$TMP/pgbench-init.out")"
backup k "$REPO" base --jobs 2 || bail "the first backup failed"

# New blocks for a backup to store: VACUUM FULL rewrites the largest table
# into a new file whose pages hash differently.
vacuum() { psql_as k postgres "vacuum full pgbench_accounts" >/dev/null; }

# How long such a backup takes, to kill the next ones at moments inside it.
vacuum
t0=$(date +%s%N)
backup k "$REPO" calib --jobs 1 || bail "the calibration backup failed"
ms=$((($(date +%s%N) - t0) / 1000000))
diag "an uninterrupted backup takes ${ms} ms"

# bytes in the repository outside its WAL
repo_data_bytes() { du -sb --exclude=wal "$REPO" | cut -f1; }

# killed_backup LABEL MOMENT: starts a backup and kills it with kill -9 at
# MOMENT: "NNNms" after its start, or "write": at its first write into the
# repository (found by stopping it every few ms to look, so that it cannot
# finish between the look and the kill).
killed_backup() {
	local label=$1 moment=$2 pid st base
	vacuum
	base=$(repo_data_bytes)
	"$CBFS" backup "$REPO" --pgdata "$(datadir k)" --dbname "$(conninfo k)" \
		--label "$label" --jobs 1 >"$TMP/killed.out" 2>"$TMP/killed.err" &
	pid=$!
	if [[ $moment == write ]]; then
		while kill -STOP "$pid" 2>/dev/null; do
			if (($(repo_data_bytes) > base)); then
				kill -9 "$pid"
				break
			fi
			kill -CONT "$pid"
			sleep 0.005
		done
	else
		sleep "$(printf '%d.%03d' $((${moment%ms} / 1000)) $((${moment%ms} % 1000)))"
		kill -9 "$pid" 2>/dev/null
	fi
	{ wait "$pid"; } 2>/dev/null
	st=$?
	if ((st == 137)); then
		pass "backup killed at $moment"
	else
		fail "backup killed at $moment" "the backup was no longer running (exit $st)" \
			"$(cat "$TMP/killed.out" "$TMP/killed.err")"
	fi
	is "$(labels "$REPO" | tr '\n' ' ')" "base calib " "after kill -9 at $moment no new backup is listed"
}

killed_backup killed-early 100ms
killed_backup killed-mid "$((ms / 2))ms"
killed_backup killed-writing write

# the earlier backup restores and starts
cbfs_restore "$REPO@base" r --jobs 2
is "$RC/$ERR" "0/" "restore of the earlier backup"
if pg_start r && pg_wait_promoted r; then
	pass "the restored earlier backup starts and finishes recovery"
	is "$(sql r postgres "select count(*) from pgbench_accounts")" 2000000 "restored row count"
	is "$(sql r postgres "select sum(abalance) from pgbench_accounts")" 0 "restored balances"
	amcheck_ok r postgres
	pg_stop r
else
	fail "the restored earlier backup starts and finishes recovery"
fi

# the next backup succeeds
backup k "$REPO" after --jobs 2
is "$(labels "$REPO" | tr '\n' ' ')" "base calib after " "the complete backups are listed"
cbfs info "$REPO@after" --json
is "$RC" 0 "info of the next backup"

done_testing
