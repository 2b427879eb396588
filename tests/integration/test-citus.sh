#!/usr/bin/env bash
# A Citus cluster (issue 15) in one repository: a coordinator and two
# workers (Citus 13 on PostgreSQL 15) back up and archive as nodes
# coord, w1, w2; cluster restore points are made on the coordinator while
# multi-shard transactions (two-phase commits across both workers) run,
# and once with the workload stopped; a first round of node backups is
# expired and gc rewrites the packs it shared, so everything below reads a
# repository that has lived.  Then, with the source cluster gone
# and listeners standing in for its nodes (any connection to them is a
# restored node talking to the source, which must never happen):
#   - mount --cluster --start at the busy point: every transfer wholly
#     there or wholly absent, the tables that did not change equal to the
#     source's, a tablespace on one worker, a write through the coordinator
#     landing in the workers' overlays and never in the repository;
#   - restore --cluster --start at the quiet point: every table equal to
#     the source's;
#   - verify --cluster passing, and failing on a flipped byte in a pack of
#     worker w1 only, naming w1;
#   - umount of a cluster whose node's postgres was killed;
#   - list, info, check and expire of the cluster points;
#   - every refusal, with its exact message, nothing written.
source "$(dirname "$0")/lib.sh"
source "$CBFS_SRCDIR/tests/integration/lib-citus.sh"
need_mount
need_citus

REPO=$TMP/repo
repo_init "$REPO"
citus_cluster "$REPO" coord w1 w2
# a tablespace on one worker, with a table of that worker's own
mkdir -p "$TMP/w2ts" && chown postgres:postgres "$TMP/w2ts"
psql_as w2 postgres "create tablespace w2ts location '$TMP/w2ts'" >/dev/null &&
	psql_as w2 postgres "create table w2_notes (id int primary key, note text) tablespace w2ts;
	insert into w2_notes select g, md5(g::text) from generate_series(1, 5000) g" >/dev/null ||
	bail "w2's tablespace"
citus_sql "
	create table customers (id int primary key, name text);
	select create_distributed_table('customers', 'id');
	insert into customers select g, 'customer ' || g from generate_series(1, 20000) g;
	create table accounts (id int primary key, balance bigint not null);
	select create_distributed_table('accounts', 'id', colocate_with => 'customers');
	insert into accounts select g, 1000 from generate_series(1, 1000) g;
	create table transfers (id bigserial, src int not null, dst int not null);
	select create_distributed_table('transfers', 'src', colocate_with => 'accounts');
	create table countries (code text primary key, name text);
	select create_reference_table('countries');
	insert into countries select 'c' || g, 'country ' || g from generate_series(1, 200) g;
	create table audit (id int primary key, what text);
	insert into audit select g, 'local ' || g from generate_series(1, 300) g" >/dev/null ||
	bail "could not create the tables"
is "$(citus_sql "select count(*) from pg_dist_node where isactive")" 3 "a coordinator and two workers"
# a first backup of every node, before the workload: expired and collected
# later, so that the repository the points are read from has lived
for n in coord w1 w2; do
	backup "$n" "$REPO" "b0-$n" --node "$n"
done

# the workload: transfers between random accounts, each a two-phase commit
# across both workers when its accounts live on different ones
cat >"$TMP/transfer.sql" <<'EOF'
\set a random(1, 1000)
\set b random(1, 1000)
BEGIN;
UPDATE accounts SET balance = balance - 1 WHERE id = :a;
UPDATE accounts SET balance = balance + 1 WHERE id = :b;
INSERT INTO transfers (src, dst) VALUES (:a, :b);
COMMIT;
EOF
chmod 644 "$TMP/transfer.sql"
background pgbench_as coord -n -f "$TMP/transfer.sql" -c 1 -T 600 postgres >"$TMP/pgbench.out" 2>&1
LOAD=$BG_PID
for ((i = 0; i < 100; i++)); do
	[[ $(citus_sql "select count(*) > 20 from transfers") == t ]] && break
	sleep 0.1
done
is "$(citus_sql "select count(*) > 20 from transfers")" t "the workload runs"

# ---------------------------------------------------------------- node backups and points
for n in coord w1 w2; do
	backup "$n" "$REPO" "b1-$n" --node "$n"
done
before=$(citus_sql "select count(*) from transfers")
cbfs restore-point "$REPO" busy --dbname "$(conninfo coord)"
is "$RC" 0 "a cluster restore point while the workload runs"
after=$(citus_sql "select count(*) from transfers")
like "$OUT" "^cluster restore point busy created on 3 nodes:" "... on every node"
for n in coord w1 w2; do
	like "$OUT" $'\n  '"$n +group [0-2] +[0-9A-F]+/[0-9A-F]+ \\(timeline 1\\)" "... $n's LSN of the point"
done
# the workload stops: pgbench itself (the job is the shell that started it)
pkill -f "pgbench.*$TMP/transfer.sql"
for ((i = 0; i < 100; i++)); do
	pgrep -f "pgbench.*$TMP/transfer.sql" >/dev/null || break
	sleep 0.1
done
wait "$LOAD" 2>/dev/null
is "$(pgrep -f "pgbench.*$TMP/transfer.sql")" "" "the workload has stopped"
STATIC="customers countries audit"
hashes() { # NAME TABLE...: "table rows md5" of each table, through NAME's server
	local name=$1 t
	shift
	for t in "$@"; do
		printf '%s %s\n' "$t" "$(psql_as "$name" postgres "select count(*) || ' ' || md5(coalesce(string_agg(h, ',' order by h), '')) from (select md5(x::text) h from $t x) s")"
	done
}
SRC_STATIC=$(hashes coord $STATIC)
SRC_ALL=$(hashes coord $STATIC accounts transfers)
SRC_W2=$(hashes w2 w2_notes)
cbfs restore-point "$REPO" quiet --dbname "$(conninfo coord)"
is "$RC" 0 "a cluster restore point with the workload stopped"

# ---------------------------------------------------------------- a repository that has lived
# the first backups expire (the points need the later ones) and gc rewrites
# the packs they shared with them: from here on, what the points need is
# read through relocation maps
cbfs expire "$REPO" --keep-last 1
like "$OUT" "w1: expire  b0-w1" "expire: the first backups go"
cbfs gc "$REPO" --max-waste 0
like "$OUT" "gc complete: removed [0-9]+ packs?, rewrote [1-9][0-9]* packs?" \
	"gc rewrites the packs they shared with the later backups"

# ---------------------------------------------------------------- refusals of restore-point
s=$SOCK/.s.PGSQL.${PG_PORT[w2]}
mv "$s" "$s.hidden"
cbfs restore-point "$REPO" nope --dbname "$(conninfo coord)"
mv "$s.hidden" "$s"
like "$ERR" "^cbfs: could not create cluster restore point \"nope\": could not connect to Citus worker group 2 at $SOCK:${PG_PORT[w2]}: could not connect to the server: " \
	"a worker unreachable: refused, naming its group and address"
is "$RC" 4 "... exit 4"
ok "... nothing written" test ! -e "$REPO/cluster-points/nope" -a ! -e "$REPO/node/coord/points/nope" -a ! -e "$REPO/node/w1/points/nope"
cbfs restore-point "$REPO" nope --dbname "host=$SOCK port=1 user=postgres dbname=postgres"
like "$ERR" "^cbfs: could not connect to the server: " "the coordinator unreachable: one line"
is "$RC" 4 "... exit 4"
cbfs restore-point "$REPO" busy --dbname "$(conninfo coord)"
check_error "a point name taken" 6 "cbfs: could not create cluster restore point \"busy\": cluster restore point \"busy\" already exists in repository \"$REPO\""
R4=$TMP/r4
repo_init "$R4"
backup coord "$R4" only-coord --node coord
cbfs restore-point "$R4" nope --dbname "$(conninfo coord)"
check_error "a group with no node in the repository" 7 "cbfs: could not create cluster restore point \"nope\": Citus worker group 1 at $SOCK:${PG_PORT[w1]} (database system $(sysid w1)) has no node in repository \"$R4\": back it up with --node first"
ok "... nothing written" test ! -e "$R4/cluster-points/nope" -a ! -e "$R4/node/coord/points/nope"

# ---------------------------------------------------------------- list, info, check
cbfs list "$REPO"
like "$OUT" $'(^|\n)node "w1" \\(database system [0-9]+\\)\n' "list: node by node"
like "$OUT" $'\nbusy +[-0-9T:Z]+ +coord [0-9A-F/]+, w1 [0-9A-F/]+, w2 [0-9A-F/]+\n' "list: the cluster points"
cbfs list "$REPO" --json --cluster-points
is "$(json_get "$OUT" '" ".join(p["name"] + ":" + ",".join(n["node"] for n in p["nodes"]) for p in j)')" \
	"busy:coord,w1,w2 quiet:coord,w1,w2" "list --json --cluster-points"
cbfs list "$REPO" --json
is "$(json_get "$OUT" '" ".join(sorted(b["node"] + "/" + b["label"] for b in j))')" \
	"coord/b1-coord w1/b1-w1 w2/b1-w2" "list --json: every backup with its node"
cbfs info "$REPO@busy" --json
is "$(json_get "$OUT" '" ".join(n["node"] + "=" + n["backup"] for n in j["nodes"]) + " " + str(j["restorable"])')" \
	"coord=b1-coord w1=b1-w1 w2=b1-w2 True" "info of a cluster point: each node's backup, restorable"
cbfs check "$REPO" --read-data
is "$RC" 0 "check --read-data: every node, every cluster point"
like "$OUT" $'cluster restore point "busy": restorable on every node\ncluster restore point "quiet": restorable on every node' "... both points restorable"
like "$OUT" "checked 3 backups of 3 nodes" "... 3 nodes"

# ---------------------------------------------------------------- the source goes away
SRC_PORTS="${PG_PORT[coord]} ${PG_PORT[w1]} ${PG_PORT[w2]}"
for n in coord w1 w2; do
	pg_stop "$n"
done
# shellcheck disable=SC2086
trap_start source $SRC_PORTS

# ---------------------------------------------------------------- mount at the busy point
C=$TMP/cl
OV=$TMP/cl-overlay
mkdir -p "$C"
repo_state() { (cd "$REPO" && find . -path ./mounts -prune -o -path './node/*/mounts' -prune -o -type f -printf '%p %s %T@\n' | sort); }
R_BEFORE=$(repo_state)
cbfs mount "$REPO@busy" "$C" --cluster --start --overlay "$OV"
is "$RC/$ERR" "0/" "mount --cluster --start at the busy point"
like "$OUT" "coordinator: host=$C/.cbfs port=[0-9]+" "... prints the coordinator's connection string"
PORT=$(sed -n 's/^coordinator: host=.* port=//p' <<<"$OUT")
mq() { runuser -u postgres -- "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$C/.cbfs" -p "$1" -d postgres -c "$2"; }
n=$(mq "$PORT" "select count(*) from transfers")
cmp_ok "$n" -ge "$before" "the transfers committed before the point are there ($n >= $before)"
cmp_ok "$n" -le "$after" "and none committed after it ($n <= $after)"
is "$(mq "$PORT" "select sum(balance) from accounts")" 1000000 "the balances add up: no transfer half there"
is "$(mq "$PORT" "
	with o as (select src as id, count(*) n from transfers group by src),
	     i as (select dst as id, count(*) n from transfers group by dst)
	select count(*) from accounts a left join o using (id) left join i using (id)
	where a.balance <> 1000 - coalesce(o.n, 0) + coalesce(i.n, 0)")" 0 \
	"every account's balance is what its transfers made it"
is "$(mq "$PORT" "select count(*) from pg_prepared_xacts")" 0 "no prepared transaction left on the coordinator"
out=""
for t in $STATIC; do
	out+="$t $(mq "$PORT" "select count(*) || ' ' || md5(coalesce(string_agg(h, ',' order by h), '')) from (select md5(x::text) h from $t x) s")"$'\n'
done
is "${out%$'\n'}" "$SRC_STATIC" "the tables the workload did not touch equal the source's"
is "$(mq "$PORT" "select count(*) from pg_dist_node where nodename = '$C/.cbfs'")" 3 \
	"the coordinator's metadata names the restored nodes"
W2PORT=$(awk -F' = ' '$1 ~ /_name$/ { n[$1] = $2 } $1 ~ /_port$/ { p[$1] = $2 } END { for (k in n) if (n[k] == "w2") { sub(/_name$/, "_port", k); print p[k] } }' "$C/.cbfs/cluster")
is "$(mq "$W2PORT" "select count(*) || ' ' || md5(coalesce(string_agg(h, ',' order by h), '')) from (select md5(x::text) h from w2_notes x) s")" \
	"${SRC_W2#w2_notes }" "w2's table in its tablespace, on the mounted w2"
is "$(mq "$PORT" "show citus.recover_2pc_interval")" "1min" "Citus's background work is back on"
# a write through the coordinator: in the workers' overlays, not in the repository
ov_state() { find "$OV/$1" -type f -printf '%p %s %T@\n' | sort | md5sum; }
W1_BEFORE=$(ov_state w1) W2_BEFORE=$(ov_state w2)
mq "$PORT" "insert into customers select g, 'new ' || g from generate_series(100001, 101000) g; checkpoint" >/dev/null
is "$(mq "$PORT" "select count(*) from customers where id > 100000")" 1000 "a write through the coordinator"
isnt "$(ov_state w1)" "$W1_BEFORE" "... lands in w1's overlay"
isnt "$(ov_state w2)" "$W2_BEFORE" "... and in w2's"
cbfs umount "$C"
is "$RC" 0 "umount of the cluster"
is "$(repo_state)" "$R_BEFORE" "the repository did not change (but for the mounts' registrations)"
ok "nothing is mounted under it any more" bash -c "! grep -q ' $C/' /proc/mounts"
ok "no server runs in it" test -z "$(procs_in "$C/w1")$(procs_in "$C/coord")"

# ---------------------------------------------------------------- restore at the quiet point
RC_DIR=$TMP/rc
cbfs restore "$REPO@quiet" "$RC_DIR" --cluster --start --jobs 2 --node-dir "w1=$TMP/w1-copy"
is "$RC/$ERR" "0/" "restore --cluster --start at the quiet point"
like "$OUT" $'restored: 3 nodes in [0-9.]+ s\n' "... every node"
like "$OUT" $'\n  w1 +'"$TMP/w1-copy"$'\n' "... w1 into its --node-dir"
ok "... where w1's data is" test -f "$TMP/w1-copy/PG_VERSION" -a ! -e "$RC_DIR/w1"
PORT=$(sed -n 's/^coordinator: host=.* port=//p' <<<"$OUT")
out=""
for t in $STATIC accounts transfers; do
	out+="$t $(runuser -u postgres -- "$PGBIN/psql" -X -q -A -t -h "$RC_DIR/.cbfs" -p "$PORT" -d postgres -c "select count(*) || ' ' || md5(coalesce(string_agg(h, ',' order by h), '')) from (select md5(x::text) h from $t x) s")"$'\n'
done
is "${out%$'\n'}" "$SRC_ALL" "every table equals the source's at the point"
ok "w2's tablespace was restored beside it" test -d "$RC_DIR/w2.tablespaces/w2ts"
cbfs umount "$RC_DIR"
is "$RC" 0 "its servers stop with cbfs umount"
ok "... none runs" test -z "$(procs_in "$TMP/w1-copy")$(procs_in "$RC_DIR/coord")"

# ---------------------------------------------------------------- verify
cbfs verify "$REPO@quiet" --cluster --json
is "$RC" 0 "verify --cluster passes"
is "$(json_get "$OUT" 'j["result"] + " " + str(len(j["nodes"])) + " " + str(j["citus"]["distributed_tables"]) + " " + str(j["citus"]["reference_tables"]) + " " + str(j["citus"]["placements"] > 0)')" \
	"passed 3 3 1 True" "... every node, the distributed and reference tables, the placements"
# a flipped byte in a block of w1's alone
BAD=$TMP/bad
cp -a "$REPO" "$BAD"
target=$(/usr/bin/python3 - "$BAD" "$CBFS_SRCDIR/tests/integration" <<'PY'
import glob, os, sys
sys.path.insert(0, sys.argv[2])
import manifest
repo = sys.argv[1]
def refs(node):
    out = {}
    for info in glob.glob(f"{repo}/node/{node}/backups/*.info"):
        c = manifest.open_backup(f"{repo}/node/{node}", os.path.basename(info)[:-5])
        for bid, pack, off, ln, path in c.execute(
                "select b.id, p.name, b.offset, b.stored_len, f.path from blocks b "
                "join packs p on p.id = b.pack join files f on f.id = b.file"):
            # a block where the manifest says (not in a pack gc rewrote)
            if os.path.exists(f"{repo}/packs/{pack[:2]}/{pack}.pack"):
                out[bytes(bid)] = (pack, off, ln, path)
    return out
w1 = refs("w1")
others = set(refs("coord")) | set(refs("w2"))
# a block of a relation w1 alone holds, in the largest such file
best = max((v for k, v in w1.items() if k not in others and v[3].startswith("base/")),
           key=lambda v: v[2])
pack, off, ln, path = best
print(f"{repo}/packs/{pack[:2]}/{pack}.pack {off + ln // 2} {path}")
PY
)
read -r PACKFILE OFFSET BADFILE <<<"$target"
ok "a block only w1 uses ($BADFILE)" test -f "$PACKFILE"
flip_byte "$PACKFILE" "$OFFSET"
cbfs verify "$BAD@quiet" --cluster
is "$RC" 5 "verify --cluster of it fails (exit 5)"
like "$ERR" "^cbfs: cluster restore point \"quiet\" failed verification( on node \"w1\": [0-9]+ failures|: node \"w1\": .*)$" "... naming node w1"

# ---------------------------------------------------------------- a killed node
cbfs mount "$REPO@quiet" "$C" --cluster --start
is "$RC" 0 "mount --cluster --start again"
pm=$(awk -F' = ' '$1 ~ /_name$/ { n[$1] = $2 } $1 ~ /_pid$/ { p[$1] = $2 } END { for (k in n) if (n[k] == "w1") { sub(/_name$/, "_pid", k); print p[k] } }' "$C/.cbfs/cluster")
kill -9 "$pm"
ok "w1's postmaster is killed" wait_gone "$pm" 10
cbfs umount "$C"
is "$RC" 0 "umount after a node's postgres was killed"
ok "nothing is mounted under it" bash -c "! grep -q ' $C/' /proc/mounts"
ok "no server is left" test -z "$(procs_in "$C/coord")$(procs_in "$C/w2")"

# ---------------------------------------------------------------- refusals
cbfs mount "$REPO@b1-w1" "$C" --cluster
check_error "--cluster with a point that is no cluster point" 7 "cbfs: \"b1-w1\" is not a cluster restore point of repository \"$REPO\""
cbfs restore "$REPO@quiet" "$TMP/x" --cluster --node-dir "w9=$TMP/w9"
check_error "--node-dir of a node that is not in the point" 2 "cbfs: node \"w9\" of --node-dir is not a node of cluster restore point \"quiet\""
cbfs restore "$REPO@quiet" "$TMP/x" --node nosuch
check_error "an unknown node" 7 "cbfs: node \"nosuch\" not found in repository \"$REPO\""
cbfs restore "$REPO@quiet" "$TMP/x" --node ../w1
check_error "an invalid node name" 2 "cbfs: invalid node name \"../w1\" (1 to 63 letters, digits, '.', '_' or '-', not starting with '.' or '-')"
cbfs restore "$REPO@latest" "$TMP/x"
check_error "no --node in a repository of several" 2 "cbfs: repository \"$REPO\" holds nodes coord, w1 and w2: choose one with --node"
cbfs mount "$R4@only-coord" "$C" --cluster
check_error "--cluster on a repository of one node" 2 "cbfs: repository \"$R4\" holds one node: --cluster needs the nodes of a cluster"
NB=$TMP/nobackup
cp -a "$REPO" "$NB"
rm -f "$NB"/node/w2/backups/*
cbfs mount "$NB@quiet" "$C" --cluster
check_error "a node without a backup before the point" 7 "cbfs: node \"w2\" has no backup before cluster restore point \"quiet\""
GAP=$TMP/gap
cp -a "$REPO" "$GAP"
seg=$(cd "$GAP/node/w1/wal/00000001" && ls | grep -v '\.' | sort | sed -n '2p')
rm -f "$GAP/node/w1/wal/00000001/$seg"
cbfs restore "$GAP@quiet" "$TMP/x" --cluster
check_error "a WAL gap on one node before the point" 7 "cbfs: node \"w1\": point \"quiet\" cannot be reached from backup \"b1-w1\": WAL file \"$seg\" is missing from repository \"$GAP\""
ok "nothing was restored" test ! -e "$TMP/x/coord"
ok "nothing was mounted" bash -c "! grep -q ' $C/' /proc/mounts"

# ---------------------------------------------------------------- retention
cbfs expire "$REPO" --keep-last 1 --dry-run
like "$OUT" "w1: keep    b1-w1 \\(newest, last, cluster point\\)" "expire keeps what a cluster point needs"
like "$OUT" "keep    cluster restore point busy" "... and the cluster points in the window"

# ---------------------------------------------------------------- no restored node talked to the source
is "$(cat "$TMP/source.trap" 2>/dev/null)" "" "no restored node ever connected to a node of the source cluster"

done_testing
