#!/usr/bin/env bash
# bench/retention.sh - repository size after 14 daily backups with retention
# keeping 7, cbfs against pgBackRest on the same history (issue 7, item 5,
# first half).  Not a test: it prints figures to record in RESULTS.md.
#
#   sudo bench/retention.sh                       # SCALE=80, 14 days, keep 7
#   sudo SCALE=10 DAYS=4 KEEP=2 bench/retention.sh   # a quick run
#
# One cluster (initdb -k) loaded with pgbench -i -s $SCALE (then VACUUM
# FREEZE).  Its archive_command pushes every WAL segment to each cbfs
# repository and, with one `pgbackrest archive-push`, to each pgBackRest
# repository.  Then DAYS "days" (iterations, nothing is slept through):
#   1. workload: in one transaction, UPDATE every row of $FRAC % of
#      pgbench_accounts' pages, chosen at random in runs of $RANGE_PAGES
#      consecutive pages (TID range scans); then VACUUM pgbench_accounts (the
#      nightly vacuum) and CHECKPOINT.  The pages of the database (main forks
#      of every relation with storage in "postgres") whose LSN is past the
#      day's start are counted with pageinspect: that is the day's change.
#   2. backups, label dayNN:
#      cbfs: `cbfs backup` into each cbfs repository (one per value in
#        $WASTES), then `cbfs expire --keep-last $KEEP` and
#        `cbfs gc --max-waste W` (timed; gc's "freed" figure is kept);
#      pgBackRest (zst level 3, bundling on, process-max $JOBS), three
#      repositories of one stanza, one per way of keeping $KEEP days:
#        repo1 "diff":   full on day 1, then a differential every day;
#                        retention-full=1, retention-diff=$KEEP,
#                        retention-archive-type=diff, retention-archive=$KEEP
#                        (WAL kept from the oldest retained differential on,
#                        as cbfs keeps it from its oldest kept backup on);
#        repo2 "incr":   full on day 1, then an incremental every day;
#                        retention-full=1 (incrementals hang on their chain:
#                        nothing can go before the next full);
#        repo3 "weekly": a full every $KEEP days (day 1, 8, ...), a
#                        differential on the others; retention-full=2 (with 1,
#                        the day-8 full would drop days 2-7 while they are
#                        still inside the window), retention-diff=$KEEP,
#                        archive retention as repo1.
#      pgBackRest expires after each backup by itself.
#   3. `du -sb` of every repository, split into backup data and WAL
#      (WAL: cbfs wal/, pgBackRest archive/; data: the rest, that is cbfs
#      packs/ and backups/ plus its small moved/, gc/, running/ and config,
#      pgBackRest backup/), after the day's retention.
# At the end: `cbfs check --read-data` of each cbfs repository, `pgbackrest
# verify` of each pgBackRest repository, and the oldest backup each keeps
# (cbfs: the oldest label `cbfs list` shows; pgBackRest repo1: its oldest
# differential) restored, started on another port (archive_mode off) and
# compared with the source's pgbench_accounts count and sum(abalance) of that
# day.  Any failure stops the run with a non-zero exit.
#
# Environment:
#   SCALE=80         pgbench scale (80: about 1.2 GB)
#   DAYS=14          daily backups
#   KEEP=7           backups kept (cbfs --keep-last, pgBackRest as above)
#   FRAC=0.5         percentage of pgbench_accounts' pages updated each day
#                    (0.5 changes about 2.1% of the database's pages: each
#                    updated row moves to another page, and its new index
#                    entry changes a leaf of the primary key)
#   RANGE_PAGES=1    length of the runs of consecutive pages updated; 1 is
#                    uniformly scattered pages (pgbench's own access pattern)
#   SEED=7           seed of the page choice (the same history every run)
#   WASTES="25 10 0" one cbfs repository per value, gc --max-waste VALUE
#                    (25 is gc's default; the first value is the headline)
#   JOBS=2           cbfs --jobs, pgBackRest process-max
#   BENCH_DIR=...    work directory (default /var/tmp/cbfs-bench-retention:
#                    bench/work-retention/ is not gitignored); wiped at the
#                    start, big directories removed at the end
#   KEEP_WORK=1      keep the cluster and repositories at the end
#   QUIET_WAIT=30    before each timed cbfs expire + gc wait up to this many
#                    seconds for the machine to be idle (it may be shared)
#   CBFS=path        cbfs binary (default build/cli/cbfs, copied into the
#                    work directory so a rebuild during the run changes nothing)
#
# Runs as root; every cbfs and pgBackRest command runs as postgres.
set -euo pipefail

SCALE=${SCALE:-80}
DAYS=${DAYS:-14}
KEEP=${KEEP:-7}
FRAC=${FRAC:-0.5}
RANGE_PAGES=${RANGE_PAGES:-1}
SEED=${SEED:-7}
WASTES=${WASTES:-"25 10 0"}
JOBS=${JOBS:-2}
KEEP_WORK=${KEEP_WORK:-0}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$HERE")
W=${BENCH_DIR:-/var/tmp/cbfs-bench-retention}
CBFS_SRC=${CBFS:-$TOP/build/cli/cbfs}
PGBIN=/usr/lib/postgresql/15/bin

die() { echo "retention.sh: $*" >&2; exit 1; }
note() { printf '== %s  %s\n' "$(date +%H:%M:%S)" "$*"; }

[[ $(id -u) -eq 0 ]] || die "must run as root"
[[ -x $CBFS_SRC ]] || die "no cbfs binary at $CBFS_SRC (ninja -C build)"
[[ -x $PGBIN/postgres ]] || die "PostgreSQL 15 is not installed ($PGBIN)"
id postgres >/dev/null 2>&1 || die "no postgres user"
command -v pgbackrest >/dev/null || die "pgbackrest is not installed (apt-get install pgbackrest)"
read -ra WASTE <<<"$WASTES"
((${#WASTE[@]} >= 1)) || die "WASTES is empty"
((KEEP >= 1 && DAYS >= 1)) || die "DAYS and KEEP must be at least 1"

# ---- work directory and clean-up ------------------------------------------

case $W in /|"") die "refusing work directory \"$W\"" ;; esac
if [[ -e $W ]]; then
    for d in "$W"/pg "$W"/restore-*; do
        [[ -f $d/postmaster.pid ]] && kill -0 "$(head -1 "$d/postmaster.pid")" 2>/dev/null &&
            die "a server is still running on $d"
    done
    rm -rf "$W"
fi
mkdir -p "$W"/{log,sock}
chmod 755 "$W"
chown postgres: "$W/sock" "$W/log"

CLUSTERS=()   # data directories of servers we started

stop_cluster() {  # DIR
    local d=$1 pid
    [[ -f $d/postmaster.pid ]] || return 0
    pid=$(head -1 "$d/postmaster.pid")
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m fast -w -t 60 stop >/dev/null 2>&1 ||
        { [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null; } || true
}

# processes running our copy of cbfs (wal-push's detached pusher outlives
# the archiver's call); by pid, only ours
our_cbfs_pids() {
    local p
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/exe" 2>/dev/null) == "$W/cbfs" ]] && echo "${p#/proc/}"
    done
    return 0
}

cleanup() {
    local rc=$? d p i
    trap - EXIT INT TERM
    for d in "${CLUSTERS[@]}"; do stop_cluster "$d"; done
    for ((i = 0; i < 50; i++)); do [[ -z $(our_cbfs_pids) ]] && break; sleep 0.2; done
    for p in $(our_cbfs_pids); do kill "$p" 2>/dev/null || true; done
    if [[ $KEEP_WORK != 1 ]]; then
        rm -rf "$W"/pg "$W"/restore-* "$W"/repo-* "$W"/cache "$W"/pgbr-spool
    fi
    ((rc == 0)) || echo "retention.sh: FAILED (exit $rc); logs in $W/log" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

CBFS=$W/cbfs
install -m 755 "$CBFS_SRC" "$CBFS"
mkdir -p "$W/cache"
chown postgres: "$W/cache"
export CBFS_CACHE_DIR=$W/cache

used_ports=" 5432 "
free_port() {  # START -> first port from START that nobody listens on
    local p=$1
    while [[ $used_ports == *" $p "* ]] || ss -Htln "sport = :$p" | grep -q .; do p=$((p + 1)); done
    used_ports+="$p "
    echo "$p"
}
PORT=$(free_port 56432)
PORT_R=$(free_port $((PORT + 1)))

PGDATA=$W/pg
PCONF=$W/pgbackrest.conf
CONN="host=$W/sock port=$PORT user=postgres dbname=postgres"
CREPOS=()
for w in "${WASTE[@]}"; do CREPOS+=("$W/repo-cbfs-w$w"); done
PNAMES=(diff incr weekly)
PREPOS=("$W/repo-pgbr-diff" "$W/repo-pgbr-incr" "$W/repo-pgbr-weekly")

pg() { runuser -u postgres -- "$@"; }
pgenv() { runuser -u postgres -- env CBFS_CACHE_DIR="$W/cache" "$@"; }
psqlq() { pg "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -qAt -h "$W/sock" -p "${P:-$PORT}" -d postgres "$@"; }
PGBR=(pgbackrest "--config=$PCONF" --stanza=bench)

start_cluster() {  # DIR PORT [extra -o options]
    local d=$1 port=$2 extra=${3:-}
    CLUSTERS+=("$d")
    pg "$PGBIN/pg_ctl" -D "$d" -l "$W/log/$(basename "$d").log" -w -t 600 \
        -o "-p $port $extra" start >/dev/null ||
        { tail -20 "$W/log/$(basename "$d").log" >&2; die "cannot start the server on $d"; }
}

# CPU seconds the whole machine spent busy (not idle, not iowait) so far
cpu_busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit }' /proc/stat; }
# wait (up to QUIET_WAIT s) for a second in which less than a quarter of a
# core was busy; IDLE_BEFORE: busy CPU s of the last second sampled
wait_quiet() {
    local i a b
    for ((i = 0; i < ${QUIET_WAIT:-30}; i++)); do
        a=$(cpu_busy); sleep 1; b=$(cpu_busy)
        IDLE_BEFORE=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b - a }')
        awk -v x="$IDLE_BEFORE" 'BEGIN { exit !(x < 0.25) }' && return 0
    done
    return 0
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

bytes() { { du -sb "$@" 2>/dev/null || true; } | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b ? 100 * a / b : 0 }'; }

# run CMD as postgres, output to log/NAME.{out,err}; on failure print both
# and stop
run() {  # NAME CMD...
    local name=$1 rc=0
    shift
    pgenv "$@" >"$W/log/$name.out" 2>"$W/log/$name.err" || rc=$?
    if ((rc != 0)); then
        echo "---- $name failed (exit $rc): $*" >&2
        cat "$W/log/$name.out" "$W/log/$name.err" >&2
        exit 1
    fi
}

# wait until the archiver has stored everything up to a fresh WAL switch
settle() {
    local seg i
    psqlq -c "CHECKPOINT"
    seg=$(psqlq -c "SELECT pg_walfile_name(pg_switch_wal())")
    for ((i = 0; i < 1200; i++)); do
        [[ $(psqlq -c "SELECT coalesce(last_archived_wal, '') >= '$seg' FROM pg_stat_archiver") == t ]] && break
        sleep 0.5
    done
    ((i < 1200)) || die "the archiver did not reach $seg; $(psqlq -c 'SELECT * FROM pg_stat_archiver')"
}

# ---- the cluster and the repositories ----------------------------------------

note "versions: $("$PGBIN/postgres" --version); $(pgbackrest version)"
note "cbfs: $CBFS_SRC, built $(date -r "$CBFS_SRC" '+%F %T'), sha256 $(sha256sum "$CBFS_SRC" | cut -c1-16), tree $(git -C "$TOP" describe --always --dirty 2>/dev/null || echo '?')"
note "work dir $W, port $PORT; SCALE=$SCALE DAYS=$DAYS KEEP=$KEEP FRAC=$FRAC RANGE_PAGES=$RANGE_PAGES SEED=$SEED WASTES=\"$WASTES\" JOBS=$JOBS"

mkdir -p "$PGDATA" "${CREPOS[@]}" "${PREPOS[@]}" "$W/pgbr-log" "$W/pgbr-lock" "$W/pgbr-spool"
chown postgres: "$PGDATA" "${CREPOS[@]}" "${PREPOS[@]}" "$W/pgbr-log" "$W/pgbr-lock" "$W/pgbr-spool"
chmod 700 "$PGDATA"

pg "$PGBIN/initdb" -k -U postgres -D "$PGDATA" >"$W/log/initdb.log" 2>&1
for r in "${CREPOS[@]}"; do run "cbfs-init-$(basename "$r")" "$CBFS" init "$r"; done
cat "$W/log/cbfs-init-$(basename "${CREPOS[0]}").out"

cat >"$PCONF" <<EOF
[global]
repo1-path=${PREPOS[0]}
repo1-retention-full=1
repo1-retention-diff=$KEEP
repo1-retention-archive-type=diff
repo1-retention-archive=$KEEP
repo1-bundle=y
repo2-path=${PREPOS[1]}
repo2-retention-full=1
repo2-bundle=y
repo3-path=${PREPOS[2]}
repo3-retention-full=2
repo3-retention-diff=$KEEP
repo3-retention-archive-type=diff
repo3-retention-archive=$KEEP
repo3-bundle=y
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

ARCH=""
for r in "${CREPOS[@]}"; do ARCH+="CBFS_CACHE_DIR=$W/cache $CBFS wal-push $r %p && "; done
ARCH+="pgbackrest --config=$PCONF --stanza=bench archive-push %p"
cat >>"$PGDATA/postgresql.conf" <<EOF

# bench/retention.sh
listen_addresses = ''
unix_socket_directories = '$W/sock'
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
wal_level = replica
archive_mode = on
archive_command = '$ARCH'
EOF

start_cluster "$PGDATA" "$PORT"
run pgbr-stanza-create "${PGBR[@]}" stanza-create

note "loading: pgbench -i -s $SCALE"
pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$W/sock" -p "$PORT" postgres >"$W/log/pgbench-init.log" 2>&1 ||
    { cat "$W/log/pgbench-init.log" >&2; die "pgbench -i failed"; }
psqlq -c "VACUUM (FREEZE, ANALYZE)"
psqlq -c "CREATE EXTENSION pageinspect"
settle
DBSIZE=$(psqlq -c "SELECT pg_database_size('postgres')")
note "database $(numfmt --to=iec "$DBSIZE") ($DBSIZE bytes)"

# main-fork pages of the database, and how many have an LSN past $1
PAGES_SQL="SELECT sum(n), sum(c) FROM (
  SELECT pg_relation_size(c.oid) / 8192 AS n,
         (SELECT count(*) FROM generate_series(0, pg_relation_size(c.oid) / 8192 - 1) b
           WHERE (page_header(get_raw_page(c.oid::regclass::text, 'main', b::int))).lsn > :'lsn'::pg_lsn) AS c
  FROM pg_class c WHERE c.relkind IN ('r', 'i', 't', 'm', 'S') AND c.relpersistence = 'p') s"

# ---- the days ------------------------------------------------------------------

pgbr_type() {  # REPO_INDEX(0..2) DAY -> full|diff|incr
    local i=$1 d=$2
    case ${PNAMES[i]} in
        diff) ((d == 1)) && echo full || echo diff ;;
        incr) ((d == 1)) && echo full || echo incr ;;
        weekly) (((d - 1) % KEEP == 0)) && echo full || echo diff ;;
    esac
}
pgbr_labels() {  # REPO_NUMBER -> labels of its backups, oldest first, "label:type" each
    pg "${PGBR[@]}" --repo="$1" info --output=json |
        python3 -c 'import json, sys
for b in json.load(sys.stdin)[0]["backup"]: print(b["label"] + ":" + b["type"])'
}

TABLE=$W/days.tsv
printf 'day\tchanged\tpages\tcbfs_s\tpgbr_s\t' >"$TABLE"
for w in "${WASTE[@]}"; do printf 'c%s_data\tc%s_wal\tc%s_total\tc%s_exp_s\tc%s_gc_s\tc%s_freed\tc%s_rewrote\tc%s_busy\t' \
    "$w" "$w" "$w" "$w" "$w" "$w" "$w" "$w" >>"$TABLE"; done
for n in "${PNAMES[@]}"; do printf 'p%s_data\tp%s_wal\tp%s_total\tp%s_sets\t' "$n" "$n" "$n" "$n" >>"$TABLE"; done
echo >>"$TABLE"

declare -A CHECKSUM   # day label -> "count sum" of pgbench_accounts
IDLE_BEFORE=-
T_START=$(now)
for ((d = 1; d <= DAYS; d++)); do
    L=$(printf 'day%02d' "$d")
    note "$L: workload"
    LSN0=$(psqlq -c "SELECT pg_current_wal_lsn()")
    psqlq <<EOF
DO \$\$
DECLARE
    nb int := pg_relation_size('pgbench_accounts') / 8192;
    k int := greatest(1, round(nb * $FRAC / 100.0 / $RANGE_PAGES));
    p int;
BEGIN
    PERFORM setseed(($SEED * 1000 + $d) / 1000000.0);
    FOR i IN 1..k LOOP
        p := floor(random() * greatest(1, nb - $RANGE_PAGES + 1))::int;
        EXECUTE format('UPDATE pgbench_accounts SET abalance = abalance + 1 '
                       'WHERE ctid >= %L::tid AND ctid < %L::tid',
                       '(' || p || ',0)', '(' || (p + $RANGE_PAGES) || ',0)');
    END LOOP;
END
\$\$;
VACUUM pgbench_accounts;
CHECKPOINT;
EOF
    read -r NPAGES NCHANGED < <(psqlq -F ' ' -v lsn="$LSN0" <<<"$PAGES_SQL")
    CHECKSUM[$L]=$(psqlq -c "SELECT count(*) || ' ' || sum(abalance) FROM pgbench_accounts")
    settle
    echo "   changed $NCHANGED of $NPAGES pages ($(pct "$NCHANGED" "$NPAGES")%); pgbench_accounts count, sum(abalance) = ${CHECKSUM[$L]}"

    t0=$(now)
    for r in "${CREPOS[@]}"; do
        run "cbfs-backup-$(basename "$r")-$L" "$CBFS" backup "$r" --pgdata "$PGDATA" --dbname "$CONN" --jobs "$JOBS" --label "$L"
    done
    TC=$(elapsed "$t0" "$(now)")
    t0=$(now)
    for i in 0 1 2; do
        run "pgbr-backup-${PNAMES[i]}-$L" "${PGBR[@]}" --repo=$((i + 1)) --type="$(pgbr_type "$i" "$d")" backup
    done
    TP=$(elapsed "$t0" "$(now)")
    settle
    echo "   backups: cbfs ${#CREPOS[@]} x in $TC s ($(grep -h . "$W/log/cbfs-backup-$(basename "${CREPOS[0]}")-$L.out" | tail -1)); pgBackRest 3 x in $TP s"

    row="$d\t$(pct "$NCHANGED" "$NPAGES")\t$NPAGES\t$TC\t$TP\t"
    for ((j = 0; j < ${#CREPOS[@]}; j++)); do
        r=${CREPOS[j]} w=${WASTE[j]} b=$(basename "${CREPOS[j]}")
        wait_quiet
        busy0=$(cpu_busy)
        t0=$(now)
        run "cbfs-expire-$b-$L" "$CBFS" expire "$r" --keep-last "$KEEP"
        t1=$(now)
        run "cbfs-gc-$b-$L" "$CBFS" gc "$r" --max-waste "$w"
        t2=$(now)
        busy=$(awk -v a="$busy0" -v b="$(cpu_busy)" 'BEGIN { printf "%.1f", b - a }')
        gcline=$(tail -1 "$W/log/cbfs-gc-$b-$L.out")
        if [[ $gcline == "nothing to collect" ]]; then
            freed=0B rewrote=0
        else
            [[ $gcline == "gc complete:"* ]] || die "cbfs gc on $r did not complete: $gcline (log/cbfs-gc-$b-$L.out)"
            freed=$(sed -n 's/.*; freed \(.*\) in [0-9.]* s$/\1/p' <<<"$gcline" | tr -d ' ')
            rewrote=$(sed -n 's/.* rewrote \([0-9]*\) pack.*/\1/p' <<<"$gcline")
        fi
        cw_=$(bytes "$r/wal") ct_=$(bytes "$r")
        cd_=$((ct_ - cw_))
        row+="$cd_\t$cw_\t$ct_\t$(elapsed "$t0" "$t1")\t$(elapsed "$t1" "$t2")\t$freed\t$rewrote\t$busy/$IDLE_BEFORE\t"
        echo "   cbfs w$w: expire $(elapsed "$t0" "$t1") s ($(tail -1 "$W/log/cbfs-expire-$b-$L.out"))"
        echo "            gc $(elapsed "$t1" "$t2") s ($gcline) [machine busy $busy CPU s, $IDLE_BEFORE/s before]"
        echo "            repository $(mib "$ct_") MiB: data $(mib "$cd_"), WAL $(mib "$cw_")"
    done
    for i in 0 1 2; do
        pw_=$(bytes "${PREPOS[i]}/archive") pt_=$(bytes "${PREPOS[i]}")
        pd_=$((pt_ - pw_))
        sets=$(pgbr_labels $((i + 1)) | sed 's/^.*:\(.\).*$/\1/' | tr -d '\n')
        row+="$pd_\t$pw_\t$pt_\t$sets\t"
        echo "   pgBackRest ${PNAMES[i]}: repository $(mib "$pt_") MiB: data $(mib "$pd_"), WAL $(mib "$pw_"); sets $sets"
    done
    printf '%b\n' "$row" >>"$TABLE"
done
T_DAYS=$(elapsed "$T_START" "$(now)")
note "$DAYS days in $T_DAYS s"

# ---- are the kept backups whole? ------------------------------------------------

FAILED_ARCH=$(psqlq -c "SELECT failed_count FROM pg_stat_archiver")
[[ $FAILED_ARCH == 0 ]] || die "archive_command failed $FAILED_ARCH times; see $W/log/pg.log"

check_copy() {  # PORT NAME EXPECTED
    local i got
    for ((i = 0; i < 1200; i++)); do
        [[ $(P=$1 psqlq -c "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]] && break
        sleep 0.5
    done
    ((i < 1200)) || die "$2: still in recovery after 600 s"
    got=$(P=$1 psqlq -c "SELECT count(*) || ' ' || sum(abalance) FROM pgbench_accounts")
    [[ $got == "$3" ]] || die "$2: pgbench_accounts count/sum is \"$got\", the source had \"$3\""
    echo "   $2: pgbench_accounts count, sum(abalance) = $got (matches the source that day)"
}

VERIFY=()
for r in "${CREPOS[@]}"; do
    b=$(basename "$r")
    note "cbfs check --read-data $b"
    t0=$(now)
    run "cbfs-check-$b" "$CBFS" check "$r" --read-data --jobs "$JOBS"
    tail -2 "$W/log/cbfs-check-$b.out" | sed 's/^/   /'
    run "cbfs-list-$b" "$CBFS" list "$r" --json
    kept=$(python3 -c 'import json, sys; print(" ".join(b["label"] for b in json.load(open(sys.argv[1]))))' \
        "$W/log/cbfs-list-$b.out")
    oldest=${kept%% *}
    echo "   kept: $kept"
    note "cbfs restore $b@$oldest, start, compare"
    RD=$W/restore-$b
    mkdir -p "$RD"; chown postgres: "$RD"; chmod 700 "$RD"
    run "cbfs-restore-$b" "$CBFS" restore "$r@$oldest" "$RD" --jobs "$JOBS"
    start_cluster "$RD" "$PORT_R" "-c archive_mode=off"
    check_copy "$PORT_R" "cbfs $b@$oldest" "${CHECKSUM[$oldest]}"
    stop_cluster "$RD"
    rm -rf "$RD"
    VERIFY+=("cbfs $b: check --read-data exit 0 ($(elapsed "$t0" "$(now)") s with the restore); kept: $kept; $oldest restored, started, pgbench_accounts matches")
done

for i in 0 1 2; do
    note "pgbackrest verify repo$((i + 1)) (${PNAMES[i]})"
    run "pgbr-verify-${PNAMES[i]}" "${PGBR[@]}" --repo=$((i + 1)) verify --output=text --verbose
    f=$W/log/pgbr-verify-${PNAMES[i]}.out
    sed 's/^/   /' "$f"
    nsets=$(pgbr_labels $((i + 1)) | wc -l)
    grep -q '^status: ok$' "$f" && [[ $(grep -c 'status: valid,' "$f") == "$nsets" ]] &&
        ! grep -E 'missing: [1-9]|invalid: [1-9]|other: [1-9]' "$f" ||
        die "pgbackrest verify reports a problem in repo$((i + 1))"
    VERIFY+=("pgBackRest repo$((i + 1)) ${PNAMES[i]}: verify exit 0; sets $(pgbr_labels $((i + 1)) | tr '\n' ' ')")
done

# the oldest differential of repo1, restored (with its full), started, compared
mapfile -t P1 < <(pgbr_labels 1)
oldest_diff=""
for x in "${P1[@]}"; do [[ $x == *:diff ]] && { oldest_diff=${x%%:*}; break; }; done
if [[ -n $oldest_diff ]]; then
    # which day is it?  the diffs are days DAYS-(n-1)..DAYS
    ndiff=$(printf '%s\n' "${P1[@]}" | grep -c ':diff$')
    pday=$(printf 'day%02d' $((DAYS - ndiff + 1)))
    note "pgbackrest restore repo1 --set=$oldest_diff ($pday), start, compare"
    RD=$W/restore-pgbr
    mkdir -p "$RD"; chown postgres: "$RD"; chmod 700 "$RD"
    t0=$(now)
    run pgbr-restore "${PGBR[@]}" --repo=1 --set="$oldest_diff" --type=immediate --target-action=promote \
        "--pg1-path=$RD" restore
    start_cluster "$RD" "$PORT_R" "-c archive_mode=off"
    check_copy "$PORT_R" "pgBackRest repo1 $oldest_diff" "${CHECKSUM[$pday]}"
    stop_cluster "$RD"
    rm -rf "$RD"
    VERIFY+=("pgBackRest repo1: $oldest_diff ($pday) restored, started, pgbench_accounts matches ($(elapsed "$t0" "$(now)") s)")
fi

# ---- report ------------------------------------------------------------------------

{
    echo
    echo "SCALE=$SCALE DAYS=$DAYS KEEP=$KEEP FRAC=$FRAC RANGE_PAGES=$RANGE_PAGES SEED=$SEED WASTES=\"$WASTES\" JOBS=$JOBS; database at the start $DBSIZE bytes, at the end $(psqlq -c "SELECT pg_database_size('postgres')") bytes; $DAYS days in $T_DAYS s"
    echo "sizes in MiB (du -sb) after the day's retention; WAL = cbfs wal/, pgBackRest archive/; data = the rest of the repository (cbfs: packs/, backups/ and the small moved/, gc/, running/, config; pgBackRest: backup/)"
    echo
    w=${WASTE[0]}
    python3 - "$TABLE" "$w" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
w = sys.argv[2]
M = lambda x: "%.1f" % (int(x) / 1048576)
R = lambda a, b: "%.1f%%" % (100.0 * int(a) / int(b))
print("| day | pages changed | cbfs data | cbfs WAL | cbfs total | pgBR data | pgBR WAL | pgBR total | data ratio | total ratio | cbfs expire s | cbfs gc s | gc freed | packs rewritten |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print("| %s | %s%% | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        r["day"], r["changed"], M(r["c%s_data" % w]), M(r["c%s_wal" % w]), M(r["c%s_total" % w]),
        M(r["pdiff_data"]), M(r["pdiff_wal"]), M(r["pdiff_total"]),
        R(r["c%s_data" % w], r["pdiff_data"]), R(r["c%s_total" % w], r["pdiff_total"]),
        r["c%s_exp_s" % w], r["c%s_gc_s" % w], r["c%s_freed" % w], r["c%s_rewrote" % w]))
print()
ws = [k[1:-5] for k in rows[0] if k.startswith("c") and k.endswith("_data")]
print("Totals of every repository (MiB), cbfs per gc --max-waste, pgBackRest per scheme (sets, oldest first: f full, d diff, i incr):")
print()
print("| day | " + " | ".join("cbfs w%s" % x for x in ws) + " | pgBR diff | pgBR incr | pgBR weekly | sets diff / incr / weekly |")
print("|---:|" + "---:|" * (len(ws) + 3) + "---|")
for r in rows:
    print("| %s | %s | %s | %s | %s | %s / %s / %s |" % (r["day"],
        " | ".join("%s (data %s)" % (M(r["c%s_total" % x]), M(r["c%s_data" % x])) for x in ws),
        M(r["pdiff_total"]), M(r["pincr_total"]), M(r["pweekly_total"]),
        r["pdiff_sets"], r["pincr_sets"], r["pweekly_sets"]))
print()
f = rows[-1]
print("Final (day %s), bytes:" % f["day"])
for x in ws:
    print("  cbfs w%s: data %s, WAL %s, total %s; gc per day: expire %s s, gc %s s (mean over days)" % (x,
        f["c%s_data" % x], f["c%s_wal" % x], f["c%s_total" % x],
        "%.2f" % (sum(float(r["c%s_exp_s" % x]) for r in rows) / len(rows)),
        "%.2f" % (sum(float(r["c%s_gc_s" % x]) for r in rows) / len(rows))))
for n in ("diff", "incr", "weekly"):
    print("  pgBackRest %s: data %s, WAL %s, total %s" % (n, f["p%s_data" % n], f["p%s_wal" % n], f["p%s_total" % n]))
for x in ws:
    for n in ("diff", "incr", "weekly"):
        print("  cbfs w%s / pgBackRest %s: data %s, WAL %s, total %s" % (x, n,
            R(f["c%s_data" % x], f["p%s_data" % n]), R(f["c%s_wal" % x], f["p%s_wal" % n]),
            R(f["c%s_total" % x], f["p%s_total" % n])))
EOF
    echo
    echo "whole after $DAYS days:"
    printf '  %s\n' "${VERIFY[@]}"
    echo "archiver failed_count: $FAILED_ARCH"
} | tee "$W/results.txt"

note "done; results in $W/results.txt, per-day figures in $TABLE"
