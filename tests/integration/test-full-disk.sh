#!/usr/bin/env bash
# Full disks (issue 17, item 1): the overlay, the local repository, the
# restore target, cache_dir and the WAL destination each on a small tmpfs
# of its own, filled.  A full disk reads as one: PostgreSQL on the mount
# gets ENOSPC, never EIO, and goes on once there is room, with the overlay
# whole across a remount; backup, wal-push, gc, restore, mount and
# wal-fetch fail with one line naming the full location, leave the
# repository clean and succeed once there is room.
source "$(dirname "$0")/lib.sh"
need_mount

# small_fs DIR SIZE: a tmpfs of SIZE at DIR (unmounted at exit).
small_fs() {
	mkdir -p "$1"
	mount -t tmpfs -o "size=$2,mode=0777" tmpfs "$1" || bail "could not mount a tmpfs on $1"
	at_exit umount -l "$1"
}

# fill DIR [KB]: a ballast file in DIR takes all its free space but KB.
fill() {
	local avail
	avail=$(df -k --output=avail "$1" | tail -n 1)
	fallocate -l $(((avail - ${2:-0}) * 1024)) "$1/ballast" || bail "could not fill $1"
}

# unfill DIR: the ballast goes.
unfill() { rm -f "$1/ballast"; }

REPO=$TMP/repo
repo_init "$REPO"
pg_init src
pg_archive src "$REPO"
pg_start src || bail "could not start cluster src"
# 12 MB of rows that compress about 2:1
psql_as src postgres "
	create table r as
	select g, (select string_agg(md5(random()::text || g || i), '') from generate_series(1, 8) i) t
	from generate_series(1, 40000) g;
	checkpoint" >/dev/null || bail "could not create the data"
backup src "$REPO" b1 || bail "the backup failed"

# ---------------------------------------------------------------- the overlay
OVFS=$TMP/ovfs
small_fs "$OVFS" 160m
MNT=$(datadir m)
mkdir -p "$MNT"
cbfs_mount "$REPO@b1" "$MNT" -o "overlay=$OVFS/ov,uid=postgres,gid=postgres"
is "$RC/$ERR" "0/" "mount with the overlay on a 160 MB file system of its own"
# its pg_wal lives in the overlay too: kept small
PGOPT=(-c max_wal_size=64MB -c min_wal_size=32MB)
pg_start m "${PGOPT[@]}" && pg_wait_promoted m || bail "PostgreSQL did not start on the mount"
sql m postgres "create table f (g int, t text)" >/dev/null
mkdir -p "$MNT/probe" && echo small >"$MNT/probe/a"

fill "$OVFS" 48000
batch="insert into f select g, repeat(md5(g::text), 30) from generate_series(1, 1000) g"
committed=0 failed=
for ((i = 0; i < 80; i++)); do
	if out=$(psql_as m postgres "$batch" 2>&1); then
		committed=$((committed + 1))
	else
		failed=$out
		break
	fi
done
cmp_ok "$committed" -gt 0 "PostgreSQL wrote $committed batches of 1 MB before the disk was full"
like "$failed" "No space left on device" "the write that did not fit failed with ENOSPC: $(head -n 1 <<<"$failed")"
is "$(grep -c 'Input/output error' "$TMP/m.log" "$OVFS/ov/mount.log" | awk -F: '{ n += $2 } END { print n }')" 0 \
	"no EIO anywhere: neither PostgreSQL nor the mount's log has one"

# the file system itself, while full: data does not fit, names still change
if dd if=/dev/zero of="$MNT/probe/big" bs=1M count=8 conv=fsync 2>"$TMP/dd.err"; then
	fail "writing 8 MB into a full overlay fails"
else
	like "$(cat "$TMP/dd.err")" "No space left on device" "writing 8 MB into a full overlay fails with ENOSPC"
fi
rm -f "$MNT/probe/big"
ok "rename on a full overlay" mv "$MNT/probe/a" "$MNT/probe/b"
ok "mkdir on a full overlay" mkdir "$MNT/probe/d"
ok "unlink and rmdir on a full overlay" rm -r "$MNT/probe"
cp "$OVFS/ov/mount.log" "$TMP/ov-mount.log"

# room again: the server goes on (restarted if the full disk stopped it)
unfill "$OVFS"
if ! wait_sql m postgres "select 1" 1 20; then
	diag "the server stopped on the full disk: started again"
	_pg_kill m
	unset "PG_PORT[m]"
	pg_start m "${PGOPT[@]}"
fi
cp "$OVFS/ov/mount.log" "$TMP/ov-mount.log"
sql m postgres "$batch" >/dev/null
is "$(psql_as m postgres "select count(*) from f")" "$(((committed + 1) * 1000))" \
	"with room again it goes on: every committed batch there, the failed one not"
before=$(psql_as m postgres "select md5(string_agg(t || g, ',' order by g, t)) from f")
pg_stop m
cbfs_umount "$MNT"
is "$RC" 0 "umount"
cbfs_mount "$REPO@b1" "$MNT" -o "overlay=$OVFS/ov,uid=postgres,gid=postgres"
is "$RC/$ERR" "0/" "remount with the same overlay"
pg_start m "${PGOPT[@]}" || bail "PostgreSQL did not start on the remount"
is "$(psql_as m postgres "select md5(string_agg(t || g, ',' order by g, t)) from f")" "$before" \
	"the overlay is whole after the remount: the same rows"
amcheck_ok m postgres
pg_stop m
cbfs_umount "$MNT"

# ---------------------------------------------------------------- the repository
R2=$TMP/small-repo
small_fs "$R2" 32m
chown postgres: "$R2"
repo_init "$R2/r"
fill "$R2" 1024
cbfs backup "$R2/r" --pgdata "$(datadir src)" --dbname "$(conninfo src)" --label f1
like "$RC/$(tail -n 1 <<<"$ERR")" \
	"^1/cbfs: could not store pack \"packs/[0-9a-f]{2}/[0-9a-f]{32}\\.pack\": could not write object \"$R2/r/packs/[0-9a-f]{2}/[0-9a-f]{32}\\.pack\": No space left on device\$" \
	"backup into a full repository: one line naming the object"
is "$(labels "$R2/r")" "" "... and no backup recorded"
cbfs check "$R2/r"
is "$RC" 0 "check: the repository is clean after the failed backup"
SEG=$(pg_switch_and_archive src) || bail "src did not archive a segment"
unfill "$R2"
fill "$R2"
cbfs wal-push "$R2/r" "$(datadir src)/pg_wal/$SEG"
is "$RC/$ERR" "1/cbfs: could not store WAL file \"$SEG\": could not write object \"$R2/r/wal/00000001/$SEG\": No space left on device" \
	"wal-push into a full repository: non-zero, one line"
cbfs wal-fetch "$R2/r" "$SEG" "$TMP/seg"
is "$RC" 1 "... and the segment is not there"

unfill "$R2"
backup src "$R2/r" f1
cbfs wal-push "$R2/r" "$(datadir src)/pg_wal/$SEG"
is "$RC/$ERR" "0/" "wal-push with room again"
cbfs check "$R2/r"
is "$RC" 0 "check after the runs with room"

# gc rewriting a pack on a full repository
for q in "delete from r where g % 2 = 0" "vacuum full r" "checkpoint"; do
	psql_as src postgres "$q" >/dev/null || bail "$q on src failed"
done
backup src "$R2/r" f2
cbfs expire "$R2/r" --keep-last 1
is "$RC" 0 "expire f1"
fill "$R2" 256
cbfs gc "$R2/r" --max-waste 0
like "$RC/$(tail -n 1 <<<"$ERR")" "^[1-9][0-9]*/cbfs: .*No space left on device\$" \
	"gc with a pack to rewrite on a full repository fails in one line"
cbfs check "$R2/r"
is "$RC" 0 "check: clean after the failed gc"
unfill "$R2"
cbfs gc "$R2/r" --max-waste 0
is "$RC" 0 "gc with room again"
cbfs check "$R2/r" --read-data
is "$RC" 0 "check --read-data after it"

# ---------------------------------------------------------------- the restore target
TGT=$TMP/target
small_fs "$TGT" 16m
cbfs restore "$R2/r@f2" "$TGT/d"
like "$RC/$ERR" \
	"^[1-9][0-9]*/cbfs: restore into \"$TGT/d\" is incomplete \\(remove it and retry\\): could not restore \"[^\"]+\" at offset [0-9]+: could not write file \"$TGT/d/[^\"]+\": No space left on device\$" \
	"restore into a full file system: one line naming the file"
ok "... and the half-written copy has no PG_VERSION (no server starts on it)" test ! -e "$TGT/d/PG_VERSION"
rm -rf "$TGT/d"
mount -o remount,size=256m "$TGT"
cbfs_restore "$R2/r@f2" target/d
is "$RC" 0 "restore with room"
ok "... complete" test -e "$TGT/d/PG_VERSION"

# ---------------------------------------------------------------- cache_dir and the local cache
CD=$TMP/cachefs
small_fs "$CD" 4m
fill "$CD"
mkdir -p "$TMP/m2"
# the manifest is read in place: with its overlay elsewhere, a mount
# writes nothing into cache_dir
cbfs_mount "$REPO@b1" "$TMP/m2" -o "cache_dir=$CD,overlay=$TMP/ov2"
is "$RC/$ERR" "0/" "mount with a full cache_dir and the overlay elsewhere: nothing to write there"
cbfs_umount "$TMP/m2"
# ... but a temporary overlay goes there
cbfs_mount "$REPO@b1" "$TMP/m2" -o "cache_dir=$CD"
like "$RC/$ERR" "^1/mount.cbfs: could not open overlay \"$CD/cbfs-overlay-[^\"]+/overlay.db\": No space left on device\$" \
	"mount with its temporary overlay in a full cache_dir: one line"
ok "... and nothing mounted" test "$(mount_count "$TMP/m2")" = 0
ok "... nor its temporary overlay left behind" test -z "$(ls "$CD" | grep cbfs-overlay)"
CBFS_CACHE_DIR=$CD/c cbfs backup "$REPO" --pgdata "$(datadir src)" --dbname "$(conninfo src)" --label c1
like "$RC/$(tail -n 1 <<<"$ERR")" "^1/cbfs: could not .*\"$CD/c/[^\"]+\".*: No space left on device\$" \
	"backup with a full local cache: one line naming it"
unfill "$CD"
CBFS_CACHE_DIR=$CD/c backup src "$REPO" c1

# ---------------------------------------------------------------- the WAL destination
WD=$TMP/walfs
small_fs "$WD" 24m
fill "$WD"
cbfs wal-fetch "$REPO" "$SEG" "$WD/RECOVERYXLOG"
like "$RC/$ERR" "^1/cbfs: could not write file \"$WD/RECOVERYXLOG[^\"]*\": No space left on device\$" \
	"wal-fetch into a full pg_wal: non-zero, one line"
is "$(find "$WD" -mindepth 1 ! -name ballast | wc -l)" 0 "... nothing left behind"
unfill "$WD"
cbfs wal-fetch "$REPO" "$SEG" "$WD/RECOVERYXLOG"
is "$RC/$ERR" "0/" "wal-fetch with room again"

pg_stop src
done_testing
