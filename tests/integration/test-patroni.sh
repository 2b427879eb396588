#!/usr/bin/env bash
# Patroni (issue 16), on real etcd 3.4 and Patroni 3.0: a replica created
# through cbfs's create_replica_methods entry (no pg_basebackup); one
# `backup --patroni` line on every member backs up exactly once, from the
# replica; the archive stays whole through a switchover and a failover with
# writes going on (check passes, history files there, a mount to a time
# after the switches has every transaction the new leader has); the former
# leader re-seeded with restore --delta rejoins as a replica.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib-patroni.sh"
need_patroni
need_mount

REPO=$TMP/repo
repo_init "$REPO"
etcd_start
patroni_member n1 "$REPO"
patroni_member n2 "$REPO"
patroni_start n1
patroni_wait_role n1 leader 90 || bail "n1 did not become leader: $(tail -n 20 "$TMP/n1.patroni.log")"
pass "Patroni bootstrapped n1 as leader"
psql_as n1 postgres "create table ticks (id int primary key, at timestamptz default clock_timestamp())" >/dev/null ||
	bail "could not create the table"
pgbench_as n1 -i -s 2 -q postgres >/dev/null 2>&1 || bail "pgbench -i failed"

# ---------------------------------------------------------------- one cron line on every member
patroni_backup() { # NAME LABEL
	cbfs backup "$REPO" --pgdata "$TMP/$1" --dbname "$(conninfo "$1")" --label "$2" \
		--patroni "http://127.0.0.1:${API[$1]}"
}
patroni_backup n1 b1
is "$RC" 0 "backup --patroni on the only member"
like "$ERR" "Patroni: this member \\(n1\\) backs up: the leader: no healthy replica" \
	"... the leader backs up when there is no replica"

# ---------------------------------------------------------------- a replica from the repository
patroni_start n2
patroni_wait_role n2 replica 120 || bail "n2 did not become a replica: $(tail -n 30 "$TMP/n2.patroni.log")"
like "$(cat "$TMP/n2.patroni.log")" "replica has been created using cbfs" \
	"Patroni created the replica with cbfs's method"
unlike=$(grep -c "using basebackup\|pg_basebackup" "$TMP/n2.patroni.log")
is "$unlike" 0 "... and never ran pg_basebackup"
wait_sql n1 postgres "select count(*) from pg_stat_replication where state = 'streaming'" 1 20
is "$(psql_as n1 postgres "select count(*) from pg_stat_replication where state = 'streaming'")" 1 \
	"the replica streams from the leader"

before=$(labels "$REPO" | wc -l)
patroni_backup n1 b2
is "$RC/$OUT" "0/member \"n2\" backs up (the first healthy replica); nothing to do on \"n1\"" \
	"backup --patroni on the leader: says which member backs up, exits 0"
patroni_backup n2 b2
is "$RC" 0 "backup --patroni on the replica backs up"
like "$ERR" "backup b2 started at .* \\(from a standby\\)" "... from the standby"
is "$(labels "$REPO" | wc -l)" "$((before + 1))" "exactly one backup for the two members"
cbfs backup "$REPO" --pgdata "$TMP/n1" --patroni "http://127.0.0.1:$(free_port)"
like "$ERR" "^cbfs: could not ask Patroni at \"http://127.0.0.1:[0-9]+\": could not reach \"http://127.0.0.1:[0-9]+/cluster\": .+$" \
	"an unreachable Patroni API: one line"
is "$RC" 4 "... exit 4"
cbfs backup "$REPO" --pgdata "$TMP/n1" --patroni "http://127.0.0.1:$ETCD_PORT"
is "$RC/$ERR" "4/cbfs: \"http://127.0.0.1:$ETCD_PORT\" is not a Patroni REST API (GET http://127.0.0.1:$ETCD_PORT/cluster: HTTP 404)" \
	"an API that is not Patroni's: one line"

# ---------------------------------------------------------------- writes through switchover and failover
CONN="host=$SOCK,$SOCK port=${PG_PORT[n1]},${PG_PORT[n2]} user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=2"
writer() { # inserts ticks one by one into whichever member is leader; logs committed ids
	local i=0
	while [[ ! -e $TMP/stop-writer ]]; do
		if runuser -u postgres -- timeout 30 "$PGBIN/psql" -X -q -d "$CONN" -c "insert into ticks (id) values ($i)" >/dev/null 2>&1; then
			echo "$i" >>"$TMP/committed"
			i=$((i + 1))
		else
			sleep 0.2
		fi
	done
}
load() { # pgbench, restarted whenever the leader goes away
	while [[ ! -e $TMP/stop-writer ]]; do
		runuser -u postgres -- timeout 30 "$PGBIN/pgbench" -n -c 2 -T 5 "$CONN" >/dev/null 2>&1 || sleep 0.5
	done
}
background writer
WRITER=$BG_PID
background load
LOAD=$BG_PID
sleep 3

patronictl switchover --leader n1 --candidate n2 --force >"$TMP/switchover.out" 2>&1
is "$?" 0 "patronictl switchover to n2"
patroni_wait_role n2 leader 120 || fail "n2 became leader" "$(tail -n 20 "$TMP/n2.patroni.log")"
patroni_wait_role n1 replica 120 || fail "n1 became a replica" "$(tail -n 20 "$TMP/n1.patroni.log")"
sleep 3

# failover: the leader's Patroni and PostgreSQL killed -9, after it wrote
# WAL its replica never received (the replica's walreceiver stopped, the
# leader's archiving held): the WAL files it completed past the point where
# the replica takes over stay behind on it, ready for archiving
N1PM=$(head -n 1 "$TMP/n1/postmaster.pid")
N2PM=$(head -n 1 "$TMP/n2/postmaster.pid")
WALRCV=$(pgrep -P "$N1PM" -f walreceiver) || fail "n1 has a walreceiver"
touch "$TMP/hold-archive"
kill -STOP "$WALRCV"
OLDTLI=$(psql_as n2 postgres "select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)::int")
# more WAL than the sockets between them can hold, then a switch
sql n2 postgres "create table filler as select g, repeat('x', 1000) t from generate_series(1, 60000) g" >/dev/null
DIVSEG=$(psql_as n2 postgres "select pg_walfile_name(pg_current_wal_lsn())")
sql n2 postgres "select pg_switch_wal()" >/dev/null
[[ -e $TMP/n2/pg_wal/archive_status/$DIVSEG.ready ]] || fail "n2 completed $DIVSEG and holds it for archiving"
# the postmaster is stopped first so that no backend forked after the list
# is taken outlives it (one waiting on a lock a killed process held would
# keep the writer's client waiting for ever)
kill -STOP "$N2PM"
N2PROCS=$(pgrep -P "$N2PM")
patroni_kill n2
kill -9 "$N2PM" $N2PROCS
rm -f "$TMP/hold-archive"
kill -CONT "$WALRCV"
pass "n2 (leader) killed -9, Patroni and PostgreSQL, with $DIVSEG written past what n1 received"
patroni_wait_role n1 leader 120 || fail "n1 took over" "$(tail -n 20 "$TMP/n1.patroni.log")"
sleep 3
touch "$TMP/stop-writer"
wait "$WRITER" "$LOAD" 2>/dev/null
cmp_ok "$(wc -l <"$TMP/committed")" -gt 20 "the writer committed through both switches ($(wc -l <"$TMP/committed") rows)"
sleep 1
T=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
sleep 1.2
sql n1 postgres "insert into ticks (id) select g from generate_series(100000, 100004) g" >/dev/null
TLI=$(psql_as n1 postgres "select timeline_id from pg_control_checkpoint()")
cmp_ok "$TLI" -ge 3 "the leader is on timeline $TLI after a switchover and a failover"
LASTSEG=$(pg_switch_and_archive n1) || fail "the leader archived its last segment"

# the former leader comes back as it is: Patroni archives its .ready WAL
# (its late pushes), rewinds it and makes it a replica
patroni_start n2
patroni_wait_role n2 replica 180 || fail "the former leader rejoined as a replica" "$(tail -n 30 "$TMP/n2.patroni.log")"
diag "the former leader's archiving at rejoin: $(grep -c 'Trying to archive' "$TMP/n2.patroni.log") WAL files tried, $(grep -c 'Failed to archive' "$TMP/n2.patroni.log") refused"
# ... those it completed before the fork are taken (the replica never
# archived them), those past the fork refused
like "$(grep -m 1 "holds WAL of timeline $OLDTLI past its end" "$TMP/n2.patroni.log")" \
	"^cbfs: WAL file \"[0-9A-F]{24}\" holds WAL of timeline $OLDTLI past its end at [0-9A-F]+/[0-9A-F]+ \(history file \"$(printf '%08X' $((OLDTLI + 1))).history\" in repository \"$REPO\"\)$" \
	"the former leader's WAL written past the fork is refused, in one line"
cbfs wal-fetch "$REPO" "$DIVSEG" "$TMP/divseg"
is "$RC/$ERR" "1/" "... and not stored: $DIVSEG is not in the repository"

# ---------------------------------------------------------------- the archive is whole
cbfs check "$REPO" --json
is "$RC" 0 "check: the repository and its WAL are whole across timelines"
for ((t = 2; t <= TLI; t++)); do
	h=$(printf '%08X.history' "$t")
	cbfs wal-fetch "$REPO" "$h" "$TMP/$h"
	is "$RC" 0 "history file $h is in the repository"
done

# the old timelines' last segments, archived by the new leaders at
# promotion, are kept apart under their .partial names
for ((t = 1; t < TLI; t++)); do
	sw=$(awk -v t="$t" '$1 == t { print $2 }' "$TMP/$(printf '%08X.history' "$TLI")")
	partial=$(/usr/bin/python3 -c 'import sys
hi, lo = (int(x, 16) for x in sys.argv[2].split("/"))
lsn = (hi << 32) | lo
print("%08X%08X%08X.partial" % (int(sys.argv[1]), lsn >> 32, (lsn & 0xFFFFFFFF) >> 24))' "$t" "$sw")
	cbfs wal-fetch "$REPO" "$partial" "$TMP/$partial"
	is "$RC" 0 "timeline $t's last segment is kept apart as $partial"
done
is "$(psql_as n1 postgres "select failed_count from pg_stat_archiver")" 0 \
	"the leader's archiver never failed"

# a mount at a time after both switches holds what the leader holds before it
MNT=$(datadir m)
mkdir -p "$MNT"
cbfs_mount "$REPO@$T" "$MNT" -o uid=postgres,gid=postgres
is "$RC/$ERR" "0/" "mount at $T, after the switchover and the failover"
if pg_start m && pg_wait_promoted m; then
	is "$(psql_as m postgres "select timeline_id from pg_control_checkpoint()")" "$((TLI + 1))" \
		"... it followed the leader's timeline (and forked the next)"
	is "$(psql_as m postgres "select string_agg(id::text, ',' order by id) from ticks")" \
		"$(psql_as n1 postgres "select string_agg(id::text, ',' order by id) from ticks where id < 100000")" \
		"... with every transaction the leader committed before that time, and none after"
	pg_stop m
fi
cbfs_umount "$MNT"

# ---------------------------------------------------------------- the former leader re-seeded
patroni_kill n2
pg_kill9 n2
cbfs restore "$REPO@latest" "$TMP/n2" --delta --standby
is "$RC/$ERR" "0/" "restore --delta --standby over the former leader"
like "$OUT" "^delta restore of backup .* complete: .* blocks the same" "... writing only what differs"
chown -R postgres: "$TMP/n2"
patroni_start n2
patroni_wait_role n2 replica 120 || fail "n2 rejoined as a replica" "$(tail -n 30 "$TMP/n2.patroni.log")"
sql n1 postgres "insert into ticks (id) values (-1)" >/dev/null
wait_sql n2 postgres "select count(*) from ticks where id = -1" 1
is "$(psql_as n2 postgres "select count(*) from ticks where id = -1")" 1 \
	"the re-seeded former leader replicates from the new leader"
cbfs check "$REPO"
is "$RC" 0 "check after the rejoin (the former leader's late pushes overwrote nothing)"

# a replica tagged nobackup is passed over: the leader backs up
sed -i 's/^  nofailover: false$/  nofailover: false\n  nobackup: true/' "$TMP/n2.yml"
kill -HUP "${PATRONI_PID[n2]}"
for ((i = 0; i < 200; i++)); do
	curl -s "http://127.0.0.1:${API[n1]}/cluster" | grep -q '"nobackup": true' && break
	sleep 0.1
done
patroni_backup n2 b3
is "$RC/$OUT" "0/member \"n1\" backs up (the leader: no healthy replica); nothing to do on \"n2\"" \
	"a replica tagged nobackup does not back up"
patroni_backup n1 b3
is "$RC" 0 "... the leader does"
like "$ERR" "Patroni: this member \(n1\) backs up: the leader: no healthy replica" "... and says why"

patroni_kill n2
patroni_kill n1
done_testing
