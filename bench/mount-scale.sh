#!/usr/bin/env bash
# bench/mount-scale.sh - does mount time grow with the database?  (issue 18,
# item 6).  Not a test: it prints figures to record in RESULTS.md.
#
#   sudo bench/mount-scale.sh
#
# A real cluster of about 1 GB (pgbench -i -s SCALE) is backed up (label
# gb); then build/tests/fabricate stores a second backup (tib) with all of
# gb plus BIG (default 1T) of relation files in 1 GiB segments, whose
# blocks cycle through 4096 distinct ones: its manifest holds BIG / 64 KiB
# real block references.  For each, TRIALS times, with the page cache
# dropped first:
#   - mount.cbfs until it returns (the mount is up);
#   - stat of a relation file and a read of 8 KiB of it (in tib: of its
#     last fabricated segment);
#   - pg_ctl start on the mount until the first query is answered;
#   - the manifest bytes the mount read (its log).
# Manifest size per GB of data is reported for both, and, when OLD_CBFS
# names a cbfs built before manifests were read in place (format 1, one
# row per block), for a backup of the same cluster by it.
# Environment: SCALE (68), BIG (1T), TRIALS (3), OLD_CBFS, BENCH_DIR.
set -uo pipefail
NAME=mount-scale.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
W=${BENCH_DIR:-$HERE/work-mount-scale}
SCALE=${SCALE:-68}
BIG=${BIG:-1T}
TRIALS=${TRIALS:-3}
OLD_CBFS=${OLD_CBFS:-}
need_root_and_pg
FAB=$TOP/build/tests/fabricate
[[ -x $TOP/build/cli/cbfs && -x $FAB ]] || die "build first (ninja -C build)"
fresh_work
MNT=$W/mnt
trap 'stop_servers; "$CBFS" umount "$MNT" >/dev/null 2>&1; true' EXIT

mkdir -p "$W/bin" "$W/cache" "$MNT"
cp "$TOP/build/cli/cbfs" "$TOP/build/cli/mount.cbfs" "$W/bin/"
chmod 755 "$W/bin" "$W/bin/"*
CBFS=$W/bin/cbfs
export CBFS_CACHE_DIR=$W/cache
REPO=$W/repo
chown postgres: "$W" "$W/cache"
"$CBFS" init "$REPO" >/dev/null || die "init failed"

SP=$(free_port)
as_pg "$PGBIN/initdb" -k -D "$W/src" -U postgres -A trust >/dev/null
printf '%s\n' "archive_mode = on" "archive_command = '$CBFS wal-push $REPO %p'" >>"$W/src/postgresql.conf"
chown postgres: "$REPO" -R
pg_up "$W/src" "$SP"
note "pgbench -i -s $SCALE"
as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$SP" -i -s "$SCALE" -q postgres >/dev/null 2>&1 || die "pgbench -i failed"
DATA=$(du -sb --exclude=pg_wal "$W/src" | cut -f1)
REL=$(psql_at "$SP" postgres "select pg_relation_filepath('pgbench_accounts')")
as_pg "$CBFS" backup "$REPO" --pgdata "$W/src" --dbname "host=$W/sock port=$SP user=postgres" --label gb \
	>"$W/log/backup-gb.out" 2>&1 || die "backup failed"
msize() { sed -n 's/^manifest_size = //p' "$1/backups/$2.info"; }
NEWM=$(msize "$REPO" gb)
if [[ -n $OLD_CBFS ]]; then
	"$OLD_CBFS" init "$W/repo-old" >/dev/null && chown -R postgres: "$W/repo-old"
	as_pg "$OLD_CBFS" backup "$W/repo-old" --pgdata "$W/src" \
		--dbname "host=$W/sock port=$SP user=postgres" --label gb >/dev/null 2>&1 || die "old backup failed"
	OLDM=$(msize "$W/repo-old" gb)
fi

note "fabricate tib: gb plus $BIG"
T0=$(now)
"$FAB" "$REPO" gb tib "$BIG" "$(dirname "$REL")" >"$W/log/fabricate.out" 2>&1 || die "fabricate failed: $(tail -n 1 "$W/log/fabricate.out")"
FAB_S=$(since "$T0")
TIBM=$(msize "$REPO" tib)
TIBSEG=$(sed -n 's/.* in \([0-9]*\) files of 1 GiB.*/\1/p' "$W/log/fabricate.out")
DBDIR=$(dirname "$REL")
TIBFILE=$DBDIR/9000000.$((TIBSEG - 1))
chown -R postgres: "$REPO"

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# one LABEL FILE: mount, stat + read, start + first query; prints the times
one() {
	local label=$1 file=$2 t0 tm ts tq mp fetched
	rm -rf "$W/ov"
	drop_caches
	t0=$(now)
	"$W/bin/mount.cbfs" "$REPO@$label" "$MNT" -o "uid=postgres,gid=postgres,overlay=$W/ov" || die "mount of $label failed"
	tm=$(since "$t0")
	t0=$(now)
	stat "$MNT/$file" >/dev/null || die "stat failed"
	dd if="$MNT/$file" of=/dev/null bs=8192 count=1 skip=$(($(stat -c %s "$MNT/$file") / 8192 - 1)) status=none ||
		die "read failed"
	ts=$(since "$t0")
	fetched=$(sed -n 's/.*: \([0-9]*\) bytes of its manifest.*/\1/p' "$W/ov/mount.log" | tail -n 1)
	mp=$(free_port)
	t0=$(now)
	pg_up "$MNT" "$mp"
	psql_at "$mp" postgres "select count(*) from pgbench_branches" >/dev/null || die "first query failed"
	tq=$(since "$t0")
	pg_down "$MNT"
	"$CBFS" umount "$MNT" >/dev/null || die "umount failed"
	echo "$tm $ts $tq $fetched"
}

declare -A RES
for label in gb tib; do
	file=$REL
	[[ $label == tib ]] && file=$TIBFILE
	for ((t = 1; t <= TRIALS; t++)); do
		r=$(one "$label" "$file")
		note "$label trial $t: mount ${r%% *} s; stat+read, start+query, manifest bytes: ${r#* }"
		RES[$label]+="$r"$'\n'
	done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
col() { printf '%s' "${RES[$1]}" | awk -v c="$2" 'NF { print $c }' | median; }
GB=$(awk -v b="$DATA" 'BEGIN { printf "%.2f", b / 1e9 }')
TIBGB=$(awk -v b="$DATA" -v s="$TIBSEG" 'BEGIN { printf "%.0f", b / 1e9 + s * 1.073741824 }')
echo
echo "## mount-scale: $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), local repository"
echo "data: gb $GB GB (pgbench -s $SCALE); tib $TIBGB GB ($TIBSEG fabricated 1 GiB segments + gb; fabricate took $FAB_S s)"
echo "manifest: gb $NEWM bytes ($(awk -v m="$NEWM" -v g="$GB" 'BEGIN { printf "%.0f", m / g / 1e3 }') kB/GB); tib $TIBM bytes ($(awk -v m="$TIBM" -v g="$TIBGB" 'BEGIN { printf "%.0f", m / g / 1e3 }') kB/GB)"
[[ -n $OLD_CBFS ]] && echo "manifest before (format 1, whole): gb $OLDM bytes ($(awk -v m="$OLDM" -v g="$GB" 'BEGIN { printf "%.0f", m / g / 1e3 }') kB/GB)"
printf '| backup | mount (s) | stat + 8 KiB read (s) | start + first query (s) | manifest bytes read by the mount |\n|---|---|---|---|---|\n'
for label in gb tib; do
	printf '| %s | %s | %s | %s | %s |\n' "$label" "$(col "$label" 1)" "$(col "$label" 2)" "$(col "$label" 3)" "$(col "$label" 4)"
done
echo "(medians of $TRIALS; page cache dropped before each mount)"
