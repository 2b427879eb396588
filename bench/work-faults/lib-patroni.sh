# shellcheck shell=bash disable=SC2154 # PG_PORT, SOCK, TMP...: lib.sh's
# Patroni part of the integration harness, sourced after lib.sh by the
# Patroni tests: a real etcd 3.4 and real Patroni 3.0 members on free
# loopback ports, started and stopped by pid.
#
# need_patroni
#     skips the test (exit 77, saying why) when patroni or etcd is missing
#     (scripts/deps installs both).
# etcd_start
#     one etcd member on 127.0.0.1:$ETCD_PORT, data under $TMP/etcd.
# patroni_member NAME REPO
#     writes $TMP/NAME.yml: scope "demo", REST API on 127.0.0.1:API[NAME],
#     PostgreSQL on 127.0.0.1:PG_PORT[NAME] and sockets in $SOCK, data in
#     $TMP/NAME, archive_command and restore_command through cbfs and REPO
#     (archive_command is $TMP/archive.sh: cbfs wal-push, failing while
#     $TMP/hold-archive exists; one command, as Patroni runs it without a
#     shell when it archives before pg_rewind),
#     create_replica_methods [cbfs, basebackup] with cbfs's restore --delta.
# patroni_start NAME / patroni_kill NAME
#     starts Patroni for NAME as postgres (its log: $TMP/NAME.patroni.log);
#     kill -9 of that Patroni (its PostgreSQL is left as it is).
# patroni_wait_role NAME ROLE [SECONDS]
#     until NAME's REST API says role ROLE (leader, replica) and state running.
# patronictl ARG...
#     patronictl with $TMP/ctl.yml.

need_patroni() {
	command -v patroni >/dev/null && command -v etcd >/dev/null ||
		skip_all "Patroni or etcd is not installed (scripts/deps installs patroni and etcd-server)"
}

declare -A API PATRONI_PID

etcd_start() {
	local peer i
	ETCD_PORT=$(free_port)
	peer=$(free_port)
	background setpriv --reuid=postgres --regid=postgres --init-groups \
		etcd --name e1 --data-dir "$TMP/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$peer" \
		--initial-advertise-peer-urls "http://127.0.0.1:$peer" \
		--initial-cluster "e1=http://127.0.0.1:$peer" >"$TMP/etcd.log" 2>&1
	for ((i = 0; i < 200; i++)); do
		curl -sf "http://127.0.0.1:$ETCD_PORT/health" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	bail "etcd did not start: $(tail -n 5 "$TMP/etcd.log")"
}

patroni_member() {
	local name=$1 repo=$2 port api
	port=$(free_port)
	api=$(free_port)
	PG_PORT[$name]=$port
	API[$name]=$api
	printf '#!/bin/sh\n[ -e %s/hold-archive ] && exit 1\nexec %s wal-push "$@"\n' "$TMP" "$CBFS" >"$TMP/archive.sh"
	chmod 755 "$TMP/archive.sh"
	cat >"$TMP/$name.yml" <<-EOF
		scope: demo
		name: $name
		restapi:
		  listen: 127.0.0.1:$api
		  connect_address: 127.0.0.1:$api
		etcd3:
		  hosts: 127.0.0.1:$ETCD_PORT
		bootstrap:
		  dcs:
		    ttl: 20
		    loop_wait: 2
		    retry_timeout: 5
		    maximum_lag_on_failover: 1073741824
		    postgresql:
		      use_pg_rewind: true
		      use_slots: true
		      parameters:
		        wal_level: replica
		        hot_standby: 'on'
		        wal_log_hints: 'on'
		        max_wal_senders: 10
		        max_replication_slots: 10
		        archive_mode: 'on'
		        archive_command: '$TMP/archive.sh $repo %p'
		        log_line_prefix: '%m [%p] '
		  initdb:
		  - data-checksums
		  - auth: trust
		  pg_hba:
		  - local all all trust
		  - local replication all trust
		  - host all all 127.0.0.1/32 trust
		  - host replication all 127.0.0.1/32 trust
		postgresql:
		  listen: 127.0.0.1:$port
		  connect_address: 127.0.0.1:$port
		  data_dir: $TMP/$name
		  bin_dir: $PGBIN
		  pgpass: $TMP/$name.pgpass
		  authentication:
		    superuser:
		      username: postgres
		    replication:
		      username: postgres
		    rewind:
		      username: postgres
		  parameters:
		    unix_socket_directories: '$SOCK'
		  recovery_conf:
		    restore_command: '$CBFS wal-fetch $repo %f %p'
		  create_replica_methods:
		  - cbfs
		  - basebackup
		  cbfs:
		    command: $CBFS restore $repo@latest
		    keep_data: true
		    no_leader: true
		    delta: true
		tags:
		  nofailover: false
		  noloadbalance: false
		  clonefrom: false
		  nosync: false
	EOF
	chown postgres: "$TMP/$name.yml"
}

patroni_start() {
	local name=$1
	background setpriv --reuid=postgres --regid=postgres --init-groups \
		env CBFS_CACHE_DIR="$TMP/cache-postgres" HOME="$TMP" \
		patroni "$TMP/$name.yml" >>"$TMP/$name.patroni.log" 2>&1
	PATRONI_PID[$name]=$BG_PID
}

patroni_kill() {
	kill -9 "${PATRONI_PID[$1]}" 2>/dev/null
	wait "${PATRONI_PID[$1]}" 2>/dev/null
	unset "PATRONI_PID[$1]"
}

# patroni_state NAME: "role state" from NAME's REST API
patroni_state() {
	curl -s --max-time 2 "http://127.0.0.1:${API[$1]}/patroni" 2>/dev/null |
		/usr/bin/python3 -c 'import json,sys
try:
    j = json.load(sys.stdin); print(j.get("role", ""), j.get("state", ""))
except Exception:
    print("none none")'
}

patroni_wait_role() {
	local name=$1 role=$2 secs=${3:-120} i st
	for ((i = 0; i < secs * 4; i++)); do
		st=$(patroni_state "$name")
		# Patroni 3.0 says "master" for a leader in /patroni
		[[ $st == "$role running" || ($role == leader && $st == "master running") ]] && return 0
		sleep 0.25
	done
	diag "$name: $st after $secs s"
	return 1
}

patronictl() {
	[[ -f $TMP/ctl.yml ]] || printf 'scope: demo\netcd3:\n  hosts: 127.0.0.1:%s\n' "$ETCD_PORT" >"$TMP/ctl.yml"
	command patronictl -c "$TMP/ctl.yml" "$@"
}
