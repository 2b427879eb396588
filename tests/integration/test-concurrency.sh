#!/usr/bin/env bash
# Everything at once (issue 17, item 4).  Two backups of the same node
# started together: one refused in one line, or both whole.  Then for
# CBFS_CONCURRENCY_SECONDS (default 20; bench/faults.sh runs 600): three
# servers under pgbench archiving into one repository as nodes a, b and c,
# backups of a and b one after another, expire and gc in loops, and a mount
# of a's latest backup read and unmounted again and again.  Afterwards
# nothing is lost: every segment wal-push acknowledged that no kept backup
# can have let go is there, every kept backup restores and starts, every
# mount read whole files, and check --read-data is clean.
source "$(dirname "$0")/lib.sh"
need_mount
SECONDS_RUN=${CBFS_CONCURRENCY_SECONDS:-20}

REPO=$TMP/repo
repo_init "$REPO"
NODES=(a b c)
for n in "${NODES[@]}"; do
	pg_init "$n"
	# an acknowledged segment goes to acked-NODE.list only once wal-push said 0
	printf '#!/bin/sh\n%s wal-push --node %s %s "$1" && echo "$2" >>%s/acked-%s.list\n' \
		"$CBFS" "$n" "$REPO" "$TMP" "$n" >"$TMP/archive-$n.sh"
	chmod 755 "$TMP/archive-$n.sh"
	pg_conf "$n" "archive_mode = on" "archive_command = '$TMP/archive-$n.sh %p %f'" \
		"archive_timeout = 5" "max_wal_size = 64MB"
	pg_start "$n" || bail "could not start $n"
	pgbench_as "$n" -i -s 2 -q postgres >/dev/null 2>&1 || bail "pgbench -i on $n failed"
done
chmod 777 "$TMP"

# ---------------------------------------------------------------- two backups at once
for l in x1 x2; do
	"$CBFS" backup "$REPO" --node a --pgdata "$(datadir a)" --dbname "$(conninfo a)" --label "$l" \
		>"$TMP/$l.out" 2>"$TMP/$l.err" &
	eval "PID_$l=\$!"
done
wait "$PID_x1"
RC1=$?
wait "$PID_x2"
RC2=$?
if ((RC1 == 0 && RC2 == 0)); then
	pass "two backups of node a at once: both whole"
else
	# the one refused says so in one line
	for l in x1 x2; do
		rc=RC${l#x}
		((${!rc} == 0)) && continue
		is "$(grep -vc '^cbfs: backup .* started at' "$TMP/$l.err")" 1 \
			"two backups of node a at once: $l refused in one line: $(grep -v 'started at' "$TMP/$l.err")"
	done
	ok "... and the other whole" test "$RC1" = 0 -o "$RC2" = 0
fi

# ---------------------------------------------------------------- everything at once
STOP=$TMP/stop
loop() { # loop NAME CMD...: CMD again and again until $STOP; failures to
	# NAME.fail, but for the one refusal by design (expire and gc exclude
	# each other: "is locked by"), counted in NAME.locked
	local name=$1 n=0
	shift
	while [[ ! -e $STOP ]]; do
		if ! "$@" >"$TMP/$name.last" 2>&1; then
			if grep -q '^cbfs: repository ".*" is locked by ' "$TMP/$name.last"; then
				echo "run $n" >>"$TMP/$name.locked"
			else
				echo "run $n failed: $(tail -n 1 "$TMP/$name.last")" >>"$TMP/$name.fail"
			fi
		fi
		cat "$TMP/$name.last" >>"$TMP/$name.log"
		n=$((n + 1))
		echo "$n" >"$TMP/$name.count"
		sleep 0.3
	done
}
backups() { # backups NODE: a numbered backup of NODE
	local k
	k=$(($(cat "$TMP/backup-$1.count" 2>/dev/null || echo 0) + 1))
	"$CBFS" backup "$REPO" --node "$1" --pgdata "$(datadir "$1")" --dbname "$(conninfo "$1")" \
		--label "$1-$k" --jobs 2
}
mount_read() { # mounts a's latest backup, reads every file, unmounts
	local mnt=$TMP/mr
	mkdir -p "$mnt"
	"$MOUNT_CBFS" "$REPO@latest" "$mnt" -o node=a,overlay="$TMP/mr-ov" || return 1
	local rc=0
	find "$mnt" -type f -print0 | xargs -0 cat >/dev/null || rc=1
	"$CBFS" umount "$mnt" || rc=1
	rm -rf "$TMP/mr-ov"
	return $rc
}
_mounts+=("$TMP/mr")
LOAD=() LOOPS=()
for n in "${NODES[@]}"; do
	# its report (when it outlives the run) is not TAP: kept apart
	background pgbench_as "$n" -n -c 2 -T "$((SECONDS_RUN + 60))" postgres >"$TMP/pgbench-$n.out" 2>&1
	LOAD+=("$BG_PID")
done
background loop backup-a backups a
LOOPS+=("$BG_PID")
background loop backup-b backups b
LOOPS+=("$BG_PID")
background loop expire "$CBFS" expire "$REPO" --keep-last 2
LOOPS+=("$BG_PID")
background loop gc "$CBFS" gc "$REPO" --max-waste 10
LOOPS+=("$BG_PID")
background loop mount mount_read
LOOPS+=("$BG_PID")
sleep "$SECONDS_RUN"
touch "$STOP"
wait "${LOOPS[@]}"
kill "${LOAD[@]}" 2>/dev/null
wait "${LOAD[@]}" 2>/dev/null
for n in backup-a backup-b expire gc mount; do
	diag "$n: $(cat "$TMP/$n.count" 2>/dev/null || echo 0) runs, $(cat "$TMP/$n.fail" 2>/dev/null | wc -l) failed, $(cat "$TMP/$n.locked" 2>/dev/null | wc -l) refused while gc or expire held the lock"
done
for n in backup-a backup-b expire gc mount; do
	is "$(cat "$TMP/$n.fail" 2>/dev/null)" "" "$n ran $(cat "$TMP/$n.count" 2>/dev/null || echo 0) times alongside the others, none failed" ||
		diag "$(tail -n 5 "$TMP/$n.log")"
done
for n in "${NODES[@]}"; do
	psql_as "$n" postgres "select pg_switch_wal()" >/dev/null
done
sleep 6

# ---------------------------------------------------------------- nothing lost
for n in "${NODES[@]}"; do
	# what the oldest kept backup of the node needs on, or all of it
	first=
	if cbfs list "$REPO" --node "$n" --json && [[ $OUT != "[]" ]]; then
		first=$(json_get "$OUT" 'min(b["wal_start"] for b in j)')
	fi
	missing=0 total=0
	while read -r seg; do
		[[ -n $first && $seg < $first ]] && continue
		total=$((total + 1))
		"$CBFS" wal-fetch --node "$n" "$REPO" "$seg" "$TMP/fetched" 2>/dev/null || {
			missing=$((missing + 1))
			diag "$n: $seg acknowledged and missing"
		}
	done < <(sort -u "$TMP/acked-$n.list")
	is "$missing" 0 "node $n: every acknowledged segment a kept backup may need is there ($total)"
done
for n in a b; do
	cbfs list "$REPO" --node "$n" --json
	for l in $(json_get "$OUT" '" ".join(b["label"] for b in j)'); do
		cbfs_restore "$REPO@$l" "r-$l" --node "$n"
		if ((RC == 0)) && pg_start "r-$l" && pg_wait_promoted "r-$l"; then
			is "$(psql_as "r-$l" postgres "select count(*) from pgbench_branches")" 2 \
				"backup $l of node $n restores and starts"
			pg_stop "r-$l"
		else
			fail "backup $l of node $n restores and starts" "$ERR"
		fi
		rm -rf "$(datadir "r-$l")"
	done
done
cbfs check "$REPO" --read-data
is "$RC" 0 "check --read-data after it all" || diag "$OUT" "$ERR"

for n in "${NODES[@]}"; do
	pg_stop "$n"
done
done_testing
