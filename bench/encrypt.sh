#!/usr/bin/env bash
# bench/encrypt.sh - what encryption at rest costs (issue 7, item 5):
# backup throughput and mount time-to-first-query of one cluster, into an
# unencrypted and an encrypted repository, alternating, RUNS times each.
# Not a test: it prints figures to record in RESULTS.md.
#
#   sudo bench/encrypt.sh                 # SCALE=50 RUNS=3
#
# The cluster: initdb -k, pgbench -i -s SCALE plus RND_MB of random bytes
# (incompressible), VACUUM FREEZE, CHECKPOINT.  Each backup goes into a
# fresh repository (a full backup: every block compressed, hashed and, when
# encrypted, sealed), with an empty dedup cache and the page cache dropped.
# Time to first query: mount.cbfs of that backup + pg_ctl start + the first
# answer of "select count(*) from pgbench_branches", page cache dropped;
# once with the key caches of root and postgres empty (scrypt is paid: the
# first command of the day) and WARM times right after (within
# CBFS_KEY_CACHE_TTL of an earlier command).  The backup is measured both
# ways too: with the key caches empty (scrypt in the time) and warm (the
# cost per byte alone).
# Targets: encryption costs <= 15% backup throughput, <= 10% time to first
# query.
set -euo pipefail

SCALE=${SCALE:-50}
RND_MB=${RND_MB:-300}
RUNS=${RUNS:-3}
WARM=${WARM:-5} # warm time-to-first-query measurements per run and mode
JOBS=${JOBS:-2}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$HERE")
W=${BENCH_DIR:-/var/tmp/cbfs-bench-encrypt}
PGBIN=/usr/lib/postgresql/15/bin
export CBFS_PASSPHRASE=bench-passphrase-not-secret

die() { echo "encrypt.sh: $*" >&2; exit 1; }
note() { printf '== %s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[[ $(id -u) -eq 0 ]] || die "must run as root"
case $W in /|"") die "refusing work directory \"$W\"" ;; esac
rm -rf "$W"
mkdir -p "$W"/{bin,sock}
chmod 755 "$W" "$W/bin"
chown postgres: "$W/sock"
install -m 755 "$TOP/build/cli/cbfs" "$W/bin/cbfs"
install -m 755 "$TOP/build/cli/mount.cbfs" "$W/bin/mount.cbfs"
CBFS=$W/bin/cbfs
MOUNT=$W/bin/mount.cbfs
note "cbfs $(sha256sum "$CBFS" | cut -c1-16)"

PG=$W/pg
PORT=$((25000 + RANDOM % 5000))
MNT=$W/mnt
PORT2=$((PORT + 1))
cleanup() {
    [[ -f $W/sock/m.log ]] && tail -n 15 "$W/sock/m.log" >&2
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$MNT" -m immediate -w stop >/dev/null 2>&1 || true
    mountpoint -q "$MNT" 2>/dev/null && { "$CBFS" umount "$MNT" >/dev/null 2>&1 || umount -l "$MNT"; }
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$W"
}
trap cleanup EXIT

mkdir -p "$PG" "$MNT"
chown postgres: "$PG"
runuser -u postgres -- "$PGBIN/initdb" -k -D "$PG" >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG" -l "$W/sock/pg.log" -w \
    -o "-p $PORT -k $W/sock -c listen_addresses=''" start >/dev/null
psql() { runuser -u postgres -- "$PGBIN/psql" -X -q -At -h "$W/sock" -p "$1" -d postgres -c "$2"; }
runuser -u postgres -- "$PGBIN/pgbench" -h "$W/sock" -p "$PORT" -i -s "$SCALE" -q postgres >/dev/null 2>&1
psql "$PORT" "create extension pgcrypto; create table rnd (g int, b bytea); alter table rnd alter b set storage external;
    insert into rnd select g, gen_random_bytes(1000) from generate_series(1, $RND_MB * 1000) g"
psql "$PORT" "vacuum (freeze, analyze)"
psql "$PORT" "checkpoint"
DBSIZE=$(psql "$PORT" "select pg_database_size('postgres')")
note "database: $DBSIZE bytes"

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }

# ttfq: seconds from mount.cbfs of $R@b to the first answer through it
ttfq() {
    local t2 t3
    drop_caches
    t2=$(now)
    "$MOUNT" "$R@b" "$MNT" -o uid=postgres,gid=postgres >/dev/null
    runuser -u postgres -- env CBFS_PASSPHRASE="$CBFS_PASSPHRASE" "$PGBIN/pg_ctl" -D "$MNT" -l "$W/sock/m.log" -w \
        -o "-p $PORT2 -k $W/sock -c listen_addresses='' -c archive_mode=off" start >/dev/null
    until psql "$PORT2" "select count(*) from pgbench_branches" >/dev/null 2>&1; do sleep 0.02; done
    t3=$(now)
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$MNT" -m fast -w stop >/dev/null
    "$CBFS" umount "$MNT" >/dev/null
    echo "$t3 - $t2" | bc -l
}
# forget: empty the key caches of root and postgres (the first command of
# the day: scrypt is paid)
forget() {
    "$CBFS" key forget >/dev/null
    runuser -u postgres -- "$CBFS" key forget >/dev/null
}

# backup_into R: a full backup into the fresh repository R: "seconds MB/s"
backup_into() {
    local t0 t1 read_b bt
    drop_caches
    t0=$(now)
    "$CBFS" backup "$1" --pgdata "$PG" --dbname "host=$W/sock port=$PORT user=postgres" \
        --label b --jobs "$JOBS" >/dev/null 2>&1
    t1=$(now)
    read_b=$("$CBFS" info "$1@b" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["logical_size"])')
    bt=$(echo "$t1 - $t0" | bc -l)
    echo "$bt $(echo "$read_b / $bt / 1000000" | bc -l)"
}
# fresh R MODE: an empty repository R (owned by postgres, who runs the
# mounted server's restore_command), with an empty dedup cache
fresh() {
    local enc=
    rm -rf "$1" "$W/cache"
    mkdir -p "$1" && chown postgres: "$1"
    [[ $2 == encrypted ]] && enc=--encrypt
    runuser -u postgres -- env CBFS_PASSPHRASE="$CBFS_PASSPHRASE" "$CBFS" init "$1" $enc >/dev/null
}
export CBFS_CACHE_DIR=$W/cache

for run in $(seq 1 "$RUNS"); do
    for mode in plain encrypted; do
        # a backup with root's key cache warm (an earlier command within
        # CBFS_KEY_CACHE_TTL): the cost per byte alone
        R=$W/repo-$mode-warm
        fresh "$R" "$mode"
        "$CBFS" list "$R" >/dev/null 2>&1 || true
        read -r bw mbw < <(backup_into "$R")
        rm -rf "$R"
        # with the key caches empty: scrypt is paid once
        R=$W/repo-$mode
        fresh "$R" "$mode"
        forget
        read -r bt mbps < <(backup_into "$R")
        # time to first query: with the key caches empty, then warm
        forget
        cold=$(ttfq)
        warm=()
        for _ in $(seq 1 "$WARM"); do warm+=("$(ttfq)"); done
        med=$(printf '%s\n' "${warm[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
        printf 'run %d %-9s backup: key cache empty %5.2f s %6.1f MB/s, warm %5.2f s %6.1f MB/s  stored %s  first query: key cache empty %5.2f s, warm median %5.2f s (%s)\n' \
            "$run" "$mode" "$bt" "$mbps" "$bw" "$mbw" "$(du -sh "$R" | cut -f1)" "$cold" "$med" \
            "$(printf '%.2f ' "${warm[@]}")"
    done
done
