#!/usr/bin/env bash
# Robustness of the mount (issue 3, item 4): PostgreSQL killed with kill -9
# on the mount recovers; the daemon killed with kill -9 leaves a mount that
# answers errors, not a hang, and cbfs umount then a remount with the same
# overlay work; two mounts of the same backup are independent; a corrupt
# block makes its read fail with EIO and is logged with its file and offset;
# a missing repository, unknown label, busy or missing mount point is refused
# with one clear line.
source "$(dirname "$0")/lib.sh"
need_mount

REPO=$TMP/repo
repo_init "$REPO"
pg_init src
pg_archive src "$REPO"
pg_start src || bail "could not start cluster src"
{
	pgbench_as src -i -s 2 -q postgres &&
		psql_as src postgres "
		create table kept (id int primary key, v text);
		insert into kept select g, md5(g::text) from generate_series(1, 1000) g;
		checkpoint"
} >/dev/null 2>"$TMP/data.err" || bail "could not create the data: $(cat "$TMP/data.err")"
backup src "$REPO" b1 --jobs 2 || bail "the backup failed"
src_kept=$(psql_as src postgres "select md5(string_agg(v, ',' order by id)) from kept")
pg_stop src

# a mount point, the data directory of cluster NAME: $TMP/NAME
mnt() { datadir "$1"; }
OWNER=uid=postgres,gid=postgres

# mount_ok WHAT SPEC NAME [-o OPTIONS]: mounts SPEC on $TMP/NAME.
mount_ok() {
	local what=$1 spec=$2 name=$3
	shift 3
	mkdir -p "$(mnt "$name")"
	cbfs_mount "$spec" "$(mnt "$name")" "$@"
	if ((RC == 0)) && is_mounted "$(mnt "$name")"; then
		pass "$what"
		return 0
	fi
	fail "$what" "mount.cbfs exited $RC" "stderr: $ERR"
	return 1
}

# start_on NAME WHAT: starts cluster NAME and waits until it leaves recovery.
start_on() {
	if pg_start "$1" && pg_wait_promoted "$1"; then
		pass "$2"
		return 0
	fi
	fail "$2" "$(tail -n 20 "$TMP/$1.log")"
	return 1
}

# umount_ok NAME WHAT: cbfs umount; the mount is gone and its daemon ends.
umount_ok() {
	local dir pid
	dir=$(mnt "$1")
	pid=$(mount_daemon_pid "$dir")
	cbfs_umount "$dir"
	if ((RC == 0)) && ((!$(mount_count "$dir"))) && { [[ -z $pid ]] || wait_gone "$pid" 10; }; then
		pass "$2"
	else
		fail "$2" "cbfs umount exited $RC: $ERR" "mounts left: $(mount_count "$dir")" "daemon: $pid"
	fi
}

# ================================================================ (e) bad input
# daemons: the mount.cbfs processes of this test (not of anyone else's mounts)
daemons() {
	local p
	for p in $(pgrep -x mount.cbfs); do
		tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$TMP/" && echo "$p"
	done | sort | tr '\n' ' '
}
temp_overlays() { find "$CBFS_CACHE_DIR" -maxdepth 2 -name 'overlay-*' 2>/dev/null | sort; }
mkdir "$TMP/e"
# refused MSGNAME CODE MESSAGE SPEC DIR: mount.cbfs SPEC DIR is refused with
# exactly MESSAGE and CODE, prints nothing on stdout, leaves no mount, no
# daemon and no temporary overlay behind.
refused() {
	local name=$1 code=$2 msg=$3 spec=$4 dir=$5 before_m before_d before_o
	before_m=$(mount_count "$dir")
	before_d=$(daemons)
	before_o=$(temp_overlays)
	cbfs_mount "$spec" "$dir" -o "$OWNER"
	check_error "$name: exit $code and one line" "$code" "$msg"
	is "$OUT" "" "$name: nothing on stdout"
	is "$(mount_count "$dir")" "$before_m" "$name: no mount is left behind"
	is "$(daemons)" "$before_d" "$name: no daemon is left behind"
	is "$(temp_overlays)" "$before_o" "$name: no temporary overlay is left behind"
}
refused "missing repository" 3 \
	"mount.cbfs: could not open repository \"$TMP/no-repo\": No such file or directory" \
	"$TMP/no-repo" "$TMP/e"
refused "unknown label" 7 \
	"mount.cbfs: backup or restore point \"nope\" not found in repository \"$REPO\"" \
	"$REPO@nope" "$TMP/e"
refused "missing mount point" 2 \
	"mount.cbfs: could not mount on \"$TMP/no-dir\": No such file or directory" \
	"$REPO@b1" "$TMP/no-dir"
ok "missing mount point: it is not created" test ! -e "$TMP/no-dir"
if mount_ok "busy: the first mount" "$REPO@b1" e -o "$OWNER"; then
	refused "busy mount point" 2 \
		"mount.cbfs: could not mount on \"$TMP/e\": it is already a mount point" \
		"$REPO@b1" "$TMP/e"
	is "$(cat "$TMP/e/PG_VERSION" 2>&1)" 15 "busy: the first mount still answers"
	umount_ok e "busy: cbfs umount"
fi
ok "the mount point is left empty" test -z "$(ls -A "$TMP/e")"

# ================================================================ (a) kill -9 of PostgreSQL
if mount_ok "(a) mount" "$REPO@b1" a -o "$OWNER,overlay=$TMP/ov-a" && start_on a "(a) PostgreSQL starts on the mount"; then
	sql a postgres "create table committed (id int primary key, v text);
		insert into committed select g, md5(g::text) from generate_series(1, 5000) g" >/dev/null
	background runuser -u postgres -- "$PGBIN/pgbench" -h "$SOCK" -p "${PG_PORT[a]}" -U postgres \
		-n -c 4 -j 2 -T 60 postgres >"$TMP/pgbench-a.log" 2>&1
	sleep 3
	ok "(a) pgbench is writing" test "$(psql_as a postgres "select count(*) > 0 from pgbench_history")" = t
	pm=${PG_PID[a]}
	cmp_ok "$(procs_in "$(mnt a)" | grep -c .)" -ge 5 "(a) the postmaster and its children run in the mount"
	if pg_kill9 a; then
		pass "(a) kill -9 of the postmaster and every process of the cluster"
	else
		fail "(a) kill -9 of the postmaster and every process of the cluster" "$(ps -o pid,args -p "$(procs_in "$(mnt a)" | tr '\n' ,)0")"
	fi
	ok "(a) the postmaster is gone" test ! -d "/proc/$pm"
	wait "$BG_PID" 2>/dev/null
	ok "(a) postmaster.pid is left behind" test -f "$(mnt a)/postmaster.pid"
	if start_on a "(a) PostgreSQL starts again after kill -9"; then
		ok "(a) crash recovery ran" grep -q "database system was not properly shut down; automatic recovery in progress" "$TMP/a.log"
		is "$(sql a postgres "select count(*) || ' ' || md5(string_agg(v, ',' order by id)) from committed")" \
			"5000 $(psql_as a postgres "select md5(string_agg(md5(g::text), ',' order by g)) from generate_series(1, 5000) g")" \
			"(a) the data committed before the kill is there"
		cmp_ok "$(sql a postgres "select count(*) from pgbench_history")" -gt 0 "(a) pgbench transactions committed before the kill are there"
		is "$(sql a postgres "select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history)")" \
			t "(a) balances match the history"
		amcheck_ok a postgres
	fi
fi

# ================================================================ (b) kill -9 of the daemon
# PostgreSQL (from (a)) is killed first with everything it runs, then the
# daemon: nothing is left running on the dead mount.
if [[ -n ${PG_PORT[a]:-} ]]; then
	sql a postgres "create table before_daemon_kill as select g id from generate_series(1, 777) g" >/dev/null
	b_history=$(psql_as a postgres "select count(*) from pgbench_history")
	pg_kill9 a
	ok "(b) PostgreSQL is gone" test -z "$(procs_in "$(mnt a)")"
	unset "PG_PORT[a]"
fi
dpid=$(mount_daemon_pid "$(mnt a)")
if [[ -n $dpid ]]; then
	pass "(b) the daemon of the mount is found"
	kill -9 "$dpid"
	ok "(b) the daemon is gone after kill -9" wait_gone "$dpid" 10
	ok "(b) the dead mount is still in the mount table" is_mounted "$(mnt a)"
	for c in "stat $(mnt a)" "ls $(mnt a)" "cat $(mnt a)/PG_VERSION" "touch $(mnt a)/new"; do
		t0=$(date +%s%N)
		# shellcheck disable=SC2086 # the command and its argument
		out=$(timeout 10 $c 2>&1)
		rc=$?
		ms=$((($(date +%s%N) - t0) / 1000000))
		if ((rc != 0 && rc != 124)) && [[ $out == *"Transport endpoint is not connected"* ]]; then
			pass "(b) $c fails at once on the dead mount (${ms} ms)"
		else
			fail "(b) $c fails at once on the dead mount" "exit $rc after $ms ms (124: timed out)" "$out"
		fi
	done
	cbfs_mount "$REPO@b1" "$(mnt a)" -o "$OWNER,overlay=$TMP/ov-a"
	check_error "(b) mounting on the dead mount is refused" 2 \
		"mount.cbfs: could not mount on \"$(mnt a)\": a dead mount is still there (run cbfs umount)"
	cbfs_umount "$(mnt a)"
	is "$RC/$ERR" "0/" "(b) cbfs umount of the dead mount"
	is "$(mount_count "$(mnt a)")" 0 "(b) the dead mount is gone"
	if mount_ok "(b) remount with the same overlay" "$REPO@b1" a -o "$OWNER,overlay=$TMP/ov-a" &&
		start_on a "(b) PostgreSQL starts on the remount"; then
		is "$(sql a postgres "select count(*) from before_daemon_kill")" 777 "(b) the table committed before the kills is there"
		is "$(sql a postgres "select count(*) from pgbench_history")" "$b_history" "(b) the pgbench transactions are there"
		is "$(sql a postgres "select count(*) from committed")" 5000 "(b) the data of (a) is there"
		is "$(sql a postgres "select md5(string_agg(v, ',' order by id)) from kept")" "$src_kept" \
			"(b) the backup's table equals the source"
		amcheck_ok a postgres
		pg_stop a
	fi
	umount_ok a "(b) cbfs umount of the remount"
else
	fail "(b) the daemon of the mount is found" "$(pgrep -a mount.cbfs)"
fi

# ================================================================ (c) two mounts at once
if mount_ok "(c) first mount" "$REPO@b1" c1 -o "$OWNER,overlay=$TMP/ov-c1" &&
	mount_ok "(c) second mount of the same backup" "$REPO@b1" c2 -o "$OWNER"; then
	isnt "$(mount_daemon_pid "$(mnt c1)")" "$(mount_daemon_pid "$(mnt c2)")" "(c) two daemons"
	if start_on c1 "(c) PostgreSQL on the first mount" && start_on c2 "(c) PostgreSQL on the second mount"; then
		isnt "${PG_PORT[c1]}" "${PG_PORT[c2]}" "(c) on different ports"
		sql c1 postgres "create table only_c1 (id int); insert into only_c1 values (1);
			update pgbench_accounts set abalance = 1 where aid <= 1000; delete from kept where id <= 10" >/dev/null
		sql c2 postgres "create table only_c2 (id int); insert into only_c2 values (2); update kept set v = 'c2'" >/dev/null
		is "$(sql c1 postgres "select count(*) from pg_class where relname in ('only_c1', 'only_c2')")" 1 \
			"(c) the first mount sees its table only"
		is "$(sql c1 postgres "select relname from pg_class where relname in ('only_c1', 'only_c2')")" only_c1 \
			"(c) that is only_c1"
		is "$(sql c2 postgres "select relname from pg_class where relname in ('only_c1', 'only_c2')")" only_c2 \
			"(c) the second mount sees only only_c2"
		is "$(sql c2 postgres "select sum(abalance) from pgbench_accounts")" 0 "(c) the second mount does not see the first's update"
		is "$(sql c1 postgres "select sum(abalance) from pgbench_accounts")" 1000 "(c) the first mount sees its update"
		is "$(sql c1 postgres "select count(*) || ' ' || count(*) filter (where v = 'c2') from kept")" "990 0" \
			"(c) the first mount sees its delete, not the second's update"
		is "$(sql c2 postgres "select count(*) || ' ' || count(*) filter (where v = 'c2') from kept")" "1000 1000" \
			"(c) the second mount sees its update, not the first's delete"
		is "$(psql_as c1 postgres "select 1")/$(psql_as c2 postgres "select 1")" 1/1 "(c) both servers answer at once"
		pg_stop c1
		pg_stop c2
	fi
	umount_ok c1 "(c) cbfs umount of the first mount"
	umount_ok c2 "(c) cbfs umount of the second mount"
fi

# ================================================================ (d) a corrupt block
COPY=$TMP/repo-copy
cp -a "$REPO" "$COPY"
BS=$(mq "$COPY" b1 "select value from meta where key = 'block_size'")
# block 2 of the largest relation file, stored compressed or not, that no
# other block of the backup shares, in a pack that holds another file too
# (which pack a block lands in depends on the backup's threads)
IFS=$'\t' read -r BAD_FILE BAD_ID BAD_BLOCK PACK BAD_PACKNAME OFFSET STORED < <(mq "$COPY" b1 "
	select f.path, f.id, b.blockno, b.pack, p.name, b.offset, b.stored_len
	from blocks b join files f on f.id = b.file join packs p on p.id = b.pack
	where f.path like 'base/%' and b.blockno = 2 and b.stored_len > 64
	  and (select count(*) from blocks o where o.pack = b.pack and o.offset = b.offset) = 1
	  and exists (select 1 from blocks o2 join files f2 on f2.id = o2.file
	              where o2.pack = b.pack and f2.id <> f.id and f2.path like 'base/%'
	                and f2.size >= 3 * $BS)
	order by f.size desc, f.path limit 1")
# another file with blocks in the same pack
IFS=$'\t' read -r GOOD_FILE GOOD_SIZE < <(mq "$COPY" b1 "
	select f.path, f.size from files f
	where f.path like 'base/%' and f.id <> $BAD_ID and f.size >= 3 * $BS
	  and exists (select 1 from blocks b where b.file = f.id and b.pack = $PACK)
	order by f.size desc, f.path limit 1")
PACKFILE=$COPY/packs/${BAD_PACKNAME:0:2}/$BAD_PACKNAME.pack
diag "corrupting block $BAD_BLOCK of $BAD_FILE: pack $BAD_PACKNAME offset $OFFSET, $STORED bytes stored; other file $GOOD_FILE"
if [[ -n $BAD_FILE && -n $GOOD_FILE && -f $PACKFILE ]] && ((OFFSET + STORED < $(stat -c %s "$PACKFILE"))); then
	pass "(d) a block and another file of the same pack are found in the manifest"
	flip_byte "$PACKFILE" $((OFFSET + STORED / 2))
	ok "(d) the copy's pack differs from the original's" \
		bash -c "! cmp -s '$PACKFILE' '$REPO/packs/${BAD_PACKNAME:0:2}/$BAD_PACKNAME.pack'"
	mkdir -p "$TMP/cache-d"
	if mount_ok "(d) the corrupt copy mounts" "$COPY@b1" d -o "$OWNER,overlay=$TMP/ov-d,cache_dir=$TMP/cache-d" &&
		mount_ok "(d) the original mounts" "$REPO@b1" orig -o "$OWNER,cache_dir=$TMP/cache-d"; then
		D=$(mnt d)
		O=$(mnt orig)
		out=$(timeout 60 cat "$D/$BAD_FILE" 2>&1 >/dev/null)
		rc=$?
		if ((rc != 0 && rc != 124)) && [[ $out == *"Input/output error"* ]]; then
			pass "(d) cat of the corrupt file fails with EIO"
		else
			fail "(d) cat of the corrupt file fails with EIO" "exit $rc" "$out"
		fi
		out=$(timeout 60 dd if="$D/$BAD_FILE" of=/dev/null bs="$BS" skip="$BAD_BLOCK" count=1 2>&1)
		rc=$?
		if ((rc != 0 && rc != 124)) && [[ $out == *"Input/output error"* ]]; then
			pass "(d) dd of the corrupt block fails with EIO, again"
		else
			fail "(d) dd of the corrupt block fails with EIO, again" "exit $rc" "$out"
		fi
		out=$(timeout 60 dd if="$D/$BAD_FILE" bs=8192 skip=$((BAD_BLOCK * BS / 8192 + 1)) count=1 2>/dev/null | od -An -tx1 | head -c 200)
		ok "(d) no bytes are returned from inside the corrupt block" test -z "$out"
		ok "(d) the first block of the corrupt file reads fine and equals the original" \
			cmp <(dd if="$D/$BAD_FILE" bs="$BS" count=1 2>/dev/null) <(dd if="$O/$BAD_FILE" bs="$BS" count=1 2>/dev/null)
		ok "(d) the other file of the same pack reads fine and equals the original" \
			timeout 60 cmp "$D/$GOOD_FILE" "$O/$GOOD_FILE"
		is "$(stat -c %s "$D/$GOOD_FILE")" "$GOOD_SIZE" "(d) with its size"
		ok "(d) PG_VERSION reads fine" test "$(cat "$D/PG_VERSION")" = 15
		log=$(grep -F "\"$BAD_FILE\"" "$TMP/ov-d/mount.log")
		lo=$((BAD_BLOCK * BS))
		hi=$(((BAD_BLOCK + 1) * BS))
		logged=$(sed -n 's/.* at offset \([0-9]*\) .*/\1/p' <<<"$log" | head -n 1)
		if [[ $logged =~ ^[0-9]+$ ]] && ((logged >= lo && logged < hi)); then
			pass "(d) the daemon's log names the file and an offset in the corrupt block"
		else
			fail "(d) the daemon's log names the file and an offset in the corrupt block" \
				"expected \"$BAD_FILE\" at an offset in [$lo, $hi)" "log: $(tail -n 5 "$TMP/ov-d/mount.log")"
		fi
		diag "$(head -n 1 <<<"$log")"
		is "$(grep -F "\"$GOOD_FILE\"" "$TMP/ov-d/mount.log")" "" "(d) the log names no other file"
	fi
	umount_ok d "(d) cbfs umount of the corrupt copy"
	umount_ok orig "(d) cbfs umount of the original"
else
	fail "(d) a block and another file of the same pack are found in the manifest" \
		"bad: '$BAD_FILE' $PACKFILE@$OFFSET+$STORED good: '$GOOD_FILE'"
fi

done_testing
