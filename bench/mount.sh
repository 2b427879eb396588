#!/usr/bin/env bash
# bench/mount.sh - time to first query and read speed of mount.cbfs, side by
# side with pgBackRest restore + start and with a local copy (issue 3, item 6).
# Not a test: it prints figures to record in RESULTS.md.
#
#   sudo bench/mount.sh                      # scales 50 and 500
#   sudo SCALES="50" bench/mount.sh          # a quick run
#
# For each scale: a cluster (initdb -k) with pgbench -i -s SCALE plus
# RND_MB of random (incompressible) bytes, backed up by cbfs and by
# pgBackRest (zstd level 3, process-max JOBS).  Then, with the page cache
# dropped before each timed step:
#   - mount.cbfs + pg_ctl start + the first query answered (and promoted);
#   - pgbackrest restore (--type=immediate) + pg_ctl start + first query;
#   - pgbench -S for PGBENCH_S seconds on the mount, cold then warm, and on
#     the pgBackRest-restored local copy, warm;
#   - sequential read (dd) of the largest 1 GB relation segment through a
#     fresh mount, cold and warm;
#   - the mount daemon's peak RSS (VmHWM).
#
#   (warm: after every relation file was read once, through the mount or
#   locally, so both have their data in the page cache)
# Environment: SCALES ("50 500"), JOBS (2), RND_MB (500), PGBENCH_S (20),
# CACHE_SIZE (128M, the mount's memory cache), BENCH_DIR (bench/work-mount).
set -euo pipefail

SCALES=${SCALES:-50 500}
JOBS=${JOBS:-2}
RND_MB=${RND_MB:-500}
PGBENCH_S=${PGBENCH_S:-20}
CACHE_SIZE=${CACHE_SIZE:-128M}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$HERE")
W=${BENCH_DIR:-$HERE/work-mount}
PGBIN=/usr/lib/postgresql/15/bin

die() { echo "mount.sh: $*" >&2; exit 1; }
note() { printf '== %s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[[ $(id -u) -eq 0 ]] || die "must run as root"
command -v pgbackrest >/dev/null || { apt-get update -qq && apt-get install -y -qq pgbackrest >/dev/null; }

case $W in /|"") die "refusing work directory \"$W\"" ;; esac
rm -rf "$W"
mkdir -p "$W"/{bin,sock,log}
chmod 755 "$W" "$W/bin"
chown postgres: "$W/sock" "$W/log"
install -m 755 "$TOP/build/cli/cbfs" "$W/bin/cbfs"
install -m 755 "$TOP/build/cli/mount.cbfs" "$W/bin/mount.cbfs"
CBFS=$W/bin/cbfs
MOUNT=$W/bin/mount.cbfs
export CBFS_CACHE_DIR=$W/cache

STARTED=()   # data directories with a server of ours
MOUNTS=()
cleanup() {
    local d
    for d in "${STARTED[@]}"; do
        [[ -f $d/postmaster.pid ]] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    done
    for d in "${MOUNTS[@]}"; do
        mountpoint -q "$d" && { "$CBFS" umount "$d" 2>/dev/null || umount -l "$d"; }
    done
    [[ ${KEEP_WORK:-0} = 1 ]] || rm -rf "$W"
}
trap cleanup EXIT

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        [[ -e $W/sock/.s.PGSQL.$p ]] && continue
        echo "$p"; return
    done
}
pgctl() { runuser -u postgres -- "$PGBIN/pg_ctl" "$@"; }
q() { runuser -u postgres -- "$PGBIN/psql" -X -At -h "$W/sock" -p "$1" -d postgres -c "$2"; }
start() { # DIR PORT
    pgctl -D "$1" -l "$W/log/$(basename "$1").log" -o "-p $2 -k $W/sock -c listen_addresses=''" start >/dev/null
    STARTED+=("$1")
}
stop() { pgctl -D "$1" -m fast -w stop >/dev/null; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# wait_query PORT: until a query is answered; then until promoted
wait_query() {
    local i
    for ((i = 0; i < 6000; i++)); do
        q "$1" "select count(*) from pgbench_branches" >/dev/null 2>&1 && return 0
        sleep 0.01
    done
    return 1
}
wait_promoted() {
    local i
    for ((i = 0; i < 6000; i++)); do
        [[ $(q "$1" "select pg_is_in_recovery()" 2>/dev/null) == f ]] && return 0
        sleep 0.01
    done
    return 1
}
tps() { runuser -u postgres -- "$PGBIN/pgbench" -h "$W/sock" -p "$1" -n -S -c 4 -j 2 -T "$PGBENCH_S" postgres 2>&1 | awk '/^tps/ {print $3}'; }

results=()
for SCALE in $SCALES; do
    S=$W/s$SCALE
    mkdir -p "$S"; chown postgres: "$S"
    PG=$S/pg REPO=$S/repo-cbfs PBR=$S/repo-pgbr
    note "scale $SCALE: initdb, pgbench -i, ${RND_MB} MB random"
    runuser -u postgres -- "$PGBIN/initdb" -k -A trust -U postgres -D "$PG" >/dev/null
    mkdir -p "$PBR"; chown postgres: "$PBR"
    cat >"$S/pgbackrest.conf" <<CONF
[global]
repo1-path=$PBR
compress-type=zst
compress-level=3
process-max=$JOBS
start-fast=y
archive-timeout=900
log-level-console=warn
log-path=$S
lock-path=$S
spool-path=$S
[bench]
pg1-path=$PG
pg1-socket-path=$W/sock
pg1-user=postgres
CONF
    chown postgres: "$S/pgbackrest.conf"
    runuser -u postgres -- "$CBFS" init "$REPO" >/dev/null
    PORT=$(free_port)
    cat >>"$PG/postgresql.conf" <<CONF
port = $PORT
archive_mode = on
archive_command = 'CBFS_CACHE_DIR=$S/pgcache $CBFS wal-push $REPO %p && pgbackrest --config=$S/pgbackrest.conf --stanza=bench archive-push %p'
max_wal_size = 4GB
CONF
    pgctl -D "$PG" -l "$W/log/src-$SCALE.log" -w -o "-k $W/sock -c listen_addresses=''" start >/dev/null
    STARTED+=("$PG")
    sed -i "s/^pg1-socket-path.*/&\npg1-port=$PORT/" "$S/pgbackrest.conf"
    runuser -u postgres -- pgbackrest --config="$S/pgbackrest.conf" --stanza=bench stanza-create >/dev/null
    runuser -u postgres -- "$PGBIN/pgbench" -h "$W/sock" -p "$PORT" -i -q -s "$SCALE" postgres >/dev/null 2>&1
    q "$PORT" "create extension if not exists pgcrypto;
        create table rnd (id int, b bytea); alter table rnd alter column b set storage external;
        insert into rnd select g, gen_random_bytes(1000) from generate_series(1, $RND_MB * 1000) g;
        checkpoint" >/dev/null
    # let the archiver work off the load's WAL first: backups wait for it otherwise
    seg=$(q "$PORT" "select pg_walfile_name(pg_switch_wal())")
    for ((i = 0; i < 3600; i++)); do
        [[ $(q "$PORT" "select coalesce(last_archived_wal, '') >= '$seg' from pg_stat_archiver") == t ]] && break
        sleep 1
    done
    note "scale $SCALE: backups (cbfs, pgBackRest)"
    "$CBFS" backup "$REPO" --pgdata "$PG" --dbname "host=$W/sock port=$PORT user=postgres dbname=postgres" --jobs "$JOBS" --label bench >/dev/null 2>&1
    runuser -u postgres -- pgbackrest --config="$S/pgbackrest.conf" --stanza=bench --type=full backup >/dev/null
    stop "$PG"
    DBSIZE=$(du -sb "$PG" | cut -f1)

    # -- mount to first query
    MNT=$S/mnt; mkdir -p "$MNT"; MOUNTS+=("$MNT")
    MPORT=$(free_port)
    drop_caches
    t0=$(now)
    "$MOUNT" "$REPO@bench" "$MNT" -o "uid=postgres,gid=postgres,cache_size=$CACHE_SIZE"
    t_mounted=$(now)
    start "$MNT" "$MPORT"
    wait_query "$MPORT" || die "no query answered on the mount"
    t_query=$(now)
    wait_promoted "$MPORT" || die "the mount did not promote"
    t_prom=$(now)
    note "scale $SCALE: mount $(elapsed "$t0" "$t_mounted") s, first query $(elapsed "$t0" "$t_query") s, promoted $(elapsed "$t0" "$t_prom") s"
    DPID=$(pgrep -f "mount.cbfs $REPO@bench $MNT" | head -1)
    m_cold=$(tps "$MPORT")
    # warm = the data in the page cache, as the local copy has it after its
    # restore wrote it: read every file once through the mount
    tw0=$(now)
    find "$MNT/base" "$MNT/global" -type f -exec cat {} + >/dev/null
    tw1=$(now)
    note "scale $SCALE: read every relation through the mount in $(elapsed "$tw0" "$tw1") s"
    m_warm=$(tps "$MPORT")
    rss0=$(awk '/VmHWM/ {print $2}' "/proc/$DPID/status" 2>/dev/null || echo 0)
    stop "$MNT"

    # -- pgBackRest restore + start to first query
    RST=$S/restore-pgbr; mkdir -p "$RST"; chown postgres: "$RST"; chmod 700 "$RST"
    RPORT=$(free_port)
    drop_caches
    t1=$(now)
    runuser -u postgres -- pgbackrest --config="$S/pgbackrest.conf" --stanza=bench --pg1-path="$RST" \
        --type=immediate --target-action=promote restore >/dev/null
    t_restored=$(now)
    sed -i "/^port = /d; /^archive_/d" "$RST/postgresql.conf"
    start "$RST" "$RPORT"
    wait_query "$RPORT" || die "no query answered on the pgBackRest copy"
    t1_query=$(now)
    wait_promoted "$RPORT" || true
    note "scale $SCALE: pgbackrest restore $(elapsed "$t1" "$t_restored") s, first query $(elapsed "$t1" "$t1_query") s"
    find "$RST/base" "$RST/global" -type f -exec cat {} + >/dev/null
    l_tps=$(tps "$RPORT")
    stop "$RST"

    # -- sequential read of the largest relation segment through a fresh mount
    "$CBFS" umount "$MNT"; sleep 1
    "$MOUNT" "$REPO@bench" "$MNT" -o "cache_size=$CACHE_SIZE"
    # the largest relation segment (awk reads all its input: no SIGPIPE under pipefail)
    SEG=$(cd "$MNT" && find base -type f -printf '%s %p\n' |
        awk '$1 > max { max = $1; p = $2 } END { print p }')
    SEGSIZE=$(stat -c %s "$MNT/$SEG")
    drop_caches
    t2=$(now); dd if="$MNT/$SEG" of=/dev/null bs=1M status=none; t3=$(now)
    dd if="$MNT/$SEG" of=/dev/null bs=1M status=none; t4=$(now)
    cold=$(awk -v s="$SEGSIZE" -v a="$t2" -v b="$t3" 'BEGIN { printf "%.0f", s / (b - a) / 1e6 }')
    warm=$(awk -v s="$SEGSIZE" -v a="$t3" -v b="$t4" 'BEGIN { printf "%.0f", s / (b - a) / 1e6 }')
    DPID2=$(pgrep -f "mount.cbfs $REPO@bench $MNT" | head -1)
    rss1=$(awk '/VmHWM/ {print $2}' "/proc/$DPID2/status" 2>/dev/null || echo 0)
    ((rss0 > rss1)) && rss1=$rss0
    "$CBFS" umount "$MNT"
    results+=("$(printf '%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s' "$SCALE" "$DBSIZE" \
        "$(elapsed "$t0" "$t_mounted")" "$(elapsed "$t0" "$t_query")" "$(elapsed "$t0" "$t_prom")" \
        "$(elapsed "$t1" "$t_restored")" "$(elapsed "$t1" "$t1_query")" \
        "$m_cold" "$m_warm" "$l_tps" "$SEGSIZE" "$cold" "$warm" "$rss1")")
    note "scale $SCALE: select-only tps cold $m_cold warm $m_warm local $l_tps; seq read cold $cold MB/s warm $warm MB/s ($SEGSIZE bytes); daemon peak RSS $rss1 kB; db $DBSIZE bytes"
    rm -rf "$RST" "$PG"
done

printf '\n%-6s %8s | %-26s | %-22s | %-26s | %-20s | %s\n' scale "db GB" \
    "mount: mounted/query/prom s" "pgbackrest: restore/query s" "select-only tps: cold/warm/local" \
    "seq read MB/s cold/warm" "daemon peak RSS MB"
for r in "${results[@]}"; do
    IFS='|' read -r sc db mt mq mp pr pq mc mw lt ss cold warm rss <<<"$r"
    printf '%-6s %8.1f | %6s %6s %6s        | %7s %7s        | %8s %8s %8s     | %6s %6s          | %.0f (seg %.0f MB)\n' \
        "$sc" "$(awk -v b="$db" 'BEGIN{print b/1e9}')" "$mt" "$mq" "$mp" "$pr" "$pq" "$mc" "$mw" "$lt" \
        "$cold" "$warm" "$(awk -v k="$rss" 'BEGIN{print k/1024}')" "$(awk -v s="$ss" 'BEGIN{print s/1e6}')"
done
