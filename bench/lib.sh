# shellcheck shell=bash
# bench/lib.sh - what the benchmarks share: messages, tools, a work
# directory, PostgreSQL servers under it (started and stopped by pid), and
# pgBackRest's configuration.  Sourced; the script sets NAME (for messages)
# and W (the work directory) first.  (bench/cluster.sh uses it; the older
# scripts still carry their own copies.)

PGBIN=/usr/lib/postgresql/15/bin
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$HERE")

die() {
	echo "$NAME: $*" >&2
	exit 1
}
note() { printf '== %s  %s\n' "$(date +%H:%M:%S)" "$*"; }

# need_root_and_pg: the checks every benchmark makes first.
need_root_and_pg() {
	[[ $(id -u) -eq 0 ]] || die "must run as root"
	[[ -x $PGBIN/postgres ]] || die "PostgreSQL 15 is not installed ($PGBIN)"
	id postgres >/dev/null 2>&1 || die "no postgres user"
}

# need_tools PACKAGE...: install the Debian packages that are missing.
need_tools() {
	local need=() p
	for p in "$@"; do
		dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
	done
	if ((${#need[@]})); then
		note "installing ${need[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	fi
}

# fresh_work: W wiped (refused while a server of ours runs there or
# something is mounted under it) and made again.
fresh_work() {
	case $W in /|"") die "refusing work directory \"$W\"" ;; esac
	if [[ -e $W ]]; then
		local pid
		for pid in $(pgrep -x postgres); do
			[[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$W"/* ]] &&
				die "a server is still running under $W (pid $pid)"
		done
		findmnt -rn -o TARGET | grep -q "^$W/" && die "something is still mounted under $W"
		rm -rf "$W"
	fi
	mkdir -p "$W"/{log,sock}
	chmod 755 "$W"
	chown postgres: "$W/log" "$W/sock"
}

# as_pg CMD...: CMD as postgres.
as_pg() { runuser -u postgres -- "$@"; }

SERVERS=() # data directories of the servers started

# pg_up DIR PORT [SETTING...]: start a server on DIR (socket in $W/sock).
pg_up() {
	local dir=$1 port=$2 opts="-p $2 -k $W/sock -c listen_addresses=''"
	shift 2
	local s
	for s in "$@"; do
		opts+=" -c $s"
	done
	as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$W/log/$(basename "$dir").log" -w -t 600 -o "$opts" start \
		>/dev/null || die "could not start $dir (see $W/log)"
	SERVERS+=("$dir")
}

# pg_down DIR: stop it (fast, then immediate).
pg_down() {
	as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w -t 120 stop >/dev/null 2>&1 ||
		as_pg "$PGBIN/pg_ctl" -D "$1" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
}

# psql_at PORT DB SQL: unaligned, tuples only, as postgres.
psql_at() {
	as_pg "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$W/sock" -p "$1" -d "$2" -c "$3"
}

# free_port: a TCP port nothing listens on.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || {
			echo "$p"
			return
		}
	done
}

# stop_servers: every server started, at exit.
stop_servers() {
	local d
	for d in "${SERVERS[@]}"; do
		if [[ -f $d/postmaster.pid ]]; then pg_down "$d"; fi
	done
	return 0
}

# wait_quiet SECONDS: wait (at most SECONDS) until the load average is low,
# so that a timed run does not share the machine.
wait_quiet() {
	local i load
	for ((i = 0; i < $1; i++)); do
		load=$(cut -d' ' -f1 /proc/loadavg)
		awk -v l="$load" 'BEGIN { exit !(l < 0.5) }' && return 0
		sleep 1
	done
}

# now: seconds since the epoch, with fractions.
now() { date +%s.%N; }
# since T0: seconds elapsed, 2 decimals.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# pgbr_global REPO: the [global] section of a pgBackRest configuration
# comparable with cbfs (zstd level 3, JOBS processes, fast start), its logs
# and locks under $W; the caller adds its stanzas.
pgbr_global() {
	printf '%s\n' "[global]" "repo1-path=$1" "repo1-retention-full=10" "compress-type=zst" \
		"compress-level=3" "process-max=$JOBS" "log-path=$W/pgbr-log" "lock-path=$W/pgbr-lock" \
		"start-fast=y"
}
