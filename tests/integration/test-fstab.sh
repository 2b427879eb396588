#!/usr/bin/env bash
# fstab mounts (issue 19, item 5): mount(8) on a private fstab (mount -T)
# runs /sbin/mount.cbfs SOURCE DIR [-n -v] -o OPTIONS for a line of type
# cbfs; the backup mounts, PostgreSQL starts on it and shows the data, and
# umount(8) unmounts it.  A line with nofail, _netdev, noauto, comment= and
# x-systemd.requires= mounts the same (mount(8) keeps some of those for
# itself; mount.cbfs accepts the rest, and all of them when run directly);
# a line with an unknown option fails with one line naming it and nothing
# is mounted.
#
# mount(8) looks for helpers in /sbin only: everything mount(8) does here
# runs in a private mount namespace (unshare -m, entered with nsenter),
# where /usr/sbin is overlaid with a folder holding a mount.cbfs link to
# the binary under test and /run is a tmpfs (libmount's utab).  Nothing is
# left in the real /sbin or /run; the namespace ends with the test.
source "$(dirname "$0")/lib.sh"
need_mount
command -v nsenter >/dev/null || skip_all "nsenter is missing (util-linux)"

REPO=$TMP/repo
repo_init "$REPO"
pg_init src
pg_archive src "$REPO"
pg_start src || bail "could not start cluster src"
pgbench_as src -i -s 2 -q postgres >/dev/null 2>&1 || bail "pgbench -i failed"
want=$(psql_as src postgres "select sum(abalance) || '/' || count(*) from pgbench_accounts")
backup src "$REPO" b1 || bail "the backup failed"
pg_stop src

# ---------------------------------------------------------------- the namespace
background unshare -m --propagation private sleep 100000
NS_PID=$BG_PID
for ((i = 0; i < 100; i++)); do
	[[ $(readlink "/proc/$NS_PID/ns/mnt") != "$(readlink /proc/self/ns/mnt)" ]] && break
	sleep 0.05
done
isnt "$(readlink "/proc/$NS_PID/ns/mnt")" "$(readlink /proc/self/ns/mnt)" "a private mount namespace"
NS=(nsenter -t "$NS_PID" -m --) # a command in the namespace (also through run)
ns() { "${NS[@]}" "$@"; }
# ns_mounted DIR: DIR is a mount point in the namespace
ns_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' "/proc/$NS_PID/mountinfo"; }

mkdir -p "$TMP/sbin"
ln -s "$MOUNT_CBFS" "$TMP/sbin/mount.cbfs"
ns mount -t tmpfs -o mode=0755 cbfs-test-run /run || bail "could not mount a tmpfs on /run in the namespace"
if ! ns mount -t overlay cbfs-test-sbin -o "lowerdir=$TMP/sbin:/usr/sbin" /usr/sbin 2>"$TMP/ov.err"; then
	# no overlayfs: the real /usr/sbin seen through links, and ours
	mkdir -p "$TMP/real-sbin" "$TMP/farm"
	ns mount --bind /usr/sbin "$TMP/real-sbin" || bail "could not bind /usr/sbin"
	for f in /usr/sbin/*; do
		ln -s "$TMP/real-sbin/${f##*/}" "$TMP/farm/"
	done
	ln -s "$MOUNT_CBFS" "$TMP/farm/mount.cbfs"
	ns mount --bind "$TMP/farm" /usr/sbin || bail "could not put mount.cbfs into /sbin: $(cat "$TMP/ov.err")"
fi
is "$(ns readlink -f /sbin/mount.cbfs)" "$(readlink -f "$MOUNT_CBFS")" "/sbin/mount.cbfs in the namespace is the one under test"
ok "the real /sbin has no mount.cbfs of this test" test "$(readlink -f /sbin/mount.cbfs)" != "$(readlink -f "$MOUNT_CBFS")"

MNT=$TMP/m # the data directory of cluster "m"
MNT2=$TMP/m2
MNT3=$TMP/m3
OV=$TMP/ov
mkdir -p "$MNT" "$MNT2" "$MNT3"
_mounts+=("$MNT" "$MNT2" "$MNT3") # daemons still running at exit are ended
cat >"$TMP/fstab" <<EOF
# a private fstab (mount -T)
$REPO@latest  $MNT   cbfs  uid=postgres,gid=postgres,overlay=$OV,_netdev  0 0
$REPO@b1      $MNT2  cbfs  uid=postgres,nofail,_netdev,noauto,comment=cbfs-test,x-systemd.requires=foo.service,x-systemd.automount  0 0
$REPO@latest  $MNT3  cbfs  uid=postgres,_netdev,bogus_option=1  0 0
EOF

# ---------------------------------------------------------------- mount DIR
run "${NS[@]}" mount -T "$TMP/fstab" "$MNT"
is "$RC:$ERR" "0:" "mount -T fstab $MNT: mounted, nothing said"
ok "  ... a cbfs mount in the namespace" ns_mounted "$MNT"
is "$(awk -v m="$MNT" '$5 == m { for (i = 7; i < NF; i++) if ($i == "-") { print $(i + 1); break } }' \
	"/proc/$NS_PID/mountinfo")" "fuse.cbfs" "  ... of type fuse.cbfs"
ok "  ... not in the real mount table" bash -c "! awk -v m='$MNT' '\$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo"
is "$(ns stat -c %U "$MNT/PG_VERSION")" "postgres" "  ... uid=postgres from the fstab line"
ok "  ... the overlay of overlay= is used" test -d "$OV/pg_wal"

PORT=$(free_port)
if ns runuser -u postgres -- env CBFS_CACHE_DIR="$TMP/cache-postgres" "$PGBIN/pg_ctl" -D "$MNT" \
	-l "$TMP/m.log" -w -t 120 -o "-p $PORT -k $SOCK -c listen_addresses=''" start >/dev/null 2>&1; then
	pass "PostgreSQL starts on the fstab mount"
else
	fail "PostgreSQL starts on the fstab mount" "$(tail -n 20 "$TMP/m.log")"
fi
PG_PORT[m]=$PORT
PG_PID[m]=$(ns head -n 1 "$MNT/postmaster.pid" 2>/dev/null)
pg_wait_promoted m
is "$(psql_as m postgres "select sum(abalance) || '/' || count(*) from pgbench_accounts" 2>&1)" "$want" \
	"  ... and holds the backup's data"
ok "  ... and writes" psql_as m postgres "create table written_on_fstab_mount as select 1 x; checkpoint"
ns runuser -u postgres -- "$PGBIN/pg_ctl" -D "$MNT" -m fast -w -t 120 stop >/dev/null 2>&1 ||
	fail "PostgreSQL on the mount stops"
unset "PG_PORT[m]" "PG_PID[m]"
daemon=$(mount_daemon_pid "$MNT")
run "${NS[@]}" umount "$MNT"
is "$RC:$ERR" "0:" "umount $MNT"
ok "  ... unmounted" bash -c "! awk -v m='$MNT' '\$5 == m { f = 1 } END { exit !f }' /proc/$NS_PID/mountinfo"
ok "  ... its daemon ended" wait_gone "${daemon:-0}" 30
ok "  ... its overlay kept (overlay=)" test -f "$OV/mount.log"

# ---------------------------------------------------------------- nofail, _netdev, x-systemd.*
run "${NS[@]}" mount -v -n -T "$TMP/fstab" "$MNT2"
is "$RC" "0" "mount -v -n -T fstab: a line with nofail,_netdev,noauto,comment=,x-systemd.requires= mounts"
[[ $RC == 0 ]] || diag "$ERR"
is "$(ns cat "$MNT2/PG_VERSION" 2>&1)" "15" "  ... and its files read"
run "${NS[@]}" umount "$MNT2"
is "$RC:$ERR" "0:" "  ... and unmounts"
# what mount(8) keeps for itself (comment=, x-*), mount.cbfs accepts too
run "${NS[@]}" "$MOUNT_CBFS" "$REPO@b1" "$MNT2" -n -s -v -o \
	"uid=postgres,rw,defaults,auto,nofail,_netdev,user=root,comment=x,x-systemd.requires=foo.service,X-mount.mkdir,x-gvfs-hide"
is "$RC:$ERR" "0:" "mount.cbfs -n -s -v -o with every option mount(8) may pass: mounted"
is "$(ns cat "$MNT2/PG_VERSION" 2>&1)" "15" "  ... and its files read"
run "${NS[@]}" umount "$MNT2"
is "$RC" "0" "  ... and unmounts"

# ---------------------------------------------------------------- an unknown option
run "${NS[@]}" mount -T "$TMP/fstab" "$MNT3"
isnt "$RC" "0" "mount -T fstab: a line with an unknown option fails"
# a usage error: the line, and the hint every usage error ends with
HINT='Try "mount.cbfs --help" for more information.'
is "$ERR" "mount.cbfs: unknown mount option \"bogus_option\""$'\n'"$HINT" "  ... with one line naming it (and the hint)"
ok "  ... nothing mounted" bash -c "! awk -v m='$MNT3' '\$5 == m { f = 1 } END { exit !f }' /proc/$NS_PID/mountinfo"
is "$(mount_daemon_pid "$MNT3")" "" "  ... no daemon left"
run "$MOUNT_CBFS" "$REPO@latest" "$MNT3" -o uid=postgres,bogus=1
check_error "mount.cbfs -o bogus=1: refused" 2 'mount.cbfs: unknown mount option "bogus"'$'\n'"$HINT"
run "$MOUNT_CBFS" "$REPO@latest" "$MNT3" -t ext4
check_error "mount.cbfs -t ext4: refused" 2 'mount.cbfs: file system type "ext4" is not cbfs'$'\n'"$HINT"
run "$MOUNT_CBFS" "$REPO@latest" "$MNT3" -N /proc/1/ns/mnt
check_error "mount.cbfs -N: refused" 2 \
	'mount.cbfs: -N is not supported: run mount.cbfs in that mount namespace (nsenter -m)'$'\n'"$HINT"
ok "nothing mounted on $MNT3" bash -c "! awk -v m='$MNT3' '\$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo"

done_testing
