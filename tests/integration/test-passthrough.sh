#!/usr/bin/env bash
# FUSE passthrough (issue 18, item 2): files whose bytes all live in the
# overlay are served by the kernel from their data file.  Checked by what
# the daemon itself reads and writes (/proc/PID/io): with passthrough, a
# new file's 32 MB go around it, without they go through it.  fsync,
# truncate, rename, unlink of an open file, several handles, a file that
# becomes whole while open (it switches at its next open), a size made
# durable by fsync across a kill -9 of the daemon, a disk filled by a
# passthrough writer (ENOSPC, never EIO); and PostgreSQL with and
# without passthrough, the same pgbench transactions then a kill -9,
# ending with identical data.  Skipped when this build or kernel has no
# passthrough (the log line says why).
source "$(dirname "$0")/lib.sh"
need_mount

REPO=$TMP/repo
repo_init "$REPO"
pg_init src
pg_archive src "$REPO"
pg_start src || bail "could not start cluster src"
pgbench_as src -i -s 3 -q postgres >/dev/null 2>&1 || bail "pgbench -i failed"
backup src "$REPO" b1 || bail "the backup failed"
ACCOUNTS=$(psql_as src postgres "select pg_relation_filepath('pgbench_accounts')")
pg_stop src

OWNER=uid=postgres,gid=postgres
# daemon_io DIR FIELD: rchar or wchar of DIR's mount daemon
daemon_io() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$(mount_daemon_pid "$1")/io"; }

mount_as() { # NAME MODE(on|off) [MORE-OPTIONS]
	local name=$1 mode=$2 dir opts
	dir=$(datadir "$name")
	opts="$OWNER,overlay=$TMP/ov-$name${3:-}"
	[[ $mode == off ]] && opts+=",nopassthrough"
	[[ $mode == on ]] && opts+=",passthrough"
	mkdir -p "$dir"
	cbfs_mount "$REPO@b1" "$dir" -o "$opts"
	is "$RC/$ERR" "0/" "mount $name (passthrough $mode)"
}

# pt_line OVERLAY: the daemon's passthrough line (logged at FUSE's init,
# just after the mount returns)
pt_line() {
	local i
	for ((i = 0; i < 50; i++)); do
		grep -q 'FUSE passthrough' "$1/mount.log" 2>/dev/null && break
		sleep 0.1
	done
	grep 'FUSE passthrough' "$1/mount.log" | tail -n 1
}

# ---------------------------------------------------------------- the default
# a mount that does not hydrate keeps the writeback cache; one that does
# (or whose overlay was hydrated) gets passthrough
mkdir -p "$(datadir d)"
cbfs_mount "$REPO@b1" "$(datadir d)" -o "$OWNER,overlay=$TMP/ov-d"
like "$(pt_line "$TMP/ov-d")" "FUSE passthrough off \((not asked for, or not running as root|this build's libfuse has none)\)$" \
	"by default, a mount keeps the writeback cache"
cbfs_umount "$(datadir d)"
echo "rate = 1" >"$TMP/ov-d/hydrate.want"
: >"$TMP/ov-d/mount.log"
cbfs_mount "$REPO@b1" "$(datadir d)" -o "$OWNER,overlay=$TMP/ov-d"
like "$(pt_line "$TMP/ov-d")" "FUSE passthrough (on|off \(this build's libfuse has none\)|off \(the kernel does not offer it\))$" \
	"a mount of an overlay that hydrates asks for passthrough"
cbfs_umount "$(datadir d)"

# ---------------------------------------------------------------- is it there?
mount_as f on
F=$(datadir f)
line=$(pt_line "$TMP/ov-f")
# PT=1: the kernel serves whole files; PT=0 (a build against an older
# libfuse, a kernel without it): every check below still holds, with the
# bytes going through the daemon instead
PT=0
[[ $line == *"FUSE passthrough on" ]] && PT=1
like "$line" "^mount.cbfs: FUSE passthrough (on|off \(.*\))$" "the daemon's log says: ${line#mount.cbfs: }"
((PT)) || diag "no passthrough here: the same checks, through the daemon"
# around LIMIT BYTES WHAT: with passthrough the daemon moved less than
# LIMIT bytes; without, at least BYTES
around() {
	if ((PT)); then
		cmp_ok "$1" -lt "$2" "$4: the daemon moved $1 bytes (the kernel the rest)"
	else
		cmp_ok "$1" -ge "$3" "$4: the daemon moved $1 bytes (no passthrough)"
	fi
}

# ---------------------------------------------------------------- files
mkdir "$F/t"
w0=$(daemon_io "$F" wchar)
dd if=/dev/urandom of="$TMP/rand" bs=1M count=32 status=none
dd if="$TMP/rand" of="$F/t/new" bs=1M conv=fsync status=none
w1=$(daemon_io "$F" wchar)
around "$((w1 - w0))" 4000000 33554432 "32 MB written to a new file"
ok "... and it reads back equal" cmp "$TMP/rand" "$F/t/new"
r0=$(daemon_io "$F" rchar)
echo 3 >/proc/sys/vm/drop_caches
cat "$F/t/new" >/dev/null
r1=$(daemon_io "$F" rchar)
around "$((r1 - r0))" 4000000 33554432 "... read cold"
truncate -s 1000000 "$F/t/new"
is "$(stat -c %s "$F/t/new")" 1000000 "truncate down"
ok "... the bytes below stay" cmp -n 1000000 "$TMP/rand" "$F/t/new"
truncate -s 2000000 "$F/t/new"
is "$(stat -c %s "$F/t/new")" 2000000 "truncate up"
is "$(tail -c 1000000 "$F/t/new" | tr -d '\0' | wc -c)" 0 "... reads zeros past the old end"
printf 'appended' >>"$F/t/new"
is "$(stat -c %s "$F/t/new")" 2000008 "an append (O_APPEND through the kernel) moves the end"
is "$(tail -c 8 "$F/t/new")" appended "... and reads back"
mv "$F/t/new" "$F/t/renamed"
ok "rename: the old name is gone" test ! -e "$F/t/new"
is "$(stat -c %s "$F/t/renamed")" 2000008 "... the new name has its size"
exec 7<"$F/t/renamed"
rm "$F/t/renamed"
ok "unlink of an open file: the name is gone" test ! -e "$F/t/renamed"
is "$(tail -c 8 <&7)" appended "... its open handle still reads it"
exec 7<&-
# two handles, one writing, one reading
exec 7<>"$F/t/two"
exec 8<"$F/t/two"
printf 'first' >&7
is "$(cat <&8)" first "two handles: one sees what the other wrote"
exec 7>&- 8<&-
# files keep no set-user-ID or set-group-ID bit, so a write has none to
# clear (and the kernel need not ask for security.capability first)
touch "$F/t/suid"
chmod 6755 "$F/t/suid"
is "$(stat -c %a "$F/t/suid")" 755 "a file keeps no set-user-ID or set-group-ID bit"
mkdir "$F/t/sgid"
chmod 2750 "$F/t/sgid"
is "$(stat -c %a "$F/t/sgid")" 2750 "... a directory keeps set-group-ID"
# a file of the backup is not whole: served through the daemon
r0=$(daemon_io "$F" rchar)
dd if="$F/$ACCOUNTS" of=/dev/null bs=1M count=8 status=none
r1=$(daemon_io "$F" rchar)
cmp_ok "$((r1 - r0))" -gt 0 "a file of the backup is served by the daemon (it read $((r1 - r0)) bytes of packs)"
# ... until every page of it was written: then its next open is passthrough
SZ=$(stat -c %s "$F/$ACCOUNTS")
exec 7<"$F/$ACCOUNTS" # held open meanwhile: it must stay as it was
dd if="$F/$ACCOUNTS" of="$TMP/accounts" bs=1M status=none
dd if="$TMP/accounts" of="$F/$ACCOUNTS" bs=1M conv=notrunc,fsync status=none
is "$(head -c 100 <&7 | md5sum)" "$(head -c 100 "$TMP/accounts" | md5sum)" "a handle open while the file became whole reads on"
exec 7<&-
echo 3 >/proc/sys/vm/drop_caches
r0=$(daemon_io "$F" rchar)
ok "the whole file reads back equal" cmp "$TMP/accounts" "$F/$ACCOUNTS"
r1=$(daemon_io "$F" rchar)
around "$((r1 - r0))" $((SZ / 4)) "$SZ" "... read at its next open"

# a size made durable by fsync survives the daemon's kill -9
dd if="$TMP/rand" of="$F/t/durable" bs=1M count=5 conv=fsync status=none
pid=$(mount_daemon_pid "$F")
kill -9 "$pid"
wait_gone "$pid" 10
cbfs_umount "$F"
mount_as f on
is "$(stat -c %s "$F/t/durable")" 5242880 "after kill -9 of the daemon and a remount: the fsynced file has its size"
ok "... and its bytes" cmp -n 5242880 "$TMP/rand" "$F/t/durable"
is "$(stat -c %s "$F/t/two")" 5 "... and the small one too"
cbfs_umount "$F"
is "$RC/$ERR" "0/" "cbfs umount"

# ---------------------------------------------------------------- a full disk
# The overlay on a 200 MB file system; headroom=64M: a file opened while
# more is free gets passthrough, and its writes may then fill the disk
# (without passthrough the daemon's reserve stops them first): ENOSPC, never EIO; names still change (the spare file); a file opened
# without headroom goes through the daemon, which keeps its reserve; with
# room again everything goes on, and a remount finds it all.
OVFS=$TMP/ovfs
mkdir -p "$OVFS"
mount -t tmpfs -o size=200m tmpfs "$OVFS" || bail "could not mount a tmpfs"
at_exit umount -l "$OVFS"
F=$(datadir f)
opts="$OWNER,overlay=$OVFS/ov,headroom=64M,passthrough"
cbfs_mount "$REPO@b1" "$F" -o "$opts"
is "$RC/$ERR" "0/" "mount with the overlay on a 200 MB file system, headroom=64M"
mkdir "$F/full"
exec 7<>"$F/full/early" # opened with room: passthrough
w0=$(daemon_io "$F" wchar)
dd if=/dev/zero bs=1M count=8 status=none >&7
around "$(($(daemon_io "$F" wchar) - w0))" 1000000 8388608 "8 MB into a file opened with room"
avail=$(df -k --output=avail "$OVFS" | tail -n 1)
fallocate -l $(((avail - 40000) * 1024)) "$OVFS/ballast"
if dd if=/dev/zero bs=1M count=80 status=none >&7 2>"$TMP/dd.err"; then
	fail "its writes fill the disk: ENOSPC"
else
	like "$(cat "$TMP/dd.err")" "No space left on device" "its writes fill the disk: ENOSPC"
fi
exec 7>&-
ok "a new file on the full disk" touch "$F/full/late"
if dd if=/dev/zero of="$F/full/late" bs=1M count=4 status=none 2>"$TMP/dd2.err"; then
	fail "... opened without headroom, its data does not fit: ENOSPC"
else
	like "$(cat "$TMP/dd2.err")" "No space left on device" "... opened without headroom, its data does not fit: ENOSPC"
fi
# names: a change may fail with ENOSPC once the spare file is spent (the
# passthrough writer can take what it frees), never with EIO
for step in "mv $F/full/late $F/full/later" "rm -f $F/full/late $F/full/later"; do
	if out=$($step 2>&1); then
		pass "${step%% *} on the full disk"
	else
		like "$out" "No space left on device" "${step%% *} on the full disk: ENOSPC at worst"
	fi
done
is "$(grep -c 'Input/output error' "$OVFS/ov/mount.log")" 0 "no EIO in the mount's log"
rm -f "$OVFS/ballast"
dd if="$TMP/rand" of="$F/full/after" bs=1M count=5 conv=fsync status=none
ok "with room again, writes go on" cmp -n 5242880 "$TMP/rand" "$F/full/after"
EARLY=$(stat -c %s "$F/full/early")
cbfs_umount "$F"
cbfs_mount "$REPO@b1" "$F" -o "$opts"
is "$RC/$ERR" "0/" "remount"
if ((PT)); then
	is "$(stat -c %s "$F/full/early"):$(stat -c %s "$F/full/after")" "$EARLY:5242880" "... both files as they were"
else
	# through the daemon with the kernel's writeback cache, the part of a
	# write whose writeback failed (ENOSPC, told to the writer) is gone
	is "$(stat -c %s "$F/full/after")" 5242880 "... the file written with room as it was"
fi
cbfs_umount "$F"

# ---------------------------------------------------------------- PostgreSQL, on and off
# and with FUSE over io_uring, which the kernel allows only while its
# fuse.enable_uring is on: turned on here for the test, then set back
URING_PARAM=/sys/module/fuse/parameters/enable_uring
MODES="on off"
if [[ -w $URING_PARAM ]]; then
	URING_WAS=$(cat "$URING_PARAM")
	at_exit eval 'echo "$URING_WAS" >"$URING_PARAM"'
	MODES+=" uring"
else
	diag "this kernel has no FUSE over io_uring ($URING_PARAM): not tried"
fi
# ur_line OVERLAY: the daemon's io_uring line
ur_line() {
	local i
	for ((i = 0; i < 50; i++)); do
		grep -q 'FUSE over io_uring' "$1/mount.log" 2>/dev/null && break
		sleep 0.1
	done
	grep 'FUSE over io_uring' "$1/mount.log" | tail -n 1
}
for mode in $MODES; do
	name=pg$mode
	if [[ $mode == uring ]]; then
		# the default, with the kernel's consent (and the writeback cache)
		echo Y >"$URING_PARAM"
		mkdir -p "$(datadir "$name")"
		cbfs_mount "$REPO@b1" "$(datadir "$name")" -o "$OWNER,overlay=$TMP/ov-$name"
		is "$RC/$ERR" "0/" "mount $name (fuse.enable_uring on, no option)"
		like "$(ur_line "$TMP/ov-$name")" "FUSE over io_uring (on|off \(this build's libfuse has none\))$" \
			"$name: with fuse.enable_uring on, a mount uses io_uring by default where the build has it"
	else
		mount_as "$name" "$mode" ,noio_uring
		like "$(ur_line "$TMP/ov-$name")" "FUSE over io_uring off \((not asked for, or the kernel's fuse.enable_uring is off|this build's libfuse has none)\)$" \
			"$name: -o noio_uring: requests through /dev/fuse"
	fi
	if pg_start "$name" && pg_wait_promoted "$name"; then
		pass "$name: PostgreSQL starts on the mount"
	else
		fail "$name: PostgreSQL starts on the mount" "$(tail -n 20 "$TMP/$name.log")"
		continue
	fi
	psql_as "$name" postgres "create table made (id int primary key, v text);
		insert into made select g, md5(g::text) from generate_series(1, 20000) g;
		create index on pgbench_history (mtime)" >/dev/null
	pgbench_as "$name" -n -c 1 -t 3000 --random-seed=7 postgres >/dev/null 2>&1 ||
		fail "$name: pgbench"
	# a table rewritten into new files; history (its times differ) emptied
	psql_as "$name" postgres "vacuum full pgbench_tellers" >/dev/null
	psql_as "$name" postgres "truncate pgbench_history;
		insert into made select g, 'later' from generate_series(20001, 30000) g" >/dev/null
	pg_kill9 "$name"
	unset "PG_PORT[$name]" "PG_PID[$name]"
	if pg_start "$name"; then
		pass "$name: kill -9, then crash recovery on the mount"
	else
		fail "$name: kill -9, then crash recovery on the mount" "$(tail -n 20 "$TMP/$name.log")"
		continue
	fi
	table_hashes "$name" postgres >"$TMP/$name.tables"
	amcheck_ok "$name" postgres
	pg_stop "$name"
	cbfs_umount "$(datadir "$name")"
	is "$RC/$ERR" "0/" "$name: cbfs umount"
done
ok "the same transactions with and without passthrough: identical tables" \
	diff "$TMP/pgon.tables" "$TMP/pgoff.tables"
[[ $MODES == *uring* ]] && ok "... and over io_uring" diff "$TMP/pgon.tables" "$TMP/pguring.tables"
cmp_ok "$(grep -c . "$TMP/pgon.tables")" -ge 5 "... ($(grep -c . "$TMP/pgon.tables") tables compared)"

done_testing
