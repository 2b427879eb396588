#!/usr/bin/env bash
# bench/wal.sh - WAL archiving speed (issue 4, item 6).  Not a test: it
# prints figures to record in RESULTS.md.
#
#   sudo bench/wal.sh                 # SEGMENTS=200
#
# 1. A cluster is backed up with cbfs, then writes (pgbench -i) until it has
#    produced SEGMENTS new 16 MB segments, archived by cbfs wal-push; a
#    restore point "bench_end" marks the end.  The segments are also copied
#    aside (real WAL, for the push/fetch timings).
# 2. Push, one call per segment in order as the archiver does (per-call
#    latency and segments per second), into fresh repositories:
#      cp (no fsync), cp + sync, cbfs wal-push (sequential: no archive_status),
#      cbfs wal-push with archive_status .ready files (its parallel push),
#      pgbackrest archive-push (sync), pgbackrest archive-push (archive-async,
#      process-max 4).
# 3. Fetch, one call per segment in order as recovery does:
#      cp, cbfs wal-fetch (with its prefetch), pgbackrest archive-get (sync
#      and archive-async).
# 4. Replay: the backup plus the SEGMENTS segments up to bench_end, once
#    through a mount (restore_command cbfs wal-fetch) and once from a
#    local copy with the segments already in pg_wal; PostgreSQL's own
#    "redo done ... elapsed" figure is compared.
set -euo pipefail

SEGMENTS=${SEGMENTS:-200}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$HERE")
W=${BENCH_DIR:-$HERE/work-wal}
PGBIN=/usr/lib/postgresql/15/bin
die() { echo "wal.sh: $*" >&2; exit 1; }
note() { printf '== %s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[[ $(id -u) -eq 0 ]] || die "must run as root"
command -v pgbackrest >/dev/null || { apt-get update -qq && apt-get install -y -qq pgbackrest >/dev/null; }

case $W in /|"") die "refusing work directory \"$W\"" ;; esac
rm -rf "$W"
mkdir -p "$W"/{bin,sock,log,segs}
chmod 755 "$W" "$W/bin"
chown postgres: "$W" "$W/sock" "$W/log" "$W/segs"
install -m 755 "$TOP/build/cli/cbfs" "$W/bin/cbfs"
install -m 755 "$TOP/build/cli/mount.cbfs" "$W/bin/mount.cbfs"
CBFS=$W/bin/cbfs
export CBFS_CACHE_DIR=$W/cache
STARTED=()
MNT=$W/mnt
cleanup() {
    local d
    for d in "${STARTED[@]}"; do
        [[ -f $d/postmaster.pid ]] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    done
    mountpoint -q "$MNT" && { "$CBFS" umount "$MNT" 2>/dev/null || umount -l "$MNT"; }
    [[ ${KEEP_WORK:-0} = 1 ]] || rm -rf "$W"
}
trap cleanup EXIT
as_pg() { runuser -u postgres -- env CBFS_CACHE_DIR="$W/cache-pg" "$@"; }
q() { as_pg "$PGBIN/psql" -X -At -h "$W/sock" -p "$1" -d postgres -c "$2"; }
now() { date +%s.%N; }
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        echo "$p"; return
    done
}
start() { # DIR PORT
    as_pg "$PGBIN/pg_ctl" -D "$1" -l "$W/log/$(basename "$1").log" -w -t 600 \
        -o "-p $2 -k $W/sock -c listen_addresses=''" start >/dev/null
    STARTED+=("$1")
}
wait_promoted() {
    local i
    for ((i = 0; i < 6000; i++)); do
        [[ $(q "$1" "select pg_is_in_recovery()" 2>/dev/null) == f ]] && return 0
        sleep 0.1
    done
    return 1
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# ---- 1. real WAL -----------------------------------------------------------
PG=$W/pg
REPO=$W/repo
as_pg "$PGBIN/initdb" -k -A trust -U postgres -D "$PG" >/dev/null
as_pg "$CBFS" init "$REPO" >/dev/null
PORT=$(free_port)
cat >>"$PG/postgresql.conf" <<CONF
archive_mode = on
archive_command = '$CBFS wal-push $REPO %p'
max_wal_size = 8GB
wal_keep_size = 8GB
CONF
start "$PG" "$PORT"
"$CBFS" backup "$REPO" --pgdata "$PG" --dbname "host=$W/sock port=$PORT user=postgres" --label base >/dev/null 2>&1
first=$(q "$PORT" "select pg_walfile_name(pg_current_wal_lsn())")
note "generating $SEGMENTS segments of WAL"
scale=$((SEGMENTS * 7 / 10 + 1)) # pgbench -i writes about 1.4 segments per scale unit
while :; do
    as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$PORT" -i -q -s "$scale" postgres >/dev/null 2>&1
    cur=$(q "$PORT" "select pg_walfile_name(pg_current_wal_lsn())")
    n=$(( 16#${cur:16:8} - 16#${first:16:8} + (16#${cur:8:8} - 16#${first:8:8}) * 256 ))
    ((n > SEGMENTS)) && break
done
as_pg "$CBFS" restore-point "$REPO" bench_end --dbname "host=$W/sock port=$PORT user=postgres" --wait 600 >/dev/null
# the SEGMENTS complete segments after the first, copied aside
mapfile -t SEGS < <(ls "$PG/pg_wal" | grep -E '^[0-9A-F]{24}$' | awk -v f="$first" '$0 > f' | head -n "$SEGMENTS")
((${#SEGS[@]} == SEGMENTS)) || die "only ${#SEGS[@]} segments in pg_wal"
for s in "${SEGS[@]}"; do cp "$PG/pg_wal/$s" "$W/segs/$s"; done
chown postgres: "$W"/segs/*
as_pg "$PGBIN/pg_ctl" -D "$PG" -m fast -w stop >/dev/null

# ---- 2. push ---------------------------------------------------------------
declare -A PUSH FETCH
# time_calls NAME CMD...: runs CMD with {} replaced by each segment, in
# order; records total seconds and per-call p50/p99 in ms
time_calls() {
    local name=$1 t0 t1 s a b
    shift
    local -a lat=()
    t0=$(now)
    for s in "${SEGS[@]}"; do
        a=$(now)
        "${@//\{\}/$s}" >/dev/null 2>&1 || die "$name failed on $s"
        b=$(now)
        lat+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", (b - a) * 1000 }')")
    done
    t1=$(now)
    printf '%s %s %s\n' "$(awk -v a="$t0" -v b="$t1" -v n="${#SEGS[@]}" 'BEGIN { printf "%.2f %.1f", b - a, n / (b - a) }')" \
        "$(printf '%s\n' "${lat[@]}" | sort -n | awk '{ v[NR] = $1 } END { printf "%s %s", v[int(NR * 0.5)], v[int(NR * 0.99)] }')" ""
}
mkdir -p "$W/cp" "$W/cps"
chown postgres: "$W/cp" "$W/cps"
PBR=$W/pgbr
mkdir -p "$PBR"/{repo,spool,log,lock}
chown -R postgres: "$PBR"
pbr_conf() { # FILE ASYNC
    cat >"$1" <<CONF
[global]
repo1-path=$PBR/repo
compress-type=zst
compress-level=3
log-level-console=warn
log-path=$PBR/log
lock-path=$PBR/lock
spool-path=$PBR/spool
archive-async=$2
process-max=4
[bench]
pg1-path=$PG
CONF
    chown postgres: "$1"
}
pbr_conf "$PBR/sync.conf" n
pbr_conf "$PBR/async.conf" y
as_pg pgbackrest --config="$PBR/sync.conf" --stanza=bench --no-online stanza-create >/dev/null

# a pg_wal lookalike so cbfs sees archive_status, as under the archiver
ST=$W/stage
mkdir -p "$ST/archive_status"
for s in "${SEGS[@]}"; do ln "$W/segs/$s" "$ST/$s"; touch "$ST/archive_status/$s.ready"; done
chown -R postgres: "$ST"
cbfs_push_ready() { # SEG: push like the archiver, then mark it done
    as_pg "$CBFS" wal-push "$W/repo-p2" "$ST/$1" && mv "$ST/archive_status/$1.ready" "$ST/archive_status/$1.done"
}
as_pg "$CBFS" init "$W/repo-p1" >/dev/null
as_pg "$CBFS" init "$W/repo-p2" >/dev/null

drop_caches; note "push: cp";                  PUSH[cp]=$(time_calls cp as_pg cp "$W/segs/{}" "$W/cp/{}")
drop_caches; note "push: cp + sync";           PUSH[cp_sync]=$(time_calls cps as_pg sh -c "cp '$W/segs/{}' '$W/cps/{}' && sync '$W/cps/{}'")
drop_caches; note "push: cbfs wal-push";       PUSH[cbfs]=$(time_calls cbfs as_pg "$CBFS" wal-push "$W/repo-p1" "$W/segs/{}")
drop_caches; note "push: cbfs wal-push, archive_status"; PUSH[cbfs_ready]=$(time_calls cbfsr cbfs_push_ready {})
drop_caches; note "push: pgbackrest";          PUSH[pgbackrest]=$(time_calls pbr as_pg pgbackrest --config="$PBR/sync.conf" --stanza=bench archive-push "$W/segs/{}")

# pgBackRest async needs its own repository and reads PG1/pg_wal/archive_status:
# a data directory lookalike whose pg_wal is the staging folder
rm -rf "$PBR/repo"/* "$PBR/spool"/*
FAKE=$W/fakepg
mkdir -p "$FAKE/global"
cp "$PG/global/pg_control" "$FAKE/global/"
cp "$PG/PG_VERSION" "$FAKE/"
ln -s "$ST" "$FAKE/pg_wal"
chown -R postgres: "$FAKE"
sed -i "s|^pg1-path=.*|pg1-path=$FAKE|" "$PBR/async.conf"
as_pg pgbackrest --config="$PBR/async.conf" --stanza=bench --no-online stanza-create >/dev/null
rm -f "$ST"/archive_status/*.done
for s in "${SEGS[@]}"; do touch "$ST/archive_status/$s.ready"; done
chown -R postgres: "$ST"
pbr_push_ready() {
    as_pg pgbackrest --config="$PBR/async.conf" --stanza=bench archive-push "$FAKE/pg_wal/$1" &&
        mv "$ST/archive_status/$1.ready" "$ST/archive_status/$1.done"
}
drop_caches; note "push: pgbackrest async";    PUSH[pgbackrest_async]=$(time_calls pbra pbr_push_ready {})

# ---- 3. fetch --------------------------------------------------------------
mkdir -p "$W/f/pg_wal"
chown -R postgres: "$W/f"
drop_caches; note "fetch: cp";                 FETCH[cp]=$(time_calls fcp as_pg cp "$W/cp/{}" "$W/f/pg_wal/RECOVERYXLOG")
drop_caches; note "fetch: cbfs wal-fetch";     FETCH[cbfs]=$(time_calls fcbfs as_pg "$CBFS" wal-fetch "$W/repo-p1" {} "$W/f/pg_wal/RECOVERYXLOG")
rm -rf "$W/f/pg_wal/cbfs-prefetch"
drop_caches; note "fetch: pgbackrest";         FETCH[pgbackrest]=$(time_calls fpbr as_pg pgbackrest --config="$PBR/sync.conf" --stanza=bench archive-get {} "$W/f/pg_wal/RECOVERYXLOG")
mkdir -p "$W/f2/pg_wal" "$W/f2/global"
cp "$PG/global/pg_control" "$W/f2/global/"
cp "$PG/PG_VERSION" "$W/f2/"
chown -R postgres: "$W/f2"
cat >"$PBR/async-get.conf" <<CONF
[global]
repo1-path=$PBR/repo
log-level-console=warn
log-path=$PBR/log
lock-path=$PBR/lock
spool-path=$PBR/spool
archive-async=y
archive-get-queue-max=256MB
process-max=4
[bench]
pg1-path=$W/f2
CONF
chown postgres: "$PBR/async-get.conf"
drop_caches; note "fetch: pgbackrest async";   FETCH[pgbackrest_async]=$(time_calls fpbra as_pg pgbackrest --config="$PBR/async-get.conf" --stanza=bench archive-get {} "$W/f2/pg_wal/RECOVERYXLOG")

# ---- 4. replay -------------------------------------------------------------
redo() { sed -n 's/.*redo done at .* elapsed: \([0-9.]*\) s.*/\1/p' "$1" | tail -n 1; }
mkdir -p "$MNT"
drop_caches
note "replay: through the mount"
"$W/bin/mount.cbfs" "$REPO@bench_end" "$MNT" -o uid=postgres,gid=postgres
MPORT=$(free_port)
t0=$(now); start "$MNT" "$MPORT"; wait_promoted "$MPORT"; t1=$(now)
as_pg "$PGBIN/pg_ctl" -D "$MNT" -m fast -w stop >/dev/null
"$CBFS" umount "$MNT"
MOUNT_REDO=$(redo "$W/log/mnt.log")
MOUNT_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')

note "replay: local copy, WAL already in pg_wal"
LOCAL=$W/local
"$CBFS" restore "$REPO@bench_end" "$LOCAL" >/dev/null
chown -R postgres: "$LOCAL"
# every segment the recovery needs, already local; no restore_command
"$CBFS" info "$REPO@base" >/dev/null
for s in $(ls "$REPO/wal/00000001" | grep -E '^[0-9A-F]{24}$'); do
    as_pg "$CBFS" wal-fetch "$REPO" "$s" "$LOCAL/pg_wal/$s"
done
rm -rf "$LOCAL/pg_wal/cbfs-prefetch"
sed -i "s/^restore_command = .*/restore_command = 'false'/" "$LOCAL/postgresql.auto.conf"
drop_caches
LPORT=$(free_port)
t0=$(now); start "$LOCAL" "$LPORT"; wait_promoted "$LPORT"; t1=$(now)
LOCAL_REDO=$(redo "$W/log/local.log")
LOCAL_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
as_pg "$PGBIN/pg_ctl" -D "$LOCAL" -m fast -w stop >/dev/null

printf '\n%d segments of 16 MB (real WAL from pgbench -i)\n\n' "$SEGMENTS"
printf '%-34s %10s %10s %12s %12s\n' "push (one call per segment)" "total s" "segs/s" "p50 ms" "p99 ms"
for k in cp cp_sync cbfs cbfs_ready pgbackrest pgbackrest_async; do
    printf '%-34s %10s %10s %12s %12s\n' "$k" ${PUSH[$k]}
done
printf '\n%-34s %10s %10s %12s %12s\n' "fetch (one call per segment)" "total s" "segs/s" "p50 ms" "p99 ms"
for k in cp cbfs pgbackrest pgbackrest_async; do
    printf '%-34s %10s %10s %12s %12s\n' "$k" ${FETCH[$k]}
done
printf '\nreplay of the backup + %d segments: redo elapsed (PostgreSQL) / start to promoted (wall)\n' "$SEGMENTS"
printf '  through the mount (cbfs wal-fetch): %s s / %s s\n' "$MOUNT_REDO" "$MOUNT_WALL"
printf '  local copy, WAL in pg_wal:          %s s / %s s\n' "$LOCAL_REDO" "$LOCAL_WALL"
awk -v m="$MOUNT_REDO" -v l="$LOCAL_REDO" 'BEGIN { if (m > 0) printf "  mount replay speed = %.0f%% of local\n", 100 * l / m }'
