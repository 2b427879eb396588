#!/usr/bin/env bash
# bench/backup.sh - cbfs against pgBackRest on one PostgreSQL 15 cluster
# (issue 2, item 7).  Not a test: it prints figures to record in RESULTS.md.
#
#   sudo SCALE=100 JOBS=2 bench/backup.sh
#
# One cluster (initdb -k) whose archive_command feeds both tools, loaded with
# pgbench -i -s $SCALE plus ~$RND_ROWS KB of random, incompressible bytes.
# For each tool: a full backup, a second backup (cbfs again, pgBackRest
# --type=incr) after a workload touching ~2% of the pages, and a restore into
# an empty directory, each timed with /usr/bin/time.  Both restored copies are
# started and checked against the source, then stopped.
#
# Environment:
#   SCALE=100        pgbench scale
#   JOBS=2           cbfs --jobs and pgBackRest process-max
#   RND_ROWS=500000  rows of 1000 random bytes (~0.5 GB on disk)
#   BENCH_DIR=...    work directory (default bench/work/, gitignored); wiped
#                    at the start, big directories removed at the end
#   KEEP_WORK=1      keep the clusters and repositories at the end
#   DROP_CACHES=1    sync and drop the page cache before each timed step
#                    (cold reads); default 0 (data and repositories warm)
#   FIRST=pgbackrest run pgBackRest's step first in each phase (default cbfs)
#   QUIET_WAIT=60    before each timed step wait up to this many seconds for
#                    the machine to be idle (it may be shared)
#   CBFS=path        cbfs binary (default build/cli/cbfs, copied into the
#                    work directory so a rebuild during the run changes nothing)
#
# Runs as root.  Exits non-zero if any step fails.
set -euo pipefail

SCALE=${SCALE:-100}
JOBS=${JOBS:-2}
RND_ROWS=${RND_ROWS:-500000}
DROP_CACHES=${DROP_CACHES:-0}
KEEP_WORK=${KEEP_WORK:-0}
FIRST=${FIRST:-cbfs}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$HERE")
W=${BENCH_DIR:-$HERE/work}
CBFS_SRC=${CBFS:-$TOP/build/cli/cbfs}
PGBIN=/usr/lib/postgresql/15/bin

die() { echo "backup.sh: $*" >&2; exit 1; }
note() { printf '== %s  %s\n' "$(date +%H:%M:%S)" "$*"; }

[[ $(id -u) -eq 0 ]] || die "must run as root"
[[ -x $CBFS_SRC ]] || die "no cbfs binary at $CBFS_SRC (ninja -C build)"
[[ -x $PGBIN/postgres ]] || die "PostgreSQL 15 is not installed ($PGBIN)"
id postgres >/dev/null 2>&1 || die "no postgres user"

# ---- tools ----------------------------------------------------------------

need=()
command -v pgbackrest >/dev/null || need+=(pgbackrest)
[[ -x /usr/bin/time ]] || need+=(time)
if ((${#need[@]})); then
    note "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

# ---- work directory and clean-up ------------------------------------------

case $W in /|"") die "refusing work directory \"$W\"" ;; esac
if [[ -e $W ]]; then
    # never wipe a directory a running cluster of ours may still use
    for d in "$W"/pg "$W"/restore-cbfs "$W"/restore-pgbr; do
        [[ -f $d/postmaster.pid ]] && kill -0 "$(head -1 "$d/postmaster.pid")" 2>/dev/null &&
            die "a server is still running on $d"
    done
    rm -rf "$W"
fi
mkdir -p "$W"/{log,sock,time}
chmod 755 "$W"
chown postgres: "$W/sock" "$W/log"

CLUSTERS=()   # data directories of servers we started
BGPIDS=()     # background helpers we started

stop_cluster() {  # DIR
    local d=$1 pid
    [[ -f $d/postmaster.pid ]] || return 0
    pid=$(head -1 "$d/postmaster.pid")
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m fast -w -t 60 stop >/dev/null 2>&1 ||
        { [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null; } || true
}

cleanup() {
    local rc=$? p d
    trap - EXIT INT TERM
    for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for d in "${CLUSTERS[@]}"; do stop_cluster "$d"; done
    if [[ $KEEP_WORK != 1 ]]; then
        rm -rf "$W"/pg "$W"/restore-cbfs "$W"/restore-pgbr "$W"/repo-cbfs "$W"/repo-pgbr \
            "$W"/cache "$W"/pgbr-spool
    fi
    ((rc == 0)) || echo "backup.sh: FAILED (exit $rc); logs in $W/log" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

CBFS=$W/cbfs
install -m 755 "$CBFS_SRC" "$CBFS"
export CBFS_CACHE_DIR=$W/cache

used_ports=" 5432 "
free_port() {  # START -> first port from START that nobody listens on
    local p=$1
    while [[ $used_ports == *" $p "* ]] || ss -Htln "sport = :$p" | grep -q .; do p=$((p + 1)); done
    used_ports+="$p "
    echo "$p"
}
PORT=$(free_port 55432)
PORT_CBFS=$(free_port $((PORT + 1)))
PORT_PGBR=$(free_port $((PORT_CBFS + 1)))

PGDATA=$W/pg
CREPO=$W/repo-cbfs
PREPO=$W/repo-pgbr
PCONF=$W/pgbackrest.conf
CONN="host=$W/sock port=$PORT user=postgres dbname=postgres"

pg() { runuser -u postgres -- "$@"; }
psqlq() { pg "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -qAt -h "$W/sock" -p "${P:-$PORT}" -d postgres "$@"; }

start_cluster() {  # DIR PORT [extra -o options]
    local d=$1 port=$2 extra=${3:-}
    CLUSTERS+=("$d")
    pg "$PGBIN/pg_ctl" -D "$d" -l "$W/log/$(basename "$d").log" -w -t 600 \
        -o "-p $port $extra" start >/dev/null ||
        { tail -20 "$W/log/$(basename "$d").log" >&2; die "cannot start the server on $d"; }
}

drop_caches() {
    [[ $DROP_CACHES == 1 ]] || return 0
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# Peak RSS summed over a process tree (pgBackRest forks process-max workers;
# GNU time reports the largest single process).  Sampled every 0.2 s.
tree_pids() { local p=$1 c; echo "$p"; for c in $(pgrep -P "$p" || true); do tree_pids "$c"; done; }
rss_sampler() {  # PID OUTFILE
    local root=$1 out=$2 peak=0 sum pids
    while kill -0 "$root" 2>/dev/null; do
        pids=$(tree_pids "$root" | paste -sd, -)
        sum=$(ps -o rss=,comm= -p "$pids" 2>/dev/null |
            awk '$2 != "time" && $2 != "runuser" { s += $1 } END { print s + 0 }' || true)
        [[ -n $sum ]] || sum=0
        ((sum > peak)) && peak=$sum
        echo "$peak" >"$out"
        sleep 0.2
    done
}

# CPU seconds the whole machine spent busy (not idle, not iowait) so far
cpu_busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit }' /proc/stat; }

# The machine may be shared: before a timed step, wait (up to QUIET_WAIT
# seconds) for a second in which less than a quarter of a core was busy.
# IDLE_BEFORE is the busy CPU seconds of the last second sampled.
wait_quiet() {
    local i a b
    for ((i = 0; i < ${QUIET_WAIT:-60}; i++)); do
        a=$(cpu_busy); sleep 1; b=$(cpu_busy)
        IDLE_BEFORE=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b - a }')
        awk -v x="$IDLE_BEFORE" 'BEGIN { exit !(x < 0.25) }' && return 0
    done
    echo "   (machine still busy: $IDLE_BEFORE CPU s/s before the next step)"
}

# CPU ticks of every live process: "pid comm ticks" lines
cpu_snapshot() {
    awk '{ l = $0; c = substr(l, index(l, "(") + 1); c = substr(c, 1, match(c, /\) [A-Za-z] /) - 1)
           r = l; sub(/.*\) /, "", r); split(r, f, " "); gsub(/ /, "_", c)
           print $1, c, f[12] + f[13], f[2] }' /proc/[0-9]*/stat 2>/dev/null || true
}
# the processes other than the timed one that used the most CPU meanwhile
# (our-postgres: the source cluster's postmaster and its children)
cpu_others() {  # SNAPSHOT_BEFORE SNAPSHOT_AFTER
    local pm
    pm=$(head -1 "$PGDATA/postmaster.pid" 2>/dev/null || echo 0)
    awk -v hz="$(getconf CLK_TCK)" -v pm="$pm" 'NR == FNR { t[$1] = $3; next }
        { c = $2; if (c ~ /^kworker/) c = "kworker"; if ($1 == pm || $4 == pm) c = "our-postgres"
          d = ($3 - t[$1]) / hz; if (d > 0) u[c] += d }
        END { for (c in u) if (u[c] >= 0.3) printf "%s %.1f\n", c, u[c] }' "$1" "$2" | sort -k2,2nr | head -4 |
        awk '{ printf "%s%s %ss", (NR > 1 ? ", " : ""), $1, $2 }'
}

# timed NAME CMD... : run CMD under /usr/bin/time; sets SECS and RSS_KB (GNU
# time: largest process) and TREE_KB (sampled sum of the process tree)
timed() {
    local name=$1 rc=0 spid
    shift
    # the sync right after a restore must follow it at once
    if [[ $name != *_sync ]]; then
        drop_caches
        wait_quiet
    fi
    local busy0
    busy0=$(cpu_busy)
    cpu_snapshot >"$W/time/$name.cpu0"
    /usr/bin/time -f '%e %M %U %S' -o "$W/time/$name" "$@" >"$W/log/$name.out" 2>"$W/log/$name.err" &
    local pid=$!
    BGPIDS+=("$pid")
    rss_sampler "$pid" "$W/time/$name.tree" &
    spid=$!
    BGPIDS+=("$spid")
    wait "$pid" || rc=$?
    wait "$spid" || true
    BGPIDS=()
    if ((rc != 0)); then
        echo "---- $name failed (exit $rc): $*" >&2
        cat "$W/log/$name.out" "$W/log/$name.err" >&2
        exit 1
    fi
    cpu_snapshot >"$W/time/$name.cpu1"
    read -r SECS RSS_KB USR SYS <"$W/time/$name"
    BUSY=$(awk -v a="$busy0" -v b="$(cpu_busy)" 'BEGIN { printf "%.1f", b - a }')
    TREE_KB=$(cat "$W/time/$name.tree" 2>/dev/null || echo 0)
    printf '   %-14s %8.2f s   RSS %6.1f MB (tree %6.1f MB)   cpu user+sys %.1f s, machine busy %s s (before: %s/s)\n' \
        "$name" "$SECS" "$(awk -v k="$RSS_KB" 'BEGIN { print k / 1024 }')" \
        "$(awk -v k="$TREE_KB" 'BEGIN { print k / 1024 }')" "$(awk -v u="$USR" -v s="$SYS" 'BEGIN { print u + s }')" \
        "$BUSY" "$IDLE_BEFORE"
    others=$(cpu_others "$W/time/$name.cpu0" "$W/time/$name.cpu1")
    [[ -z $others ]] || echo "                  other CPU meanwhile: $others"
    declare -g "T_$name=$SECS" "M_$name=$RSS_KB" "R_$name=$TREE_KB"
}

bytes() { { du -sb "$@" 2>/dev/null || true; } | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
cbfs_data() { bytes "$CREPO/packs" "$CREPO/backups"; }
cbfs_wal() { bytes "$CREPO/wal"; }
pgbr_data() { bytes "$PREPO/backup"; }
pgbr_wal() { bytes "$PREPO/archive"; }

# wait until the archiver has stored everything up to a fresh WAL switch, so
# that no backup pays for an archiving backlog left by the previous step
settle() {
    local seg i
    psqlq -c "CHECKPOINT"
    seg=$(psqlq -c "SELECT pg_walfile_name(pg_switch_wal())")
    for ((i = 0; i < 1200; i++)); do
        [[ $(psqlq -c "SELECT coalesce(last_archived_wal, '') >= '$seg' FROM pg_stat_archiver") == t ]] && break
        sleep 0.5
    done
    ((i < 1200)) || die "the archiver did not reach $seg; $(psqlq -c 'SELECT * FROM pg_stat_archiver')"
    sync
}

# run the phase's two steps, cbfs first unless FIRST=pgbackrest
both() {
    if [[ $FIRST == pgbackrest ]]; then step_pgbr; step_cbfs; else step_cbfs; step_pgbr; fi
}

# ---- the cluster ------------------------------------------------------------

note "versions: $("$PGBIN/postgres" --version); $(pgbackrest version)"
note "cbfs: $CBFS_SRC, built $(date -r "$CBFS_SRC" '+%F %T'), sha256 $(sha256sum "$CBFS_SRC" | cut -c1-16), tree $(git -C "$TOP" describe --always --dirty 2>/dev/null || echo '?')"
note "work dir $W, ports $PORT/$PORT_CBFS/$PORT_PGBR, SCALE=$SCALE JOBS=$JOBS RND_ROWS=$RND_ROWS DROP_CACHES=$DROP_CACHES FIRST=$FIRST"

mkdir -p "$PGDATA" "$CREPO" "$PREPO" "$W/pgbr-log" "$W/pgbr-lock" "$W/pgbr-spool"
chown postgres: "$PGDATA" "$CREPO" "$PREPO" "$W/pgbr-log" "$W/pgbr-lock" "$W/pgbr-spool"
chmod 700 "$PGDATA"

pg "$PGBIN/initdb" -k -U postgres -D "$PGDATA" >"$W/log/initdb.log" 2>&1

# cbfs init runs as postgres so the repository is postgres's (archive_command)
pg "$CBFS" init "$CREPO" >"$W/log/cbfs-init.log"

cat >"$PCONF" <<EOF
[global]
repo1-path=$PREPO
repo1-retention-full=10
compress-type=zst
compress-level=3
process-max=$JOBS
start-fast=y
log-path=$W/pgbr-log
lock-path=$W/pgbr-lock
spool-path=$W/pgbr-spool
log-level-console=warn
log-level-file=info

[bench]
pg1-path=$PGDATA
pg1-socket-path=$W/sock
pg1-port=$PORT
pg1-user=postgres
EOF
chmod 644 "$PCONF"
PGBR=(pgbackrest "--config=$PCONF" --stanza=bench)

cat >>"$PGDATA/postgresql.conf" <<EOF

# bench/backup.sh
listen_addresses = ''
unix_socket_directories = '$W/sock'
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
wal_level = replica
archive_mode = on
archive_command = 'CBFS_CACHE_DIR=$W/cache $CBFS wal-push $CREPO %p && pgbackrest --config=$PCONF --stanza=bench archive-push %p'
EOF

start_cluster "$PGDATA" "$PORT"
pg "${PGBR[@]}" stanza-create >"$W/log/pgbr-stanza-create.log" 2>&1 ||
    { cat "$W/log/pgbr-stanza-create.log" >&2; die "pgbackrest stanza-create failed"; }

note "loading: pgbench -i -s $SCALE"
pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$W/sock" -p "$PORT" postgres >"$W/log/pgbench-init.log" 2>&1 ||
    { cat "$W/log/pgbench-init.log" >&2; die "pgbench -i failed"; }
note "loading: $RND_ROWS rows of 1000 random bytes"
psqlq <<EOF
CREATE EXTENSION pgcrypto;
CREATE TABLE rnd (i int, b bytea);
ALTER TABLE rnd ALTER COLUMN b SET STORAGE EXTERNAL;
INSERT INTO rnd SELECT i, gen_random_bytes(1000) FROM generate_series(1, $RND_ROWS) i;
EOF
# settle hint bits and the visibility map now, not between the two backups
psqlq -c "VACUUM (FREEZE, ANALYZE)"
settle
DBSIZE=$(psqlq -c "SELECT pg_database_size('postgres')")
PGDATA_BYTES=$(bytes "$PGDATA/base" "$PGDATA/global")
note "database $(numfmt --to=iec "$DBSIZE") ($DBSIZE bytes), base+global $PGDATA_BYTES bytes"

# ---- full backups -------------------------------------------------------------

note "full backups"
c0=$(cbfs_data); cw0=$(cbfs_wal); p0=$(pgbr_data); pw0=$(pgbr_wal)
step_cbfs() { timed cbfs_full "$CBFS" backup "$CREPO" --pgdata "$PGDATA" --dbname "$CONN" --jobs "$JOBS" --label full; settle; }
step_pgbr() { timed pgbr_full runuser -u postgres -- "${PGBR[@]}" --type=full backup; settle; }
both
c1=$(cbfs_data); cw1=$(cbfs_wal); p1=$(pgbr_data); pw1=$(pgbr_wal)

# ---- ~2% of the pages change -------------------------------------------------

ROWS=$((SCALE * 100000))
NUPD=$((ROWS / 50))
note "workload: update aid <= $NUPD (2% of $ROWS, contiguous), insert 5000 rows"
psqlq <<EOF
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $NUPD;
INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
    SELECT $ROWS + i, 1, 0, '' FROM generate_series(1, 5000) i;
EOF
settle

note "second backups"
step_cbfs() { timed cbfs_incr "$CBFS" backup "$CREPO" --pgdata "$PGDATA" --dbname "$CONN" --jobs "$JOBS" --label second; settle; }
step_pgbr() { timed pgbr_incr runuser -u postgres -- "${PGBR[@]}" --type=incr backup; settle; }
both
c2=$(cbfs_data); cw2=$(cbfs_wal); p2=$(pgbr_data); pw2=$(pgbr_wal)

SRC_CHECK=$(psqlq -c "SELECT count(*) || ' ' || sum(abalance) FROM pgbench_accounts")

# ---- restores -----------------------------------------------------------------

note "restores"
RC=$W/restore-cbfs
RP=$W/restore-pgbr
mkdir -p "$RP"
chown postgres: "$RP"
chmod 700 "$RP"
step_cbfs() { timed cbfs_restore "$CBFS" restore "$CREPO" "$RC" --jobs "$JOBS"; timed cbfs_sync sync; }
step_pgbr() { timed pgbr_restore runuser -u postgres -- "${PGBR[@]}" "--pg1-path=$RP" restore; timed pgbr_sync sync; }
both

note "starting the restored copies"
start_cluster "$RC" "$PORT_CBFS" "-c archive_mode=off"
start_cluster "$RP" "$PORT_PGBR" "-c archive_mode=off"
check_copy() {  # PORT NAME
    local i got
    for ((i = 0; i < 1200; i++)); do
        [[ $(P=$1 psqlq -c "SELECT pg_is_in_recovery()") == f ]] && break
        sleep 0.5
    done
    ((i < 1200)) || die "$2: still in recovery after 600 s"
    got=$(P=$1 psqlq -c "SELECT count(*) || ' ' || sum(abalance) FROM pgbench_accounts")
    [[ $got == "$SRC_CHECK" ]] || die "$2: pgbench_accounts count/sum is \"$got\", the source has \"$SRC_CHECK\""
    echo "   $2: pgbench_accounts count, sum(abalance) = $got (matches the source)"
}
check_copy "$PORT_CBFS" cbfs
check_copy "$PORT_PGBR" pgbackrest
stop_cluster "$RC"
stop_cluster "$RP"

FAILED_ARCH=$(psqlq -c "SELECT failed_count FROM pg_stat_archiver")

# ---- report ---------------------------------------------------------------------

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b ? 100 * a / b : 0 }'; }
max() { printf '%s\n' "$@" | sort -n | tail -1; }

cfull=$((c1 - c0)); cincr=$((c2 - c1)); pfull=$((p1 - p0)); pincr=$((p2 - p1))
crss=$(max "$M_cbfs_full" "$M_cbfs_incr" "$M_cbfs_restore")
prss=$(max "$M_pgbr_full" "$M_pgbr_incr" "$M_pgbr_restore")
ctree=$(max "$R_cbfs_full" "$R_cbfs_incr" "$R_cbfs_restore")
ptree=$(max "$R_pgbr_full" "$R_pgbr_incr" "$R_pgbr_restore")

{
    echo
    echo "SCALE=$SCALE JOBS=$JOBS RND_ROWS=$RND_ROWS DROP_CACHES=$DROP_CACHES FIRST=$FIRST; database $DBSIZE bytes"
    echo "stored bytes: cbfs packs/+backups/, pgBackRest backup/ (WAL below)"
    echo
    printf '| %-10s | %13s | %17s | %13s | %17s | %11s | %9s | %18s |\n' tool "full backup s" "full stored bytes" \
        "incr backup s" "incr stored bytes" "incr/full %" "restore s" "peak RSS MB"
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------ --------------- ------------------- --------------- \
        ------------------- ------------- ----------- --------------------
    printf '| %-10s | %13s | %17s | %13s | %17s | %11s | %9s | %18s |\n' cbfs "$T_cbfs_full" "$cfull" \
        "$T_cbfs_incr" "$cincr" "$(pct $cincr $cfull)" "$T_cbfs_restore" "$(mb "$crss") (tree $(mb "$ctree"))"
    printf '| %-10s | %13s | %17s | %13s | %17s | %11s | %9s | %18s |\n' pgbackrest "$T_pgbr_full" "$pfull" \
        "$T_pgbr_incr" "$pincr" "$(pct $pincr $pfull)" "$T_pgbr_restore" "$(mb "$prss") (tree $(mb "$ptree"))"
    echo
    echo "peak RSS MB per step (GNU time, largest process / sampled sum of the process tree):"
    for s in full incr restore; do
        printf '  %-8s cbfs %7s / %7s   pgbackrest %7s / %7s\n' "$s" \
            "$(mb "$(eval echo \$M_cbfs_$s)")" "$(mb "$(eval echo \$R_cbfs_$s)")" \
            "$(mb "$(eval echo \$M_pgbr_$s)")" "$(mb "$(eval echo \$R_pgbr_$s)")"
    done
    echo "sync after restore: cbfs $T_cbfs_sync s, pgbackrest $T_pgbr_sync s"
    echo "WAL stored: cbfs wal/ $cw0 -> $cw1 -> $cw2 bytes; pgBackRest archive/ $pw0 -> $pw1 -> $pw2 bytes"
    echo "repository totals: cbfs $(bytes "$CREPO") bytes, pgBackRest $(bytes "$PREPO") bytes"
    echo "archiver failed_count: $FAILED_ARCH"
    echo
    echo "cbfs summaries:"
    sed 's/^/  full:   /' "$W/log/cbfs_full.out" "$W/log/cbfs_full.err" | grep -v '^  full:   $' || true
    sed 's/^/  second: /' "$W/log/cbfs_incr.out" "$W/log/cbfs_incr.err" | grep -v '^  second: $' || true
} | tee "$W/results.txt"

[[ $FAILED_ARCH == 0 ]] || { echo "backup.sh: archive_command failed $FAILED_ARCH times; see $W/log/pg.log" >&2; exit 1; }
note "done"
