# shellcheck shell=bash disable=SC2154 # PG_PORT, SOCK, TMP...: lib.sh's
# Citus part of the integration harness, sourced after lib.sh by the Citus
# tests.
#
# need_citus
#     skips the test (exit 77, saying why) when the citus extension is not
#     installed into PostgreSQL 15 (scripts/deps builds it from the
#     workplace's recipe when that is there).
# citus_cluster REPO NODE...
#     a Citus cluster: the first NODE the coordinator, the others workers,
#     each a PostgreSQL 15 server started by pg_init/pg_start, archiving
#     into REPO as its node (cbfs wal-push --node NODE), with the citus
#     extension in database postgres and the workers added by their
#     socket directory and port.
# citus_sql SQL
#     runs SQL on the coordinator's database postgres (psql_as).
# trap_start NAME PORT...
#     stands in for servers that are gone: listens on $SOCK/.s.PGSQL.PORT
#     for each PORT and writes a line to $TMP/NAME.trap for every
#     connection made to one (stopped at exit).

need_citus() {
	[[ -f $PGBIN/../lib/citus.so || -f /usr/lib/postgresql/15/lib/citus.so ]] ||
		skip_all "Citus is not installed into PostgreSQL 15 (scripts/deps builds it with ../shared/recipes/citus/install.sh where that recipe is present)"
}

citus_cluster() {
	local repo=$1 coord=$2 n
	shift
	for n in "$@"; do
		pg_init "$n"
		pg_conf "$n" "shared_preload_libraries = 'citus'" "max_prepared_transactions = 20" \
			"archive_mode = on" "archive_command = '$CBFS wal-push --node $n $repo %p'" \
			"citus.log_remote_commands = off"
		pg_start "$n" || bail "could not start $n"
		psql_as "$n" postgres "create extension citus" >/dev/null || bail "no citus on $n"
	done
	psql_as "$coord" postgres "select citus_set_coordinator_host('$SOCK', ${PG_PORT[$coord]})" \
		>/dev/null || bail "citus_set_coordinator_host failed"
	shift
	for n in "$@"; do
		psql_as "$coord" postgres "select citus_add_node('$SOCK', ${PG_PORT[$n]})" >/dev/null ||
			bail "citus_add_node $n failed"
	done
	CITUS_COORD=$coord
}

citus_sql() {
	psql_as "$CITUS_COORD" postgres "$1"
}

trap_start() {
	local name=$1
	shift
	local p paths=()
	for p in "$@"; do
		paths+=("$SOCK/.s.PGSQL.$p")
	done
	/usr/bin/python3 - "$TMP/$name.trap" "${paths[@]}" <<-'PY' &
		import os, select, socket, sys, time
		log = open(sys.argv[1], "a", buffering=1)
		socks = {}
		for path in sys.argv[2:]:
		    try:
		        os.unlink(path)
		    except FileNotFoundError:
		        pass
		    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
		    s.bind(path)
		    os.chmod(path, 0o777)
		    s.listen(64)
		    socks[s.fileno()] = (s, path)
		open(sys.argv[1] + ".ready", "w").close()
		while True:
		    r, _, _ = select.select(list(socks), [], [], 1)
		    for fd in r:
		        s, path = socks[fd]
		        c, _ = s.accept()
		        log.write("%s connection to %s\n" % (time.strftime("%H:%M:%S"), path))
		        c.close()
	PY
	_bg_pids+=("$!")
	local i
	for ((i = 0; i < 100; i++)); do
		[[ -e $TMP/$name.trap.ready ]] && return 0
		sleep 0.1
	done
	bail "the trap listener did not start"
}
