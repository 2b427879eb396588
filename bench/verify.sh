#!/usr/bin/env bash
# bench/verify.sh - `cbfs verify` against the same checks done the usual way
# with pgBackRest (issue 6).  Not a test: it prints figures to record in
# RESULTS.md.
#
#   sudo bench/verify.sh                           # SCALE=500, 2 runs a side
#   sudo SCALE=50 RUNS=1 bench/verify.sh           # a quick run
#
# One cluster (initdb -k) whose archive_command feeds both tools, loaded with
# pgbench -i -s $SCALE, then one full backup with each tool (timed, for
# information).  The source is then stopped, and RUNS times, alternating
# which goes first:
#   - cbfs: `cbfs verify REPO --jobs $JOBS --json --work-dir DIR` (mount,
#     start, recovery, amcheck, reads, stop, unmount), under /usr/bin/time;
#     the local disk used is sampled every $SAMPLE s with `du -sx` of DIR
#     (the mount point is inside it; -x leaves it out: what is counted is the
#     overlay, its pg_wal, the manifest copy, the server's log and socket);
#   - pgBackRest: `pgbackrest restore --type=immediate --target-action=promote`
#     into an empty directory, pg_ctl start, wait until pg_is_in_recovery()
#     is false, the same checks as cbfs verify with $JOBS connections (a
#     Python script with one psql per job: bt_index_check(index, true) on
#     every valid B-tree index of every database that accepts connections,
#     count(*) FROM ONLY of every table, TOAST table and materialized view
#     whose heap no heapallindexed check read, a read of every other file
#     but pg_wal), pg_ctl stop -m immediate.  The local disk used is the
#     restored directory (`du -sx`, sampled the same way, and once more after
#     the stop).
# Each run's wall time, its split, the local disk peak, and the ratios to
# the database size (sum of pg_database_size) are printed at the end.
#
# Environment:
#   SCALE=500        pgbench scale (500: ~7.5 GB)
#   JOBS=2           cbfs verify --jobs, pgBackRest process-max, the checks'
#                    connections on the pgBackRest side
#   RUNS=2           timed runs of each side
#   FIRST=cbfs       which side goes first in run 1 (cbfs|pgbackrest); the
#                    order alternates from run to run
#   BENCH_DIR=...    work directory (default bench/work-verify/); wiped at
#                    the start, big directories removed at the end
#   KEEP_WORK=1      keep the cluster and repositories at the end
#   MEM_LIMIT=2G     run the timed runs in a memory cgroup of this size
#                    (cgroup v2 memory.max, or v1 memory.limit_in_bytes): the
#                    page cache they may use is what is left of it after the
#                    processes (the server's shared_buffers, the mount's block
#                    cache); set with DROP_CACHES=1 so that nothing cached
#                    outside it helps.  A database larger than that is then
#                    read from disk as it would be on a server whose data
#                    does not fit in memory
#   DROP_CACHES=1    sync and drop the page cache before each timed run
#                    (cold reads); default 0 (repositories warm)
#   QUIET_WAIT=60    before each timed run wait up to this many seconds for
#                    the machine to be idle (it may be shared)
#   GO_FILE=path     before the first timed run, wait until this file exists
#   GO_WAIT=2400       (for at most GO_WAIT seconds; then run anyway)
#   SAMPLE=0.5       seconds between two samples of the local disk used
#   CBFS=path        cbfs binary (default build/cli/cbfs, copied into the
#                    work directory so a rebuild during the run changes nothing)
#
# Runs as root.  Exits non-zero if any step fails (a failed verify prints
# its JSON and stderr).
set -euo pipefail

SCALE=${SCALE:-500}
JOBS=${JOBS:-2}
RUNS=${RUNS:-2}
FIRST=${FIRST:-cbfs}
DROP_CACHES=${DROP_CACHES:-0}
MEM_LIMIT=${MEM_LIMIT:-}
KEEP_WORK=${KEEP_WORK:-0}
SAMPLE=${SAMPLE:-0.5}
GO_FILE=${GO_FILE:-}
GO_WAIT=${GO_WAIT:-2400}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$HERE")
W=${BENCH_DIR:-$HERE/work-verify}
CBFS_SRC=${CBFS:-$TOP/build/cli/cbfs}
PGBIN=/usr/lib/postgresql/15/bin

die() { echo "verify.sh: $*" >&2; exit 1; }
note() { printf '== %s  %s\n' "$(date +%H:%M:%S)" "$*"; }

[[ $(id -u) -eq 0 ]] || die "must run as root"
[[ -x $CBFS_SRC ]] || die "no cbfs binary at $CBFS_SRC (ninja -C build)"
[[ -x $PGBIN/postgres ]] || die "PostgreSQL 15 is not installed ($PGBIN)"
[[ -f /usr/share/postgresql/15/extension/amcheck.control ]] || die "amcheck is not installed"
[[ -x /usr/bin/python3 ]] || die "no /usr/bin/python3"
id postgres >/dev/null 2>&1 || die "no postgres user"
[[ $FIRST == cbfs || $FIRST == pgbackrest ]] || die "FIRST is cbfs or pgbackrest"

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
    # never wipe a directory a running server or a mount of ours may still use
    for d in "$W"/pg "$W"/restore-pgbr; do
        [[ -f $d/postmaster.pid ]] && kill -0 "$(head -1 "$d/postmaster.pid")" 2>/dev/null &&
            die "a server is still running on $d"
    done
    findmnt -rn -o TARGET | grep -q "^$W/" && die "something is still mounted under $W"
    rm -rf "$W"
fi

# room: the source (~15 MB a scale unit) and its WAL, two repositories, a
# full restore, with some margin
avail=$(df -B1 --output=avail "$(dirname "$W")" | tail -1)
need_bytes=$((SCALE * 15 * 1024 * 1024 * 3 + 6 * 1024 * 1024 * 1024))
((avail > need_bytes)) ||
    die "not enough free disk: $(numfmt --to=iec "$avail") free, about $(numfmt --to=iec "$need_bytes") needed"

mkdir -p "$W"/{log,sock,time,vwork}
chmod 755 "$W" "$W/vwork"
chown postgres: "$W/sock" "$W/log"

CLUSTERS=()   # data directories of servers we started
BGPIDS=()     # background helpers we started (samplers, /usr/bin/time)

stop_cluster() {  # DIR
    local d=$1 pid
    [[ -f $d/postmaster.pid ]] || return 0
    pid=$(head -1 "$d/postmaster.pid")
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -w -t 60 stop >/dev/null 2>&1 ||
        { [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null; } || true
}

# stop a background job and its children: a cbfs verify under
# /usr/bin/time gets SIGTERM (it stops its server and unmounts), then time
stop_bg() {  # PID
    local p=$1 c i
    for c in $(pgrep -P "$p" || true); do kill -TERM "$c" 2>/dev/null || true; done
    for ((i = 0; i < 300; i++)); do
        [[ -z $(pgrep -P "$p" || true) ]] && break
        sleep 0.1
    done
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

cleanup() {
    local rc=$? p d m
    trap - EXIT INT TERM
    for p in "${BGPIDS[@]}"; do stop_bg "$p"; done
    for d in "${CLUSTERS[@]}"; do stop_cluster "$d"; done
    # a mount left behind by a verify that could not tear down
    for m in $(findmnt -rn -o TARGET | grep "^$W/" || true); do umount -l "$m" || true; done
    if [[ $KEEP_WORK != 1 ]]; then
        rm -rf "$W"/pg "$W"/restore-pgbr "$W"/repo-cbfs "$W"/repo-pgbr "$W"/cache "$W"/pgbr-spool \
            "$W"/vwork
    fi
    ((rc == 0)) || echo "verify.sh: FAILED (exit $rc); logs in $W/log" >&2
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
PORT=$(free_port 56432)
PORT_PGBR=$(free_port $((PORT + 1)))

PGDATA=$W/pg
CREPO=$W/repo-cbfs
PREPO=$W/repo-pgbr
PCONF=$W/pgbackrest.conf
RP=$W/restore-pgbr
CONN="host=$W/sock port=$PORT user=postgres dbname=postgres"

pg() { runuser -u postgres -- "$@"; }
psqlq() { pg "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -qAt -h "$W/sock" -p "${P:-$PORT}" -d postgres "$@"; }

start_cluster() {  # DIR PORT [extra -o options]
    local d=$1 port=$2 extra=${3:-}
    CLUSTERS+=("$d")
    pg "$PGBIN/pg_ctl" -D "$d" -l "$W/log/$(basename "$d").log" -w -t 3600 \
        -o "-p $port $extra" start >/dev/null ||
        { tail -20 "$W/log/$(basename "$d").log" >&2; die "cannot start the server on $d"; }
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# CPU seconds the whole machine spent busy (not idle, not iowait) so far
cpu_busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit }' /proc/stat; }

# The machine may be shared: before a timed run, wait (up to QUIET_WAIT
# seconds) for a second in which less than a quarter of a core was busy.
# IDLE_BEFORE is the busy CPU seconds of the last second sampled.
wait_quiet() {
    local i a b
    for ((i = 0; i < ${QUIET_WAIT:-60}; i++)); do
        a=$(cpu_busy); sleep 1; b=$(cpu_busy)
        IDLE_BEFORE=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b - a }')
        awk -v x="$IDLE_BEFORE" 'BEGIN { exit !(x < 0.25) }' && return 0
    done
    echo "   (machine still busy: $IDLE_BEFORE CPU s/s before the next run)"
}

# CPU ticks of every live process: "pid comm ticks ppid" lines
cpu_snapshot() {
    awk '{ l = $0; c = substr(l, index(l, "(") + 1); c = substr(c, 1, match(c, /\) [A-Za-z] /) - 1)
           r = l; sub(/.*\) /, "", r); split(r, f, " "); gsub(/ /, "_", c)
           print $1, c, f[12] + f[13], f[2] }' /proc/[0-9]*/stat 2>/dev/null || true
}
# the processes still alive after a run that used the most CPU during it
# (the run's own servers, mounts and tools have exited by then)
cpu_others() {  # SNAPSHOT_BEFORE SNAPSHOT_AFTER
    awk -v hz="$(getconf CLK_TCK)" 'NR == FNR { t[$1] = $3; next }
        { c = $2; if (c ~ /^kworker/) c = "kworker"
          d = ($3 - t[$1]) / hz; if (d > 0) u[c] += d }
        END { for (c in u) if (u[c] >= 0.3) printf "%s %.1f\n", c, u[c] }' "$1" "$2" | sort -k2,2nr | head -4 |
        awk '{ printf "%s%s %ss", (NR > 1 ? ", " : ""), $1, $2 }'
}

# Peak local disk used under DIR (du -x: not into the FUSE mount), sampled
# every SAMPLE seconds; OUTFILE holds the peak in bytes, OUTFILE.detail the
# du -d4 listing at the peak.
disk_sampler() {  # DIR OUTFILE
    local dir=$1 out=$2 peak=0 cur listing
    echo 0 >"$out"
    while :; do
        listing=$(du -xB1 -d4 "$dir" 2>/dev/null || true)
        cur=$(printf '%s\n' "$listing" | awk -v d="$dir" '$2 == d { print $1 }')
        if [[ -n $cur ]] && ((cur > peak)); then
            peak=$cur
            echo "$peak" >"$out"
            printf '%s\n' "$listing" >"$out.detail"
        fi
        sleep "$SAMPLE"
    done
}

bytes() { { du -sxB1 "$@" 2>/dev/null || true; } | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
apparent() { { du -sb "$@" 2>/dev/null || true; } | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

# before a timed run: flush, optionally drop the page cache, wait for quiet
prepare() {
    sync
    if [[ $DROP_CACHES == 1 ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
    wait_quiet
    BUSY0=$(cpu_busy)
    cpu_snapshot >"$W/time/$1.cpu0"
}
# after it: the CPU the machine used, and who else used it
finish() {  # NAME
    cpu_snapshot >"$W/time/$1.cpu1"
    BUSY=$(awk -v a="$BUSY0" -v b="$(cpu_busy)" 'BEGIN { printf "%.1f", b - a }')
    OTHERS=$(cpu_others "$W/time/$1.cpu0" "$W/time/$1.cpu1")
    declare -g "B_$1=$BUSY" "I_$1=$IDLE_BEFORE" "O_$1=$OTHERS"
}

# settle: wait until the archiver has stored everything up to a fresh WAL
# switch, so that the backups' WAL is in both repositories
settle() {
    local seg i
    psqlq -c "CHECKPOINT"
    seg=$(psqlq -c "SELECT pg_walfile_name(pg_switch_wal())")
    for ((i = 0; i < 3600; i++)); do
        [[ $(psqlq -c "SELECT coalesce(last_archived_wal, '') >= '$seg' FROM pg_stat_archiver") == t ]] && break
        sleep 0.5
    done
    ((i < 3600)) || die "the archiver did not reach $seg; $(psqlq -c 'SELECT * FROM pg_stat_archiver')"
    sync
}

# ---- the checks, the usual way ------------------------------------------------
# What restore/dbcheck.c does, over psql: the same relation list, the same
# "first index of a table takes its heap read over" rule, the same order
# (relations >= 8 MB first, largest first; then database by database), one
# psql per job fed one query at a time, and the other files read with 1 MB
# reads.  Prints a JSON summary (with the three slowest checks); exits 1 if
# a check failed.

cat >"$W/pgcheck.py" <<'PY'
import json, os, subprocess, sys, threading, time

host, port, user, jobs, datadir = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
PSQL = '/usr/lib/postgresql/15/bin/psql'
BIG = 8 << 20
SEP = '\x1f'
END = '__pgcheck_end__'
ENV = dict(os.environ, PGOPTIONS='-c statement_timeout=0 -c lock_timeout=0'
           ' -c idle_in_transaction_session_timeout=0 -c default_transaction_read_only=off'
           ' -c client_min_messages=warning')
LIST = """SELECT c.oid::text, c.relkind::text,
 quote_ident(n.nspname) || '.' || quote_ident(c.relname),
 pg_relation_size(c.oid)::text, coalesce(pg_relation_filepath(c.oid), ''),
 coalesce(i.indrelid::text, '')
 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 LEFT JOIN pg_index i ON i.indexrelid = c.oid
 LEFT JOIN pg_am a ON a.oid = c.relam
 WHERE c.relpersistence <> 't' AND (
  (c.relkind = 'i' AND a.amname = 'btree' AND i.indisvalid AND i.indisready)
  OR c.relkind IN ('r', 't') OR (c.relkind = 'm' AND c.relispopulated))
 ORDER BY c.oid"""


def psql(db, *sqls):
    cmd = [PSQL, '-X', '-qAt', '-F', SEP, '-v', 'ON_ERROR_STOP=1', '-h', host, '-p', port,
           '-U', user, '-d', db]
    for s in sqls:
        cmd += ['-c', s]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    if r.returncode:
        sys.exit('pgcheck: %s: %s' % (db, r.stderr.strip()))
    return [l.split(SEP) for l in r.stdout.splitlines() if l]


t0 = time.time()
dbs = [r[0] for r in psql('postgres', 'SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname')]
stats = [dict(name=d, indexes=0, tables=0, bytes=0, seconds=0.0, failures=0) for d in dbs]
tasks, covered = [], set()
for di, db in enumerate(dbs):
    rows = psql(db, 'CREATE EXTENSION IF NOT EXISTS amcheck', LIST)
    tables, taken = {}, set()
    for oid, kind, name, size, path, indrelid in rows:
        if path:
            covered.add(path)
        if kind != 'i':
            tables[oid] = dict(kind='table', db=di, oid=int(oid), name=name, size=int(size))
    for oid, kind, name, size, path, indrelid in rows:
        if kind != 'i':
            continue
        heap = None
        if indrelid in tables and indrelid not in taken:
            heap = tables[indrelid]
            taken.add(indrelid)
        tasks.append(dict(kind='index', db=di, oid=int(oid), name=name, size=int(size), heap=heap))
    tasks += [t for o, t in tables.items() if o not in taken]
tasks.sort(key=lambda t: (t['size'] < BIG, 0 if t['size'] >= BIG else t['db'], -t['size'], t['oid']))
queue = [dict(kind='files')] + tasks
lock = threading.Lock()
failures = []
files = dict(count=0, bytes=0)
timings = []  # (seconds, task) of every check, for the slowest ones
broken = []


def fail(t, check, msg):
    with lock:
        failures.append(dict(check=check, database=dbs[t['db']] if 'db' in t else None,
                             relation=t.get('name'), message=msg))
        if 'db' in t:
            stats[t['db']]['failures'] += 1


def count(t, index, nbytes):
    with lock:
        stats[t['db']]['indexes' if index else 'tables'] += 1
        stats[t['db']]['bytes'] += nbytes


def read_files():
    for root, dirs, names in os.walk(datadir):
        for n in names:
            path = os.path.join(root, n)
            rel = os.path.relpath(path, datadir)
            if rel.startswith('pg_wal/') or rel == 'postmaster.pid':
                continue
            base, dot, seg = rel.rpartition('.')
            key = base if dot and seg.isdigit() and '/' not in seg else rel
            if key in covered or os.path.islink(path):
                continue
            total = 0
            try:
                with open(path, 'rb', buffering=0) as f:
                    while True:
                        b = f.read(1 << 20)
                        if not b:
                            break
                        total += len(b)
            except FileNotFoundError:
                continue
            except OSError as e:
                fail(dict(name=rel), 'file', str(e))
            with lock:
                files['count'] += 1
                files['bytes'] += total


class Worker(threading.Thread):
    def __init__(self):
        super().__init__()
        self.proc, self.db = None, None

    def use(self, di):
        if self.proc and self.db == di:
            return
        self.close()
        self.proc = subprocess.Popen([PSQL, '-X', '-qAt', '-h', host, '-p', port, '-U', user,
                                      '-d', dbs[di]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=ENV, bufsize=1)
        self.db = di

    def close(self):
        if self.proc:
            self.proc.stdin.close()
            self.proc.wait()
            self.proc = None

    def query(self, sql):
        """The error lines of sql, [] if it succeeded."""
        self.proc.stdin.write(sql + ';\n\\echo ' + END + '\n')
        self.proc.stdin.flush()
        out = []
        for line in self.proc.stdout:
            line = line.rstrip('\n')
            if line == END:
                return [l for l in out if 'ERROR:' in l or 'FATAL:' in l]
            out.append(line)
        raise RuntimeError('lost the connection: ' + ' / '.join(out[-3:]))

    def relation(self, t):
        if t['kind'] == 'index':
            err = self.query('SELECT bt_index_check(%d::oid::regclass, true)' % t['oid'])
            if not err:
                count(t, True, t['size'])
                if t['heap']:
                    count(t['heap'], False, t['heap']['size'])
                return
            fail(t, 'amcheck', err[0])
            if t['heap']:
                self.relation(t['heap'])
            return
        err = self.query('SELECT count(*) FROM ONLY ' + t['name'])
        if err:
            fail(t, 'read', err[0])
        else:
            count(t, False, t['size'])

    def run(self):
        try:
            while not broken:
                with lock:
                    t = queue.pop(0) if queue else None
                if not t:
                    break
                s = time.time()
                if t['kind'] == 'files':
                    read_files()
                    continue
                self.use(t['db'])
                self.relation(t)
                with lock:
                    stats[t['db']]['seconds'] += time.time() - s
                    timings.append((time.time() - s, '%s %s %s' % (dbs[t['db']], t['kind'], t['name'])))
        except Exception as e:
            broken.append(str(e))
        finally:
            self.close()


workers = [Worker() for _ in range(jobs)]
for w in workers:
    w.start()
for w in workers:
    w.join()
checked = files['bytes'] + sum(s['bytes'] for s in stats)
print(json.dumps(dict(result='failed' if failures or broken else 'passed', error=broken[0] if broken else None,
                      duration_seconds=round(time.time() - t0, 3), bytes_checked=checked,
                      databases=stats, files=files, failures=failures,
                      slowest=['%.2f s %s' % x for x in sorted(timings, reverse=True)[:3]]), indent=1))
sys.exit(1 if failures or broken else 0)
PY

# ---- the cluster ------------------------------------------------------------

note "versions: $("$PGBIN/postgres" --version); $(pgbackrest version)"
note "cbfs: $CBFS_SRC, built $(date -r "$CBFS_SRC" '+%F %T'), sha256 $(sha256sum "$CBFS_SRC" | cut -c1-16), tree $(git -C "$TOP" describe --always --dirty 2>/dev/null || echo '?')"
note "machine: nproc $(nproc), $(free -g | awk '/^Mem:/ { print $2 }') GiB, kernel $(uname -r), $(df -h --output=avail "$W" | tail -1 | tr -d ' ') free"
note "work dir $W, port $PORT/$PORT_PGBR, SCALE=$SCALE JOBS=$JOBS RUNS=$RUNS FIRST=$FIRST DROP_CACHES=$DROP_CACHES"

mkdir -p "$PGDATA" "$CREPO" "$PREPO" "$W/pgbr-log" "$W/pgbr-lock" "$W/pgbr-spool"
chown postgres: "$PGDATA" "$CREPO" "$PREPO" "$W/pgbr-log" "$W/pgbr-lock" "$W/pgbr-spool"
chmod 700 "$PGDATA"

pg "$PGBIN/initdb" -k -A trust -U postgres -D "$PGDATA" >"$W/log/initdb.log" 2>&1

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
archive-timeout=900
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

# bench/verify.sh
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
# settle hint bits and the visibility map now, not on the copies
psqlq -c "VACUUM (FREEZE, ANALYZE)"
note "waiting for the archiver"
settle
DBSIZE=$(psqlq -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
DBSIZE_PG=$(psqlq -c "SELECT pg_database_size('postgres')")
PGDATA_BYTES=$(bytes "$PGDATA/base" "$PGDATA/global")
note "databases $(numfmt --to=iec "$DBSIZE") ($DBSIZE bytes, postgres alone $DBSIZE_PG), base+global on disk $PGDATA_BYTES bytes"

# ---- full backups (timed for information) ----------------------------------------

note "full backups"
t0=$(now)
"$CBFS" backup "$CREPO" --pgdata "$PGDATA" --dbname "$CONN" --jobs "$JOBS" --label full \
    >"$W/log/cbfs-backup.out" 2>"$W/log/cbfs-backup.err" ||
    { cat "$W/log/cbfs-backup.out" "$W/log/cbfs-backup.err" >&2; die "cbfs backup failed"; }
T_CBFS_BACKUP=$(elapsed "$t0" "$(now)")
settle
t0=$(now)
pg "${PGBR[@]}" --type=full backup >"$W/log/pgbr-backup.log" 2>&1 ||
    { cat "$W/log/pgbr-backup.log" >&2; die "pgbackrest backup failed"; }
T_PGBR_BACKUP=$(elapsed "$t0" "$(now)")
settle
FAILED_ARCH=$(psqlq -c "SELECT failed_count FROM pg_stat_archiver")
note "backups: cbfs $T_CBFS_BACKUP s, pgBackRest $T_PGBR_BACKUP s; repositories: cbfs $(bytes "$CREPO") bytes, pgBackRest $(bytes "$PREPO") bytes; archiver failed_count $FAILED_ARCH"
[[ $FAILED_ARCH == 0 ]] || die "archive_command failed $FAILED_ARCH times; see $W/log/pg.log"

# nothing else runs during the timed runs: the copies need only the
# repositories
stop_cluster "$PGDATA"

if [[ -n $GO_FILE ]]; then
    note "waiting up to $GO_WAIT s for $GO_FILE"
    t0=$(now)
    i=0
    while [[ ! -e $GO_FILE ]] && ((i++ < GO_WAIT)); do sleep 1; done
    if [[ -e $GO_FILE ]]; then
        GO_NOTE="$GO_FILE appeared after $(elapsed "$t0" "$(now)") s"
    else
        GO_NOTE="$GO_FILE did not appear within $GO_WAIT s: ran anyway, the machine may be shared"
    fi
    note "$GO_NOTE"
fi

# ---- the timed runs -----------------------------------------------------------------

json() {  # FILE PYTHON-EXPRESSION over j
    python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

run_cbfs() {  # RUN
    local n=cbfs_$1 rc=0 pid spid
    rm -rf "$W/vwork"
    mkdir -m 755 "$W/vwork"
    prepare "$n"
    disk_sampler "$W/vwork" "$W/time/$n.disk" &
    spid=$!
    BGPIDS+=("$spid")
    /usr/bin/time -f '%e %M %U %S' -o "$W/time/$n" \
        "$CBFS" verify "$CREPO" --jobs "$JOBS" --json --work-dir "$W/vwork" \
        >"$W/log/$n.json" 2>"$W/log/$n.err" &
    pid=$!
    BGPIDS+=("$pid")
    wait "$pid" || rc=$?
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    BGPIDS=()
    finish "$n"
    if ((rc != 0)); then
        echo "---- cbfs verify failed (exit $rc)" >&2
        cat "$W/log/$n.json" "$W/log/$n.err" >&2
        [[ -f $W/time/$n ]] && cat "$W/time/$n" >&2
        exit 1
    fi
    local secs rss usr sys peak
    read -r secs rss usr sys < <(tail -1 "$W/time/$n")
    peak=$(cat "$W/time/$n.disk")
    declare -g "T_$n=$secs" "M_$n=$rss" "C_$n=$(awk -v u="$usr" -v s="$sys" 'BEGIN { print u + s }')" \
        "D_$n=$peak" "R_$n=$(json "$W/log/$n.json" "j['recovery_seconds']")" \
        "V_$n=$(json "$W/log/$n.json" "j['duration_seconds']")"
    printf '   %-8s %8.2f s  (verify: recovery %.2f s, total %.2f s)  local disk peak %s  RSS %.0f MB  cpu %s s, machine busy %s s (before: %s/s)\n' \
        "$n" "$secs" "$(eval echo "\$R_$n")" "$(eval echo "\$V_$n")" "$(numfmt --to=iec "$peak")" \
        "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$(eval echo "\$C_$n")" "$BUSY" "$IDLE_BEFORE"
    [[ -z $OTHERS ]] || echo "            other CPU meanwhile: $OTHERS"
    json "$W/log/$n.json" "'            result %s: %s; bytes_checked %d; files %d (%d bytes)' % (j['result'], ', '.join('%s %d idx %d tbl %.1f s' % (d['name'], d['indexes'], d['tables'], d['seconds']) for d in j['databases']), j['bytes_checked'], j['files']['count'], j['files']['bytes'])"
}

run_pgbr() {  # RUN
    local n=pgbr_$1 spid t0 t1 t2 t3 t4 t4b t5 i rc=0 final
    rm -rf "$RP"
    mkdir -m 700 "$RP"
    chown postgres: "$RP"
    prepare "$n"
    disk_sampler "$RP" "$W/time/$n.disk" &
    spid=$!
    BGPIDS+=("$spid")
    t0=$(now)
    pg "${PGBR[@]}" "--pg1-path=$RP" --type=immediate --target-action=promote restore \
        >"$W/log/$n-restore.log" 2>&1 ||
        { cat "$W/log/$n-restore.log" >&2; die "pgbackrest restore failed"; }
    t1=$(now)
    start_cluster "$RP" "$PORT_PGBR" "-k $W/sock -c listen_addresses='' -c archive_mode=off"
    for ((i = 0; i < 36000; i++)); do
        [[ $(P=$PORT_PGBR psqlq -c "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]] && break
        sleep 0.1
    done
    ((i < 36000)) || die "pgBackRest copy: still in recovery after an hour"
    t2=$(now)
    python3 "$W/pgcheck.py" "$W/sock" "$PORT_PGBR" postgres "$JOBS" "$RP" >"$W/log/$n.json" 2>"$W/log/$n.err" || rc=$?
    t3=$(now)
    pg "$PGBIN/pg_ctl" -D "$RP" -m immediate -w stop >/dev/null
    t4=$(now)
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    BGPIDS=()
    finish "$n"
    if ((rc != 0)); then
        echo "---- the checks on the pgBackRest copy failed (exit $rc)" >&2
        cat "$W/log/$n.json" "$W/log/$n.err" >&2
        exit 1
    fi
    final=$(bytes "$RP")
    local peak
    peak=$(cat "$W/time/$n.disk")
    ((final > peak)) && peak=$final
    # removing the copy is not part of the run (for information)
    t4b=$(now)
    rm -rf "$RP"
    t5=$(now)
    declare -g "T_$n=$(elapsed "$t0" "$t4")" "S_${n}_restore=$(elapsed "$t0" "$t1")" \
        "S_${n}_start=$(elapsed "$t1" "$t2")" "S_${n}_checks=$(elapsed "$t2" "$t3")" \
        "S_${n}_stop=$(elapsed "$t3" "$t4")" "S_${n}_rm=$(elapsed "$t4b" "$t5")" \
        "D_$n=$peak" "F_$n=$final"
    printf '   %-8s %8.2f s  (restore %s, start+recovery %s, checks %s, stop %s; rm -rf afterwards %s)  local disk peak %s (after the stop %s)  machine busy %s s (before: %s/s)\n' \
        "$n" "$(eval echo "\$T_$n")" "$(eval echo "\$S_${n}_restore")" "$(eval echo "\$S_${n}_start")" \
        "$(eval echo "\$S_${n}_checks")" "$(eval echo "\$S_${n}_stop")" "$(eval echo "\$S_${n}_rm")" \
        "$(numfmt --to=iec "$peak")" "$(numfmt --to=iec "$final")" "$BUSY" "$IDLE_BEFORE"
    [[ -z $OTHERS ]] || echo "            other CPU meanwhile: $OTHERS"
    json "$W/log/$n.json" "'            result %s: %s; bytes_checked %d; files %d (%d bytes)' % (j['result'], ', '.join('%s %d idx %d tbl %.1f s' % (d['name'], d['indexes'], d['tables'], d['seconds']) for d in j['databases']), j['bytes_checked'], j['files']['count'], j['files']['bytes'])"
}

# the timed runs (this shell and everything it starts from here) in a memory cgroup
if [[ -n $MEM_LIMIT ]]; then
    limit=$(numfmt --from=iec "$MEM_LIMIT")
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        CG=/sys/fs/cgroup/cbfs-bench-verify
        mkdir -p "$CG"
        echo "$limit" >"$CG/memory.max"
        echo 0 >"$CG/memory.swap.max" 2>/dev/null || true
        echo $$ >"$CG/cgroup.procs"
    elif [[ -d /sys/fs/cgroup/memory ]]; then
        CG=/sys/fs/cgroup/memory/cbfs-bench-verify
        mkdir -p "$CG"
        echo "$limit" >"$CG/memory.limit_in_bytes"
        echo $$ >"$CG/tasks"
    else
        die "MEM_LIMIT: no memory cgroup here"
    fi
    note "timed runs in memory cgroup $CG, limit $MEM_LIMIT ($limit bytes)"
fi

ORDER=()
for ((r = 1; r <= RUNS; r++)); do
    first=$FIRST
    if ((r % 2 == 0)); then [[ $FIRST == cbfs ]] && first=pgbackrest || first=cbfs; fi
    ORDER+=("$first")
    note "run $r ($first first)"
    if [[ $first == cbfs ]]; then run_cbfs "$r"; run_pgbr "$r"; else run_pgbr "$r"; run_cbfs "$r"; fi
done

# ---- report ---------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b ? a / b : 0 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b ? 100 * a / b : 0 }'; }
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.2f", s / NR }'; }
iec() { numfmt --to=iec --format=%.2f "$1"; }

{
    echo
    echo "SCALE=$SCALE JOBS=$JOBS RUNS=$RUNS FIRST=$FIRST DROP_CACHES=$DROP_CACHES MEM_LIMIT=${MEM_LIMIT:-none}; databases $DBSIZE bytes ($(iec "$DBSIZE")), sum of pg_database_size"
    echo "cbfs $(sha256sum "$CBFS" | cut -c1-16); $("$PGBIN/postgres" --version); $(pgbackrest version)"
    [[ -z $GO_FILE ]] || echo "$GO_NOTE"
    echo "full backups (information): cbfs $T_CBFS_BACKUP s, pgBackRest $T_PGBR_BACKUP s"
    echo
    printf '| %-4s | %-10s | %-5s | %8s | %-70s | %16s | %8s | %s |\n' run tool first "wall s" split \
        "local disk peak" "disk/DB" "machine busy CPU s (idle before)"
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------ ------------ ------- ---------- \
        ------------------------------------------------------------------------ ------------------ ---------- -----
    cw=() pw=() cd=() pd=()
    for ((r = 1; r <= RUNS; r++)); do
        c=cbfs_$r p=pgbr_$r
        cw+=("$(eval echo "\$T_$c")") pw+=("$(eval echo "\$T_$p")")
        cd+=("$(eval echo "\$D_$c")") pd+=("$(eval echo "\$D_$p")")
        printf '| %-4s | %-10s | %-5s | %8s | %-70s | %16s | %8s | %s |\n' "$r" cbfs \
            "$([[ ${ORDER[r - 1]} == cbfs ]] && echo yes || echo no)" "$(eval echo "\$T_$c")" \
            "$(printf 'mount+start+recovery %s, checks+stop+unmount %s' \
                "$(eval echo "\$R_$c")" \
                "$(awk -v v="$(eval echo "\$V_$c")" -v r="$(eval echo "\$R_$c")" 'BEGIN { printf "%.2f", v - r }')")" \
            "$(eval echo "\$D_$c")" "$(pct "$(eval echo "\$D_$c")" "$DBSIZE")%" \
            "$(eval echo "\$B_$c") ($(eval echo "\$I_$c")/s)$([[ -z $(eval echo "\$O_$c") ]] || echo "; others: $(eval echo "\$O_$c")")"
        printf '| %-4s | %-10s | %-5s | %8s | %-70s | %16s | %8s | %s |\n' "$r" pgbackrest \
            "$([[ ${ORDER[r - 1]} == pgbackrest ]] && echo yes || echo no)" "$(eval echo "\$T_$p")" \
            "restore $(eval echo "\$S_${p}_restore"), start+recovery $(eval echo "\$S_${p}_start"), checks $(eval echo "\$S_${p}_checks"), stop $(eval echo "\$S_${p}_stop")" \
            "$(eval echo "\$D_$p")" "$(pct "$(eval echo "\$D_$p")" "$DBSIZE")%" \
            "$(eval echo "\$B_$p") ($(eval echo "\$I_$p")/s)$([[ -z $(eval echo "\$O_$p") ]] || echo "; others: $(eval echo "\$O_$p")")"
    done
    echo
    mc=$(mean "${cw[@]}") mp=$(mean "${pw[@]}")
    echo "mean wall: cbfs $mc s, pgBackRest $mp s: cbfs is $(ratio "$mp" "$mc")x faster (per run: $(for ((r = 1; r <= RUNS; r++)); do printf '%s ' "$(ratio "${pw[r - 1]}" "${cw[r - 1]}")x"; done))"
    maxc=$(printf '%s\n' "${cd[@]}" | sort -n | tail -1) maxp=$(printf '%s\n' "${pd[@]}" | sort -n | tail -1)
    echo "local disk peak: cbfs $maxc bytes ($(iec "$maxc"), $(pct "$maxc" "$DBSIZE")% of the databases), pgBackRest $maxp bytes ($(iec "$maxp"), $(pct "$maxp" "$DBSIZE")%)"
    echo "cbfs verify peak RSS (GNU time, largest process of verify, its mount and its server): $(for ((r = 1; r <= RUNS; r++)); do printf '%.0f MB ' "$(awk -v k="$(eval echo "\$M_cbfs_$r")" 'BEGIN { print k / 1024 }')"; done); cpu user+sys (all of them): $(for ((r = 1; r <= RUNS; r++)); do printf '%s s ' "$(eval echo "\$C_cbfs_$r")"; done)"
    echo "pgBackRest copy: removing it afterwards took $(for ((r = 1; r <= RUNS; r++)); do printf '%s s ' "$(eval echo "\$S_pgbr_${r}_rm")"; done)(not counted)"
    echo
    echo "cbfs verify, disk at the peak (du -xB1 -d4, run 1):"
    sed "s|$W/vwork|vwork|; s/^/  /" "$W/time/cbfs_1.disk.detail" 2>/dev/null || true
    echo
    echo "cbfs verify JSON, run 1:"
    python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(json.dumps(j))' "$W/log/cbfs_1.json"
    echo "pgBackRest-side checks JSON, run 1 (without failures):"
    python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(json.dumps(j))' "$W/log/pgbr_1.json"
} | tee "$W/results.txt"

note "done; results in $W/results.txt"
