#!/usr/bin/env bash
# bench/rate.sh - --max-rate holds (issue 19, item 2): "within ±10% over
# any 10 s window".  Not a test: it prints figures to record in RESULTS.md.
#
#   sudo bench/rate.sh              # SCALE=100 (about 1.5 GB)
#
# For each command below, the bytes it reads are sampled every 0.5 s from
# /proc/PID/io (rchar: every read(2) and pread(2) of the process, which is
# what --max-rate counts plus a little: manifests, WAL, catalogs), and the
# rate over every 10 s window (sliding by 0.5 s) from the first byte read
# to the last is compared with the limit:
#   backup  --max-rate BACKUP_RATE   (reads the data directory)
#   restore --max-rate REPO_RATE     (reads the repository's packs)
#   check --read-data --max-rate REPO_RATE  (strace too, as copy)
#   copy    --max-rate REPO_RATE     (counted from an strace of its reads of
#                                     files under SOURCE: its rchar also
#                                     holds DESTINATION's SQLite index and
#                                     manifests)
#   the mount's hydration, -o max_rate=HYDRATE_RATE (the daemon's reads
#   of packs; hydration counts the bytes it writes into the overlay, which
#   are the blocks' plain size: compare with the overlay's growth instead)
set -uo pipefail
NAME=rate.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
W=${BENCH_DIR:-$HERE/work-rate}
SCALE=${SCALE:-100}
BACKUP_RATE=${BACKUP_RATE:-50M}
REPO_RATE=${REPO_RATE:-2M}
HYDRATE_RATE=${HYDRATE_RATE:-50M}
need_root_and_pg
[[ -x $TOP/build/cli/cbfs ]] || die "build first (ninja -C build)"
fresh_work
MNT=$W/mnt
trap 'stop_servers; "$CBFS" umount "$MNT" >/dev/null 2>&1; rm -rf "$W"/src "$W"/repo "$W"/repo2 "$W"/restored "$W"/ov; true' EXIT
mkdir -p "$W/bin" "$W/cache" "$W/src" "$W/repo" "$W/repo2" "$MNT"
cp "$TOP/build/cli/cbfs" "$TOP/build/cli/mount.cbfs" "$W/bin/"
chmod 755 "$W/bin" "$W/bin/"*
CBFS=$W/bin/cbfs
export CBFS_CACHE_DIR=$W/cache
chown postgres: "$W/cache" "$W/src" "$W/repo"
chmod 700 "$W/src"
P=$(free_port)
"$CBFS" init "$W/repo" >/dev/null
"$CBFS" init "$W/repo2" >/dev/null
chown -R postgres: "$W/repo"
note "source: pgbench -i -s $SCALE"
as_pg "$PGBIN/initdb" -k -D "$W/src" -U postgres -A trust >/dev/null
echo "archive_mode = on" >>"$W/src/postgresql.conf"
echo "archive_command = '$CBFS wal-push $W/repo %p'" >>"$W/src/postgresql.conf"
pg_up "$W/src" "$P"
as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$P" -i -q -s "$SCALE" postgres >/dev/null 2>&1 || die "pgbench -i failed"
as_pg "$PGBIN/psql" -X -q -h "$W/sock" -p "$P" -c checkpoint postgres >/dev/null

# watch PID LIMIT NAME [FILE-OR-DIR]: sample PID's rchar (or the size of
# FILE-OR-DIR) every 0.5 s until it exits; print the 10 s windows' spread
watch() {
	local pid=$1 limit=$2 name=$3 what=${4:-} t v
	local lim
	lim=$(numfmt --from=iec "$limit")
	: >"$W/log/$name.samples"
	# until it ends (a zombie has ended: its parent, this script, reaps it later)
	while [[ -e /proc/$pid && $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) != Z ]]; do
		t=$(date +%s.%N)
		if [[ -n $what ]]; then
			v=$(du -sB1 "$what" 2>/dev/null | cut -f1)
		else
			v=$(awk '$1 == "rchar:" { print $2 }' "/proc/$pid/io" 2>/dev/null)
		fi
		[[ -n $v ]] && echo "$t $v" >>"$W/log/$name.samples"
		sleep 0.5
	done
	awk -v lim="$lim" -v name="$name" -v limit="$limit" '
		{ t[NR] = $1; v[NR] = $2 }
		END {
			# from the first sample that moved to the last that moved
			for (a = 2; a <= NR && v[a] == v[1]; a++);
			a--;
			for (b = NR - 1; b > a && v[b] == v[NR]; b--);
			b++;
			lo = 1e18; hi = 0; n = 0;
			for (i = a; i <= b; i++) {
				for (j = i; j <= b && t[j] - t[i] < 10; j++);
				if (j > b) break;
				r = (v[j] - v[i]) / (t[j] - t[i]);
				if (r < lo) lo = r; if (r > hi) hi = r; n++;
			}
			total = (v[b] - v[a]) / (t[b] - t[a]);
			if (n == 0) { printf "| %s | %s | %.1f s: too short for a 10 s window |\n", name, limit, t[b] - t[a]; exit }
			printf "| %s | %s | %.1f s | %.2f MB/s (%+.1f%%) | %.2f MB/s (%+.1f%%) | %.2f MB/s (%+.1f%%) | %d |\n",
				name, limit, t[b] - t[a], total / 1e6, 100 * (total / lim - 1),
				lo / 1e6, 100 * (lo / lim - 1), hi / 1e6, 100 * (hi / lim - 1), n
		}' "$W/log/$name.samples"
}

# traced NAME LIMIT REPO-DIR CMD...: CMD under strace; the 10 s windows of
# what it read from files under REPO-DIR (its rchar would also count its
# local files: SQLite indexes and manifests)
traced() {
	local name=$1 limit=$2 dir=$3
	shift 3
	strace -f -ttt -y -e trace=read,pread64 -e signal=none -o "$W/log/$name.strace" \
		"$@" >"$W/log/$name.out" 2>&1 || die "$name failed"
	/usr/bin/python3 - "$W/log/$name.strace" "$dir" "$(numfmt --from=iec "$limit")" "$limit" "$name" <<-'EOF'
	import re, sys
	log, src, lim, limit = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
	ev = []
	for line in open(log):
	    m = re.match(r'\s*\d+\s+([0-9.]+) (?:read|pread64)\(\d+<([^>]*)>.*\) = (\d+)', line)
	    if m and m.group(2).startswith(src):
	        ev.append((float(m.group(1)), int(m.group(3))))
	ev.sort()
	t = [e[0] for e in ev]
	cum = [0]
	for e in ev:
	    cum.append(cum[-1] + e[1])
	lo, hi, n = 1e18, 0.0, 0
	j = 0
	for i in range(len(t)):
	    while j < len(t) and t[j] - t[i] < 10:
	        j += 1
	    if j == len(t):
	        break
	    r = (cum[j] - cum[i]) / (t[j] - t[i])
	    lo, hi, n = min(lo, r), max(hi, r), n + 1
	total = cum[-1] / (t[-1] - t[0])
	print("| %s (its reads of the repository's files, strace) | %s | %.1f s | %.2f MB/s (%+.1f%%) | %.2f MB/s (%+.1f%%) | %.2f MB/s (%+.1f%%) | %d |"
	      % (sys.argv[5], limit, t[-1] - t[0], total / 1e6, 100 * (total / lim - 1), lo / 1e6, 100 * (lo / lim - 1), hi / 1e6, 100 * (hi / lim - 1), n))
	EOF
}

R=()
note "backup --max-rate $BACKUP_RATE"
"$CBFS" backup "$W/repo" --pgdata "$W/src" --dbname "host=$W/sock port=$P user=postgres" \
	--label b1 --max-rate "$BACKUP_RATE" >"$W/log/backup.out" 2>&1 &
R+=("$(watch $! "$BACKUP_RATE" backup)")
wait $! 2>/dev/null
pg_down "$W/src"

note "restore --max-rate $REPO_RATE"
"$CBFS" restore "$W/repo@b1" "$W/restored" --max-rate "$REPO_RATE" >"$W/log/restore.out" 2>&1 &
R+=("$(watch $! "$REPO_RATE" restore)")

note "check --read-data --max-rate $REPO_RATE"
need_tools strace
R+=("$(traced "check --read-data" "$REPO_RATE" "$W/repo/" "$CBFS" check "$W/repo" --read-data --max-rate "$REPO_RATE")")

note "copy --max-rate $REPO_RATE"
need_tools strace
R+=("$(traced copy "$REPO_RATE" "$W/repo/" "$CBFS" copy "$W/repo" "$W/repo2" --max-rate "$REPO_RATE")")

note "mount -o hydrate,max_rate=$HYDRATE_RATE"
"$W/bin/mount.cbfs" "$W/repo@b1" "$MNT" -o "overlay=$W/ov,max_rate=$HYDRATE_RATE" || die "mount failed"
"$CBFS" hydrate "$MNT" --wait >"$W/log/hydrate.out" 2>&1 &
R+=("$(watch $! "$HYDRATE_RATE" "hydration (overlay growth)" "$W/ov/data")")
"$CBFS" umount "$MNT" >/dev/null

echo
echo "## rate: $(date -u +%Y-%m-%d), $(nproc) cores, SCALE=$SCALE"
echo "| command | --max-rate | reading for | whole run | slowest 10 s window | fastest 10 s window | windows |"
echo "|---|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${R[@]}"
