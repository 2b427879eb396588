# Shared harness of the integration tests, sourced by each tests/integration/*.sh.
#
# Each test prints TAP on stdout.  It runs as root (CI does), creates its
# own temp dir, runs its PostgreSQL 15 clusters there as the unprivileged
# `postgres` user on free ports with their sockets in the temp dir (never
# the system cluster on 5432), and on exit -- normal, error, INT or TERM --
# stops every server it started, by postmaster pid, and removes the temp dir
# (kept when CBFS_KEEP_TMP=1 or when a test failed and CBFS_KEEP_FAILED=1).
#
# Environment, set by tests/integration/meson.build:
#   CBFS          the cbfs executable under test
#   MOUNT_CBFS    the mount.cbfs executable (only the mount tests need it)
#   CBFS_SRCDIR   the source tree
# Exported here for every cbfs run:
#   CBFS_CACHE_DIR  the local dedup cache, inside the temp dir (one per user)

set -uo pipefail

PGBIN=/usr/lib/postgresql/15/bin
export PGBIN

# ---------------------------------------------------------------- TAP

_tap_n=0
_tap_failed=0

# diag MESSAGE...: each message on its own "# " lines.
diag() {
	local m line
	for m in "$@"; do
		while IFS= read -r line; do
			printf '# %s\n' "$line"
		done <<<"$m"
	done
}

# pass NAME / fail NAME [DIAG...]: one test point; fail returns 1, so that
# `is ... || diag ...` adds details.
pass() {
	_tap_n=$((_tap_n + 1))
	printf 'ok %d - %s\n' "$_tap_n" "$1"
}

fail() {
	_tap_n=$((_tap_n + 1))
	_tap_failed=$((_tap_failed + 1))
	printf 'not ok %d - %s\n' "$_tap_n" "$1"
	shift
	(($#)) && diag "$@"
	return 1
}

# ok NAME CMD [ARG...]: passes when CMD exits 0.
ok() {
	local name=$1
	shift
	local out
	if out=$("$@" 2>&1); then
		pass "$name"
	else
		fail "$name" "command failed (exit $?): $*" "$out"
	fi
}

# is GOT EXPECTED NAME: string equality.
is() {
	if [[ $1 == "$2" ]]; then
		pass "$3"
	else
		fail "$3" "     got: '$1'" "expected: '$2'"
	fi
}

# isnt GOT UNEXPECTED NAME
isnt() {
	if [[ $1 != "$2" ]]; then
		pass "$3"
	else
		fail "$3" "     got: '$1'" "expected anything else"
	fi
}

# like GOT ERE NAME: GOT matches the extended regular expression.
like() {
	if [[ $1 =~ $2 ]]; then
		pass "$3"
	else
		fail "$3" "     got: '$1'" "expected to match: /$2/"
	fi
}

# cmp_ok A OP B NAME: numeric comparison, OP one of -eq -ne -lt -le -gt -ge.
cmp_ok() {
	if [[ $1 =~ ^-?[0-9]+$ && $3 =~ ^-?[0-9]+$ ]] && (($1 $(_cmp_op "$2") $3)); then
		pass "$4"
	else
		fail "$4" "'$1' $2 '$3' is false"
	fi
}
_cmp_op() {
	case $1 in
	-eq) echo '==' ;; -ne) echo '!=' ;; -lt) echo '<' ;;
	-le) echo '<=' ;; -gt) echo '>' ;; -ge) echo '>=' ;;
	*) echo "$1" ;;
	esac
}

bail() {
	printf 'Bail out! %s\n' "$*"
	exit 1
}

# skip_all REASON: the whole test needs something that is not there.
skip_all() {
	printf '1..0 # SKIP %s\n' "$*"
	exit 77
}

# done_testing: prints the plan and exits 0 when every test passed.
done_testing() {
	printf '1..%d\n' "$_tap_n"
	if ((_tap_failed)); then
		_dump_logs
		exit 1
	fi
	exit 0
}

# ---------------------------------------------------------------- prerequisites

((EUID == 0)) || skip_all "integration tests run as root (they switch to the postgres user)"
getent passwd postgres >/dev/null || skip_all "no postgres system user (scripts/deps creates it)"
command -v runuser >/dev/null || skip_all "runuser (util-linux) is missing"
for _f in initdb pg_ctl postgres psql pgbench pg_controldata; do
	[[ -x $PGBIN/$_f ]] || skip_all "$PGBIN/$_f is missing (scripts/deps installs postgresql-15)"
done
[[ -x /usr/bin/python3 ]] || skip_all "/usr/bin/python3 is missing"
[[ -n ${CBFS:-} ]] || bail "CBFS is not set (run through meson test)"
[[ -x $CBFS ]] || bail "$CBFS is not an executable (not built?)"
CBFS_SRCDIR=${CBFS_SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# relative paths (CBFS=build/cli/cbfs) still work after the cd below
CBFS=$(realpath "$CBFS")
[[ -n ${MOUNT_CBFS:-} ]] && MOUNT_CBFS=$(realpath "$MOUNT_CBFS")

# ---------------------------------------------------------------- temp dir and cleanup

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cbfs-it.XXXXXX") || bail "mktemp failed"
chmod 755 "$TMP"
chown postgres:postgres "$TMP"
cd "$TMP" || bail "cd $TMP"
SOCK=$TMP/sock
mkdir -p "$SOCK" "$TMP/cache-root" "$TMP/cache-postgres"
chown postgres:postgres "$SOCK" "$TMP/cache-postgres"
export CBFS_CACHE_DIR=$TMP/cache-root

# The servers run archive_command/restore_command as postgres: when the
# binary under test sits where postgres cannot reach it (a clone under
# /root), run a copy in the temp dir instead, the same for every user.
# mount.cbfs writes a restore_command calling the cbfs next to it: copied
# along with cbfs.
MOUNT_CBFS=${MOUNT_CBFS:-}
if ! runuser -u postgres -- test -x "$CBFS"; then
	mkdir -p "$TMP/bin"
	cp "$CBFS" "$TMP/bin/cbfs"
	chmod 755 "$TMP/bin" "$TMP/bin/cbfs"
	CBFS=$TMP/bin/cbfs
	if [[ -n $MOUNT_CBFS && -x $MOUNT_CBFS ]]; then
		cp "$MOUNT_CBFS" "$TMP/bin/mount.cbfs"
		chmod 755 "$TMP/bin/mount.cbfs"
		MOUNT_CBFS=$TMP/bin/mount.cbfs
	fi
fi
export CBFS MOUNT_CBFS

declare -A PG_PORT=()    # NAME -> port of a server this test started
declare -A PG_PID=()     # NAME -> its postmaster's pid (for a dead mount)
declare -a _mounts=()    # mount points this test mounted on
declare -a _overlays=()  # mount.log files of its persistent overlays
declare -a _bg_pids=()   # background jobs to end at exit
declare -a _used_ports=()
declare -a _exit_hooks=() # commands run at exit once servers and mounts are gone

# at_exit CMD...: runs CMD at exit, after every server and mount of the test
# is gone and before the temp dir is removed (e.g. to stop an S3 server).
at_exit() {
	_exit_hooks+=("$(printf '%q ' "$@")")
}

_cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local pid
	for pid in "${_bg_pids[@]}"; do
		kill -9 "$pid" 2>/dev/null
	done
	local name
	for name in "${!PG_PORT[@]}"; do
		_pg_kill "$name"
	done
	declare -F _unmount_all >/dev/null && _unmount_all
	local hook
	for hook in "${_exit_hooks[@]}"; do
		eval "$hook"
	done
	if [[ ${CBFS_KEEP_TMP:-} == 1 || (${CBFS_KEEP_FAILED:-} == 1 && $_tap_failed -gt 0) ]]; then
		diag "kept $TMP"
	else
		# never into a mount that could not be unmounted
		rm -rf --one-file-system "$TMP"
	fi
	exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# background CMD...: runs CMD in the background, killed at exit if still
# running; its pid is in $BG_PID.
background() {
	"$@" &
	BG_PID=$!
	_bg_pids+=("$BG_PID")
}

_dump_logs() {
	local f
	for f in "$TMP"/*.log "${_overlays[@]}" "$TMP"/cache-*/*/overlay-*/mount.log; do
		[[ -f $f ]] || continue
		diag "---- last lines of ${f#"$TMP"/}"
		diag "$(tail -n 25 "$f")"
	done
}

# ---------------------------------------------------------------- running commands

# run CMD [ARG...]: runs CMD (timeout 300 s) and sets RC, OUT and ERR
# (stdout and stderr, trailing newlines removed).
run() {
	timeout -k 10 "${RUN_TIMEOUT:-300}" "$@" >"$TMP/run.out" 2>"$TMP/run.err"
	RC=$?
	OUT=$(<"$TMP/run.out")
	ERR=$(<"$TMP/run.err")
}

# "${AS_PG[@]}" CMD [ARG...]: runs CMD as postgres.
AS_PG=(runuser -u postgres -- env CBFS_CACHE_DIR="$TMP/cache-postgres")

# cbfs ARG...: runs cbfs as root through run (sets RC, OUT, ERR).
cbfs() {
	run "$CBFS" "$@"
}

# cbfs_pg ARG...: runs cbfs as postgres through run.
cbfs_pg() {
	run "${AS_PG[@]}" "$CBFS" "$@"
}

# ok_cbfs NAME ARG...: runs cbfs as root and passes when it exits 0.
ok_cbfs() {
	local name=$1
	shift
	cbfs "$@"
	if ((RC == 0)); then
		pass "$name"
	else
		fail "$name" "cbfs $* exited $RC" "stdout: $OUT" "stderr: $ERR"
	fi
}

# json_get JSON EXPR: evaluates a Python expression on the parsed JSON `j`,
# prints the result (lists one item a line).
json_get() {
	/usr/bin/python3 -c '
import json, sys
j = json.loads(sys.argv[1])
r = eval(sys.argv[2])
if isinstance(r, list):
    for x in r: print(x)
elif isinstance(r, bool):
    print("true" if r else "false")
else:
    print(r)
' "$1" "$2"
}

# repo_init PATH [cbfs init options]: a repository that both root (backup,
# restore) and postgres (wal-push, wal-fetch) use: created by postgres.
repo_init() {
	local repo=$1
	shift
	cbfs_pg init "$repo" "$@"
	((RC == 0)) || bail "cbfs init $repo failed ($RC): $ERR"
}

# ---------------------------------------------------------------- PostgreSQL

datadir() { echo "$TMP/$1"; }

# free_port: a port in 20000-39999 that nothing listens on and that this
# test has not handed out.
free_port() {
	local p i u
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 20000))
		for u in "${_used_ports[@]}"; do
			[[ $u == "$p" ]] && continue 2
		done
		[[ -e $SOCK/.s.PGSQL.$p ]] && continue
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
		_used_ports+=("$p")
		echo "$p"
		return 0
	done
	bail "no free port found"
}

# pg_init NAME [initdb option...]: a new cluster in $TMP/NAME, checksums on.
pg_init() {
	local name=$1
	shift
	local dir
	dir=$(datadir "$name")
	runuser -u postgres -- "$PGBIN/initdb" -k -D "$dir" -U postgres -A trust \
		--no-instructions "$@" >"$TMP/$name.initdb.log" 2>&1 ||
		bail "initdb $name failed: $(tail -n 5 "$TMP/$name.initdb.log")"
	rm -f "$TMP/$name.initdb.log"
	pg_conf "$name" "log_line_prefix = '%m [%p] '" "log_min_messages = info"
}

# pg_conf NAME LINE...: appends settings to NAME's postgresql.conf.  Settings
# that a restored copy must not inherit (port, sockets) are given at start.
pg_conf() {
	local name=$1
	shift
	printf '%s\n' "$@" >>"$(datadir "$name")/postgresql.conf"
}

# pg_archive NAME REPO: archive NAME's WAL into REPO with cbfs wal-push.
pg_archive() {
	pg_conf "$1" "archive_mode = on" "archive_command = '$CBFS wal-push $2 %p'"
}

# pg_start NAME [-c name=value...]: starts NAME on a free port, sets
# PG_PORT[NAME]; waits until it accepts connections.
pg_start() {
	local name=$1
	shift
	local dir port
	dir=$(datadir "$name")
	port=$(free_port)
	if ! runuser -u postgres -- env CBFS_CACHE_DIR="$TMP/cache-postgres" \
		"$PGBIN/pg_ctl" -D "$dir" -l "$TMP/$name.log" -w -t 300 \
		-o "-p $port -k $SOCK -c listen_addresses='' $*" start >/dev/null 2>&1; then
		PG_PORT[$name]=$port # stop whatever is left of it
		PG_PID[$name]=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null)
		fail "start $name" "$(tail -n 20 "$TMP/$name.log" 2>/dev/null)"
		return 1
	fi
	PG_PORT[$name]=$port
	PG_PID[$name]=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null)
}

# pg_stop NAME [MODE]: stops NAME (fast by default).
pg_stop() {
	local name=$1 mode=${2:-fast}
	runuser -u postgres -- "$PGBIN/pg_ctl" -D "$(datadir "$name")" -m "$mode" -w -t 120 \
		stop >/dev/null 2>&1 || _pg_kill "$name"
	unset "PG_PORT[$name]"
	unset "PG_PID[$name]"
}

# mq REPO LABEL SQL: one query on LABEL's manifest, rows tab-separated;
# block references can be read from table blocks (manifest.py)
mq() { /usr/bin/python3 "$CBFS_SRCDIR/tests/integration/manifest.py" query "$@"; }
# medit REPO LABEL SQL: runs SQL on LABEL's manifest (blocks may be changed)
# and stores it back with a record that matches
medit() { /usr/bin/python3 "$CBFS_SRCDIR/tests/integration/manifest.py" edit "$@"; }

# _pg_kill NAME: stops NAME immediately; kill -9 of its postmaster when
# pg_ctl cannot.  Only a pid read from NAME's postmaster.pid that is a
# postgres process running in NAME's data directory is killed.
#
# A data directory on a mount whose daemon died cannot be read: then the pid
# recorded at start is used, under the same conditions, and the postmaster
# and its children are killed with kill -9.
_pg_kill() {
	local dir pid
	dir=$(datadir "$1")
	pid=$(timeout 10 head -n 1 "$dir/postmaster.pid" 2>/dev/null)
	if [[ ! $pid =~ ^[0-9]+$ ]]; then
		pid=${PG_PID[$1]:-}
		[[ $pid =~ ^[0-9]+$ ]] || return 0
		[[ $(ps -o comm= -p "$pid" 2>/dev/null) == postgres ]] || return 0
		[[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$dir" ]] || return 0
		pg_kill9 "$1"
		return 0
	fi
	[[ $(ps -o comm= -p "$pid" 2>/dev/null) == postgres ]] || return 0
	[[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$(readlink -f "$dir")" ]] || return 0
	runuser -u postgres -- timeout 30 "$PGBIN/pg_ctl" -D "$dir" -m immediate -w -t 20 \
		stop >/dev/null 2>&1 && return 0
	kill -9 "$pid" 2>/dev/null
	pg_kill9 "$1"
}

# procs_in DIR: the pids of the processes whose working directory is DIR
# (every process of a cluster runs in its data directory).
procs_in() {
	local d p
	d=$(readlink -f "$1" 2>/dev/null || echo "$1")
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/cwd" 2>/dev/null) == "$d" || $(readlink "$p/cwd" 2>/dev/null) == "$1" ]] &&
			echo "${p#/proc/}"
	done
}

# pg_kill9 NAME: kill -9 of every process of NAME (the postmaster recorded
# at start, its children, and whatever else runs in its data directory);
# waits (30 s) until they are all gone.  Fails if one is left.
pg_kill9() {
	local dir pm i
	dir=$(datadir "$1")
	pm=${PG_PID[$1]:-}
	for ((i = 0; i < 300; i++)); do
		local -a pids=() kids=()
		mapfile -t pids < <(procs_in "$dir")
		if [[ $pm =~ ^[0-9]+$ && $(ps -o comm= -p "$pm" 2>/dev/null) == postgres ]]; then
			mapfile -t kids < <(pgrep -P "$pm")
			pids+=("$pm" "${kids[@]}")
		fi
		((${#pids[@]})) || return 0
		kill -9 "${pids[@]}" 2>/dev/null
		sleep 0.1
	done
	return 1
}

# conninfo NAME [DB]
conninfo() {
	echo "host=$SOCK port=${PG_PORT[$1]} user=postgres dbname=${2:-postgres}"
}

# psql_as NAME DB SQL: runs SQL as postgres; prints unaligned tuples-only
# output; exits non-zero on any error.
psql_as() {
	runuser -u postgres -- "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
		-h "$SOCK" -p "${PG_PORT[$1]}" -U postgres -d "$2" -c "$3"
}

# sql NAME DB SQL: like psql_as, but a failure is a failed test.
sql() {
	local out
	if ! out=$(psql_as "$1" "$2" "$3" 2>&1); then
		fail "SQL on $1/$2: $3" "$out"
		echo "ERROR"
		return 1
	fi
	printf '%s\n' "$out"
}

# wait_sql NAME DB SQL WANT [SECONDS]: until SQL on NAME answers WANT
# (30 s by default); 1 if it never does.  The caller asserts the answer.
wait_sql() {
	local i
	for ((i = 0; i < ${5:-30} * 10; i++)); do
		[[ $(psql_as "$1" "$2" "$3" 2>/dev/null) == "$4" ]] && return 0
		sleep 0.1
	done
	return 1
}

# pgbench_as NAME ARG...
pgbench_as() {
	local name=$1
	shift
	runuser -u postgres -- "$PGBIN/pgbench" -h "$SOCK" -p "${PG_PORT[$name]}" -U postgres "$@"
}

# sysid NAME: the cluster's database system identifier.
sysid() {
	"$PGBIN/pg_controldata" "$(datadir "$1")" | sed -n 's/^Database system identifier: *//p'
}

# pg_wait_promoted NAME: waits (120 s) until NAME has left recovery.
pg_wait_promoted() {
	local i r
	for ((i = 0; i < 240; i++)); do
		r=$(psql_as "$1" postgres "select pg_is_in_recovery()" 2>/dev/null)
		[[ $r == f ]] && return 0
		sleep 0.5
	done
	return 1
}

# pg_switch_and_archive NAME: switches to a new WAL segment and waits (60 s)
# until the finished one is archived; prints its name.
pg_switch_and_archive() {
	local name=$1 seg i
	seg=$(psql_as "$name" postgres "
		select pg_walfile_name(pg_current_wal_insert_lsn())
		from (select pg_logical_emit_message(false, 'cbfs', 'switch')) m") || return 1
	psql_as "$name" postgres "select pg_switch_wal()" >/dev/null || return 1
	for ((i = 0; i < 120; i++)); do
		if [[ -e $(datadir "$name")/pg_wal/archive_status/$seg.done ||
			$(psql_as "$name" postgres "
				select coalesce(left(last_archived_wal, 24), '') >= '$seg'
				from pg_stat_archiver") == t ]]; then
			echo "$seg"
			return 0
		fi
		sleep 0.5
	done
	return 1
}

# cbfs_restore SPEC NAME [restore option...]: restores SPEC into $TMP/NAME
# as root (sets RC, OUT, ERR), then gives the copy and the directories of
# its --tablespace-map options to postgres, who runs it.
cbfs_restore() {
	local spec=$1 name=$2
	shift 2
	local dir
	dir=$(datadir "$name")
	cbfs restore "$spec" "$dir" "$@"
	((RC == 0)) || return 1
	local -a dirs=("$dir")
	local a prev=
	for a in "$@"; do
		if [[ $prev == --tablespace-map ]]; then
			dirs+=("${a#*=}")
		elif [[ $a == --tablespace-map=* ]]; then
			a=${a#--tablespace-map=}
			dirs+=("${a#*=}")
		fi
		prev=$a
	done
	chown -R postgres:postgres "${dirs[@]}"
}

# table_hashes NAME DB: one line per user table of DB,
# "schema.table rows md5-of-sorted-rows", sorted.
table_hashes() {
	local name=$1 db=$2 t
	local tables
	tables=$(psql_as "$name" "$db" "
		select format('%I.%I', n.nspname, c.relname)
		from pg_class c join pg_namespace n on n.oid = c.relnamespace
		where c.relkind in ('r', 'p', 'm')
		  and n.nspname not in ('pg_catalog', 'information_schema')
		  and n.nspname !~ '^pg_toast'
		order by 1") || return 1
	for t in $tables; do
		printf '%s %s\n' "$t" "$(psql_as "$name" "$db" \
			"select count(*) || ' ' || md5(coalesce(string_agg(h, ',' order by h), '')) from (select md5(x::text) h from $t x) s")" ||
			return 1
	done
}

# lo_hashes NAME DB: "oid md5" of every large object of DB.
lo_hashes() {
	psql_as "$1" "$2" "select oid || ' ' || md5(lo_get(oid)) from pg_largeobject_metadata order by oid"
}

# amcheck NAME DB: bt_index_check(heapallindexed) on every valid B-tree index
# of DB, system catalogs included; prints the indexes checked, one a line.
amcheck() {
	psql_as "$1" "$2" "create extension if not exists amcheck" >/dev/null &&
		psql_as "$1" "$2" "
		select c.oid::regclass, bt_index_check(c.oid, true)
		from pg_index i
		join pg_class c on c.oid = i.indexrelid
		join pg_am am on am.oid = c.relam
		where am.amname = 'btree' and i.indisready and i.indisvalid
		  and c.relpersistence <> 't'"
}

# ---------------------------------------------------------------- mounts

# need_mount: skips the whole test when FUSE or mount.cbfs is not there.
need_mount() {
	[[ -n $MOUNT_CBFS ]] || bail "MOUNT_CBFS is not set (run through meson test)"
	[[ -x $MOUNT_CBFS ]] || bail "$MOUNT_CBFS is not an executable (not built?)"
	[[ -c /dev/fuse ]] || skip_all "/dev/fuse is missing (FUSE is needed to mount)"
	command -v fusermount3 >/dev/null || skip_all "fusermount3 is missing (scripts/deps installs fuse3)"
}

# is_mounted DIR: DIR is a mount point in /proc/self/mountinfo (also when
# its daemon is dead and stat fails).
is_mounted() {
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# mount_count DIR: how many mounts are stacked on DIR.
mount_count() {
	awk -v m="$1" '$5 == m { n++ } END { print n + 0 }' /proc/self/mountinfo
}

# mount_daemon_pid DIR: the pid of the mount.cbfs daemon serving DIR.
mount_daemon_pid() {
	local p
	for p in $(pgrep -x mount.cbfs); do
		if tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | grep -qxF "$1"; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# cbfs_mount SPEC DIR [mount.cbfs option...]: runs mount.cbfs as root
# (sets RC, OUT, ERR); DIR (absolute) is unmounted at exit.  With -o
# overlay=DIR its mount.log is shown when the test fails.
cbfs_mount() {
	local mnt=$2 m a
	for m in "${_mounts[@]}"; do
		[[ $m == "$mnt" ]] && break
	done
	[[ ${m:-} == "$mnt" ]] || _mounts+=("$mnt")
	for a in "$@"; do
		if [[ $a =~ (^|,)overlay=([^,]+) && " ${_overlays[*]} " != *" ${BASH_REMATCH[2]}/mount.log "* ]]; then
			_overlays+=("${BASH_REMATCH[2]}/mount.log")
		fi
	done
	run "$MOUNT_CBFS" "$@"
}

# cbfs_umount DIR: cbfs umount DIR (sets RC, OUT, ERR).
cbfs_umount() {
	run "$CBFS" umount "$1"
}

# wait_gone PID SECONDS: waits until PID has exited.
wait_gone() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

# _unmount_all: at exit, every mount of this test is unmounted (lazily when
# it is busy or dead) and its daemon ended.
_unmount_all() {
	local mnt pid i
	for mnt in "${_mounts[@]}"; do
		for ((i = 0; i < 10 && $(mount_count "$mnt") > 0; i++)); do
			pid=$(mount_daemon_pid "$mnt")
			timeout 20 "$CBFS" umount "$mnt" >/dev/null 2>&1 ||
				umount -l "$mnt" >/dev/null 2>&1
			if [[ -n $pid ]] && ! wait_gone "$pid" 10; then
				[[ $(ps -o comm= -p "$pid" 2>/dev/null) == mount.cbfs ]] && kill -9 "$pid" 2>/dev/null
			fi
		done
		# a daemon whose mount is gone but that is still running
		while pid=$(mount_daemon_pid "$mnt"); do
			kill -9 "$pid" 2>/dev/null
			wait_gone "$pid" 5 || break
		done
	done
}

# ---------------------------------------------------------------- pause points
# Forced interleavings of two cbfs processes (cbfs_test_pause in lib/util.c):
# a process started with bg_cbfs stops at each named point until released.

PAUSE=$TMP/pause
mkdir -p "$PAUSE"

# bg_cbfs NAME POINTS ARG...: cbfs ARG... as root in the background, pausing
# at POINTS (comma-separated; "none" for none); output in $TMP/NAME.out and
# .err, pid in $BG_PID (killed at exit if still running).
bg_cbfs() {
	local name=$1 points=$2
	shift 2
	CBFS_TEST_PAUSE=$points CBFS_TEST_PAUSE_DIR=$PAUSE "$CBFS" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	BG_PID=$!
	_bg_pids+=("$BG_PID")
}

# wait_reached POINT: waits (up to 60 s) until a process has paused at POINT.
wait_reached() {
	local i
	for ((i = 0; i < 1200; i++)); do
		[[ -e $PAUSE/$1.reached ]] && return 0
		sleep 0.05
	done
	return 1
}

# release POINT: lets the process paused at POINT go on.
release() { touch "$PAUSE/$1.go"; }

# ---------------------------------------------------------------- misc

# check_error NAME CODE MESSAGE: the last run exited CODE (nz: any non-zero
# code) with exactly MESSAGE (one line) on stderr.
check_error() {
	local code_ok=0
	if [[ $2 == nz ]]; then
		((RC != 0)) && code_ok=1
	elif [[ $RC == "$2" ]]; then
		code_ok=1
	fi
	if ((code_ok)) && [[ $ERR == "$3" ]]; then
		pass "$1"
	else
		fail "$1" "exit: got $RC, expected $2" "stderr:   '$ERR'" "expected: '$3'"
	fi
}

# flip_byte FILE OFFSET: inverts the bits of one byte of FILE in place.
flip_byte() {
	/usr/bin/python3 -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]))
    b = f.read(1)
    f.seek(int(sys.argv[2]))
    f.write(bytes([b[0] ^ 0xff]))
' "$1" "$2"
}

# labels REPO: the labels of REPO's backups, one a line, in list order.
labels() {
	cbfs list "$1" --json
	((RC == 0)) || {
		echo "cbfs list failed ($RC): $ERR"
		return 1
	}
	json_get "$OUT" '[b["label"] for b in j]'
}

# backup NAME REPO LABEL [option...]: backs up cluster NAME into REPO as
# root and passes when it succeeds with its summary line.
backup() {
	local name=$1 repo=$2 label=$3
	shift 3
	cbfs backup "$repo" --pgdata "$(datadir "$name")" --dbname "$(conninfo "$name")" \
		--label "$label" "$@"
	if ((RC == 0)) && [[ $OUT == "backup $label complete:"* ]]; then
		pass "backup $label of $name"
	else
		fail "backup $label of $name" "exit $RC" "stdout: $OUT" "stderr: $ERR"
		return 1
	fi
}

# backup_spanning NAME REPO LABEL...: backs up NAME into REPO as each LABEL
# in turn, while WAL is switched all along, until a backup spans several WAL
# segments.  Sets SPAN_LABEL (the last label tried), SPAN_START and
# SPAN_STOP (its first and last segment, equal if no try spanned).
backup_spanning() {
	local name=$1 repo=$2 label switcher
	shift 2
	(
		for ((i = 0; i < 400; i++)); do
			psql_as "$name" postgres "select pg_logical_emit_message(false, 'cbfs-test', 'x');
				select pg_switch_wal()" >/dev/null 2>&1
			sleep 0.02
		done
	) &
	switcher=$!
	for label; do
		SPAN_LABEL=$label
		backup "$name" "$repo" "$label" || break
		cbfs info "$repo@$label" --json
		SPAN_START=$(json_get "$OUT" 'j["wal_start"]')
		SPAN_STOP=$(json_get "$OUT" 'j["wal_stop"]')
		[[ $SPAN_START != "$SPAN_STOP" ]] && break
	done
	kill "$switcher" 2>/dev/null
	wait "$switcher" 2>/dev/null
}

# amcheck_ok NAME DB: a test that amcheck finds nothing in DB of NAME.
amcheck_ok() {
	local out n
	if out=$(amcheck "$1" "$2" 2>&1); then
		n=$(grep -c . <<<"$out")
		if ((n > 0)); then
			pass "amcheck on $n B-tree indexes of $1/$2 finds nothing"
			return 0
		fi
	fi
	fail "amcheck on $1/$2 finds nothing" "$out"
}
