#!/usr/bin/env bash
# bench/s3.sh - backup and mount over a loopback S3 server, side by side with
# pgBackRest's S3 repository on the same server and with cbfs's own local
# directory (issue 5, item 5).  Not a test: it prints figures to record in
# RESULTS.md.
#
#   sudo bench/s3.sh                 # SCALE=100 RND_MB=500 JOBS=2
#
# The server: OpenStack Swift with s3api (tests/s3/swift-start) behind
# stunnel, because pgBackRest 2.45 speaks S3 only over TLS.  Both tools go
# through the same TLS endpoint; cbfs verifies its self-signed certificate
# (s3_ca_file), pgBackRest is told not to (repo1-storage-verify-tls=n).
#
# One cluster (initdb -k, pgbench -i -s SCALE plus RND_MB of random bytes).
# With the page cache dropped before each timed step:
#   1. full backups: cbfs to a local directory, cbfs to S3, pgBackRest to S3
#      (zstd 3, process-max JOBS) — seconds and MB/s of database;
#   2. mount.cbfs of the S3 backup + pg_ctl start + the first query, and the
#      same from the local directory; pgBackRest restore from S3 + start +
#      first query;
#   3. sequential read (dd) of the largest relation segment through a fresh
#      mount of the S3 backup, cold, and of the local one.
# Environment: SCALE (100), RND_MB (500), JOBS (2), BENCH_DIR
# (bench/work-s3), KEEP_WORK=1 keeps it.
set -euo pipefail

SCALE=${SCALE:-100}
RND_MB=${RND_MB:-500}
JOBS=${JOBS:-2}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$HERE")
W=${BENCH_DIR:-$HERE/work-s3}
PGBIN=/usr/lib/postgresql/15/bin

die() { echo "s3.sh: $*" >&2; exit 1; }
note() { printf '== %s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[[ $(id -u) -eq 0 ]] || die "must run as root"
need=()
command -v pgbackrest >/dev/null || need+=(pgbackrest)
command -v stunnel4 >/dev/null || need+=(stunnel4)
if ((${#need[@]})); then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi

case $W in /|"") die "refusing work directory \"$W\"" ;; esac
rm -rf "$W"
mkdir -p "$W"/{bin,sock,log,tls}
chmod 755 "$W" "$W/bin"
chown postgres: "$W/sock" "$W/log"
install -m 755 "$TOP/build/cli/cbfs" "$W/bin/cbfs"
install -m 755 "$TOP/build/cli/mount.cbfs" "$W/bin/mount.cbfs"
CBFS=$W/bin/cbfs MOUNT=$W/bin/mount.cbfs
export CBFS_CACHE_DIR=$W/cache
STARTED=() MOUNTS=() STUNNEL_PID=
cleanup() {
    local d
    for d in "${STARTED[@]}"; do
        [[ -f $d/postmaster.pid ]] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    done
    for d in "${MOUNTS[@]}"; do
        mountpoint -q "$d" && { "$CBFS" umount "$d" 2>/dev/null || umount -l "$d"; }
    done
    [[ -n $STUNNEL_PID ]] && kill "$STUNNEL_PID" 2>/dev/null
    [[ -n ${S3_STATE_DIR:-} ]] && "$TOP/tests/s3/swift-stop" "$S3_STATE_DIR" >/dev/null 2>&1
    [[ ${KEEP_WORK:-0} = 1 ]] || rm -rf "$W"
}
trap cleanup EXIT
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mbps() { awk -v s="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", s / (b - a) / 1e6 }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        echo "$p"; return
    done
}
q() { runuser -u postgres -- "$PGBIN/psql" -X -At -h "$W/sock" -p "$1" -d postgres -c "$2"; }
as_pg() { runuser -u postgres -- env "${S3ENV[@]}" "$@"; }
start() { # DIR PORT
    as_pg "$PGBIN/pg_ctl" -D "$1" -l "$W/log/$(basename "$1").log" -w -t 900 \
        -o "-p $2 -k $W/sock -c listen_addresses=''" start >/dev/null
    STARTED+=("$1")
}
stop() { runuser -u postgres -- "$PGBIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null; }
wait_query() {
    local i
    for ((i = 0; i < 9000; i++)); do
        q "$1" "select count(*) from pgbench_branches" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# ---- the server ------------------------------------------------------------
note "starting Swift (s3api) and stunnel"
eval "$("$TOP/tests/s3/swift-start" "$W/swift")"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext "subjectAltName=IP:127.0.0.1" -keyout "$W/tls/key.pem" -out "$W/tls/cert.pem" 2>/dev/null
chmod 644 "$W/tls/cert.pem"
TLS_PORT=$(free_port)
cat >"$W/tls/stunnel.conf" <<CONF
foreground = yes
pid =
[s3]
accept = 127.0.0.1:$TLS_PORT
connect = ${S3_ENDPOINT#http://}
cert = $W/tls/cert.pem
key = $W/tls/key.pem
CONF
stunnel4 "$W/tls/stunnel.conf" >"$W/log/stunnel.log" 2>&1 &
STUNNEL_PID=$!
for ((i = 0; i < 50; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null && break; sleep 0.1; done
S3ENV=(AWS_ENDPOINT_URL="https://127.0.0.1:$TLS_PORT" AWS_CA_BUNDLE="$W/tls/cert.pem"
    AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
    AWS_REGION=us-east-1 CBFS_CACHE_DIR="$W/cache-pg")
export AWS_ENDPOINT_URL="https://127.0.0.1:$TLS_PORT" AWS_CA_BUNDLE="$W/tls/cert.pem"
curl -s --netrc-file "$S3_CURL_NETRC" --aws-sigv4 "aws:amz:us-east-1:s3" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X PUT "$S3_ENDPOINT/bench" >/dev/null
S3REPO=s3://bench/cbfs
LREPO=$W/repo-local

# ---- the cluster -----------------------------------------------------------
PG=$W/pg
note "initdb, pgbench -i -s $SCALE, $RND_MB MB random"
mkdir -p "$PG"; chown postgres: "$PG"; chmod 700 "$PG"
runuser -u postgres -- "$PGBIN/initdb" -k -A trust -U postgres -D "$PG" >/dev/null
PORT=$(free_port)
cat >"$W/pgbackrest.conf" <<CONF
[global]
repo1-type=s3
repo1-path=/pgbr
repo1-s3-bucket=bench
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=$TLS_PORT
repo1-storage-verify-tls=n
repo1-s3-region=us-east-1
repo1-s3-uri-style=path
repo1-s3-key=$AWS_ACCESS_KEY_ID
repo1-s3-key-secret=$AWS_SECRET_ACCESS_KEY
compress-type=zst
compress-level=3
process-max=$JOBS
start-fast=y
archive-timeout=900
log-level-console=warn
log-path=$W/log
lock-path=$W/log
spool-path=$W/log
[bench]
pg1-path=$PG
pg1-socket-path=$W/sock
pg1-port=$PORT
pg1-user=postgres
CONF
chown postgres: "$W/pgbackrest.conf"; chmod 600 "$W/pgbackrest.conf"
mkdir -p "$LREPO"; chown postgres: "$LREPO"
runuser -u postgres -- "$CBFS" init "$LREPO" >/dev/null
as_pg "$CBFS" init "$S3REPO" >/dev/null
cat >>"$PG/postgresql.conf" <<CONF
archive_mode = on
archive_command = '$CBFS wal-push $LREPO %p && $CBFS wal-push $S3REPO %p && pgbackrest --config=$W/pgbackrest.conf --stanza=bench archive-push %p'
max_wal_size = 4GB
CONF
start "$PG" "$PORT"
runuser -u postgres -- pgbackrest --config="$W/pgbackrest.conf" --stanza=bench stanza-create >/dev/null
runuser -u postgres -- "$PGBIN/pgbench" -h "$W/sock" -p "$PORT" -i -q -s "$SCALE" postgres >/dev/null 2>&1
q "$PORT" "create extension if not exists pgcrypto;
    create table rnd (id int, b bytea); alter table rnd alter column b set storage external;
    insert into rnd select g, gen_random_bytes(1000) from generate_series(1, $RND_MB * 1000) g;
    checkpoint" >/dev/null
seg=$(q "$PORT" "select pg_walfile_name(pg_switch_wal())")
for ((i = 0; i < 3600; i++)); do
    [[ $(q "$PORT" "select coalesce(last_archived_wal, '') >= '$seg' from pg_stat_archiver") == t ]] && break
    sleep 1
done
DBSIZE=$(q "$PORT" "select sum(pg_database_size(oid)) from pg_database")
CONN="host=$W/sock port=$PORT user=postgres dbname=postgres"

# ---- 1. backups ------------------------------------------------------------
declare -A T
# CPU seconds used so far by the S3 server's processes (Swift, stunnel)
server_cpu() {
    local pid t=0
    for pid in $(awk '{ print $1 }' "$S3_PIDFILE") "$STUNNEL_PID"; do
        [[ -r /proc/$pid/stat ]] || continue
        t=$(awk -v t="$t" '{ sub(/^.*\) /, ""); print t + ($12 + $13) / 100 }' "/proc/$pid/stat")
    done
    echo "$t"
}
timed() { # NAME CMD...
    local name=$1 t0 t1 c0 c1
    shift
    drop_caches
    c0=$(server_cpu)
    t0=$(now)
    "$@" >"$W/log/$name.out" 2>&1 || { cat "$W/log/$name.out" >&2; die "$name failed"; }
    t1=$(now)
    c1=$(server_cpu)
    T[$name]=$(elapsed "$t0" "$t1")
    T[${name}_server_cpu]=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.1f", b - a }')
    note "$name: ${T[$name]} s ($(mbps "$DBSIZE" "$t0" "$t1") MB/s of database), S3 server CPU ${T[${name}_server_cpu]} s"
}
note "database: $DBSIZE bytes"
timed backup_local "$CBFS" backup "$LREPO" --pgdata "$PG" --dbname "$CONN" --jobs "$JOBS" --label bench
timed backup_s3 env "${S3ENV[@]}" "$CBFS" backup "$S3REPO" --pgdata "$PG" --dbname "$CONN" --jobs "$JOBS" --label bench
timed backup_pgbr_s3 runuser -u postgres -- pgbackrest --config="$W/pgbackrest.conf" --stanza=bench --type=full backup
stop "$PG"

# ---- 2. mount / restore to first query -------------------------------------
first_query() { # NAME REPO
    local name=$1 repo=$2 mnt=$W/mnt-$1 port t0 t1 t2
    mkdir -p "$mnt"; MOUNTS+=("$mnt")
    port=$(free_port)
    drop_caches
    t0=$(now)
    env "${S3ENV[@]}" "$MOUNT" "$repo@bench" "$mnt" -o uid=postgres,gid=postgres
    t1=$(now)
    start "$mnt" "$port"
    wait_query "$port" || die "no query answered on $name"
    t2=$(now)
    T[${name}_mounted]=$(elapsed "$t0" "$t1")
    T[${name}_query]=$(elapsed "$t0" "$t2")
    note "$name: mounted ${T[${name}_mounted]} s, first query ${T[${name}_query]} s"
    stop "$mnt"
    "$CBFS" umount "$mnt"
}
first_query mount_s3 "$S3REPO"
first_query mount_local "$LREPO"

RST=$W/restore-pgbr; mkdir -p "$RST"; chown postgres: "$RST"; chmod 700 "$RST"
RPORT=$(free_port)
drop_caches
t0=$(now)
runuser -u postgres -- pgbackrest --config="$W/pgbackrest.conf" --stanza=bench --pg1-path="$RST" \
    --type=immediate --target-action=promote restore >/dev/null
t1=$(now)
sed -i "/^archive_/d" "$RST/postgresql.conf"
start "$RST" "$RPORT"
wait_query "$RPORT" || die "no query answered on the pgBackRest copy"
t2=$(now)
T[pgbr_restore]=$(elapsed "$t0" "$t1")
T[pgbr_query]=$(elapsed "$t0" "$t2")
note "pgbackrest restore from S3: ${T[pgbr_restore]} s, first query ${T[pgbr_query]} s"
stop "$RST"
rm -rf "$RST"

# ---- 3. cold sequential read ------------------------------------------------
seq_read() { # NAME REPO
    local name=$1 repo=$2 mnt=$W/mnt-$1 seg size t0 t1
    mkdir -p "$mnt"; MOUNTS+=("$mnt")
    env "${S3ENV[@]}" "$MOUNT" "$repo@bench" "$mnt"
    seg=$(cd "$mnt" && find base -type f -printf '%s %p\n' | awk '$1 > max { max = $1; p = $2 } END { print p }')
    size=$(stat -c %s "$mnt/$seg")
    drop_caches
    t0=$(now); dd if="$mnt/$seg" of=/dev/null bs=1M status=none; t1=$(now)
    T[${name}_seq]=$(mbps "$size" "$t0" "$t1")
    note "$name: cold sequential read ${T[${name}_seq]} MB/s ($size bytes)"
    "$CBFS" umount "$mnt"
}
seq_read seq_s3 "$S3REPO"
seq_read seq_local "$LREPO"

s3_bytes=$(find "$W/swift" -type f -path '*objects*' -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
printf '\ndatabase %s bytes (pgbench scale %s + %s MB random), jobs %s, Swift s3api via stunnel (TLS)\n' \
    "$DBSIZE" "$SCALE" "$RND_MB" "$JOBS"
printf '%-34s %10s %10s %18s\n' "step" "seconds" "MB/s" "S3 server CPU s"
for n in backup_local backup_s3 backup_pgbr_s3; do
    printf '%-34s %10s %10s %18s\n' "$n" "${T[$n]}" "$(awk -v s="$DBSIZE" -v t="${T[$n]}" 'BEGIN { printf "%.0f", s / t / 1e6 }')" \
        "${T[${n}_server_cpu]}"
done
printf '%-34s %10s\n' "mount_s3 -> first query" "${T[mount_s3_query]}"
printf '%-34s %10s\n' "mount_local -> first query" "${T[mount_local_query]}"
printf '%-34s %10s\n' "pgbackrest restore (S3) -> query" "${T[pgbr_query]}"
printf '%-34s %10s %10s\n' "cold seq read, mount of S3" "" "${T[seq_s3_seq]}"
printf '%-34s %10s %10s\n' "cold seq read, mount of local" "" "${T[seq_local_seq]}"
printf 'S3 backup / local backup throughput: %s%%\n' \
    "$(awk -v a="${T[backup_local]}" -v b="${T[backup_s3]}" 'BEGIN { printf "%.0f", 100 * a / b }')"
printf 'Swift object bytes on disk: %s\n' "$s3_bytes"
