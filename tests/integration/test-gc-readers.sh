#!/usr/bin/env bash
# Every reader of a backup that gc has rewritten (issue 14): after expire and
# gc, restore (--jobs 1 and --jobs 4), the mount and check --read-data read
# every kept backup exactly as it read before gc, after one rewrite and after
# a second one that moves blocks again (relocation of a relocation).  Run on
# two repositories at once, one plain and one encrypted, either local
# (argument "local") or on a real S3 server (argument "s3").
#
# The data makes both shapes that break a reader that resolves runs of
# blocks instead of blocks: a table updated in clustered ranges, so that a
# rewritten pack keeps runs of used blocks longer than gc's 8 MiB extents
# (gc cuts them into adjacent extents: the shape of the reported failure,
# "relocation map … does not cover offset …"), and a table updated in rows
# scattered over it, so that kept and dropped blocks interleave in packs.
# What each reader returns is compared with a restore of the same backup
# made before any gc; the newest restores also start and hold the source's
# rows.
source "$(dirname "$0")/lib.sh"
need_mount

KIND=${1:-local}
case $KIND in
local)
	PLAIN=$TMP/plain
	SEALED=$TMP/sealed
	;;
s3)
	source "$CBFS_SRCDIR/tests/integration/lib-s3.sh"
	s3_setup cbfs-readers
	s3_config "$TMP/cbfs.conf"
	s3_env_off
	export CBFS_CONFIG=$TMP/cbfs.conf
	PLAIN=s3://cbfs-readers/plain
	SEALED=s3://cbfs-readers/sealed
	;;
*) bail "unknown kind \"$KIND\" (local or s3)" ;;
esac
export CBFS_PASSPHRASE=readers-test-passphrase # postgres's archive_command inherits it
repo_init "$PLAIN"
repo_init "$SEALED" --encrypt
REPOS=("$PLAIN" "$SEALED")
declare -A NAME=(["$PLAIN"]=plain ["$SEALED"]=encrypted)

pg_init d
mkdir -p "$TMP/ts1" && chown postgres:postgres "$TMP/ts1"
pg_conf d "archive_mode = on" "archive_command = '$CBFS wal-push $PLAIN %p && $CBFS wal-push $SEALED %p'"
pg_start d || bail "could not start cluster d"
psql_as d postgres "create tablespace ts1 location '$TMP/ts1'" >/dev/null &&
	psql_as d postgres "create database app" >/dev/null || bail "could not create app"
# rows of ~200 random bytes, which zstd cannot shrink: a pack holds some
# 70000 rows of customers
psql_as d app "
	create table customers (id int primary key, name text, pad bytea);
	insert into customers select g, 'c' || g,
		(select string_agg(decode(md5(random()::text || g || i), 'hex'), ''::bytea)
		 from generate_series(1, 12) i)
	from generate_series(1, 160000) g;
	create table orders (id int primary key, note text, pad bytea) tablespace ts1;
	insert into orders select g, 'o' || g,
		(select string_agg(decode(md5(random()::text || g || i), 'hex'), ''::bytea)
		 from generate_series(1, 12) i)
	from generate_series(1, 60000) g" >/dev/null || bail "could not load the data"
APP_OID=$(psql_as d postgres "select oid from pg_database where datname = 'app'")
psql_as d app "vacuum freeze" >/dev/null && psql_as d postgres "checkpoint" >/dev/null ||
	bail "vacuum failed"

# change SQL: runs SQL on app, then a checkpoint (the backup reads the files)
change() {
	psql_as d app "$1" >/dev/null && psql_as d postgres "checkpoint" >/dev/null ||
		fail "change: $1"
}

# backup_all LABEL: LABEL into both repositories; H_<LABEL> holds the rows
backup_all() {
	local r
	for r in "${REPOS[@]}"; do
		backup d "$r" "$1" --jobs 2
	done
	printf -v "H_$1" '%s' "$(table_hashes d app)"
}

# fingerprint DIR: the md5 of every file of the data directory a backup
# holds (tablespaces followed), one a line, sorted by path
fingerprint() {
	(cd "$1" && find -L base global pg_tblspc pg_xact pg_multixact -type f -print0 |
		sort -z | xargs -0 md5sum)
}

# reference REPO LABEL: the fingerprint of LABEL restored before any gc
reference() {
	local dir=$TMP/ref
	rm -rf "$dir" "$TMP/ref-ts"
	cbfs restore "$1@$2" "$dir" --tablespace-map "ts1=$TMP/ref-ts" --jobs 4
	((RC == 0)) || fail "${NAME[$1]} $2: the reference restore" "$ERR"
	fingerprint "$dir" >"$TMP/ref.${NAME[$1]}.$2"
	# all of it: the tablespace followed, the big tables' segments
	cmp_ok "$(grep -c " pg_tblspc/.*/$APP_OID/" "$TMP/ref.${NAME[$1]}.$2")" -ge 3 \
		"${NAME[$1]} $2: the reference holds the tablespace's files"
	rm -rf "$dir" "$TMP/ref-ts"
}

# readers REPO LABEL STAGE JOBS [mount] [keep]: LABEL restored with each of
# JOBS ("1 4") and, with mount, mounted, returns the reference; with keep,
# the restore made with --jobs 4 stays (for starts)
readers() {
	local repo=$1 label=$2 stage=$3 jobs_list=$4 mount=${5:-} keep=${6:-} what=${NAME[$1]} jobs dir mnt
	for jobs in $jobs_list; do
		dir=$TMP/r-$what-$label-$jobs
		cbfs restore "$repo@$label" "$dir" --tablespace-map "ts1=$dir.ts" --jobs "$jobs"
		if ((RC == 0)); then
			pass "$what, $stage: restore of $label with --jobs $jobs"
			is "$(fingerprint "$dir" | md5sum)" "$(md5sum <"$TMP/ref.$what.$label")" \
				"$what, $stage: ... every file as before gc"
		else
			fail "$what, $stage: restore of $label with --jobs $jobs" "exit $RC" "$ERR"
		fi
		[[ $jobs == 4 && -n $keep ]] || rm -rf "$dir" "$dir.ts"
	done
	[[ -n $mount ]] || return 0
	mnt=$TMP/m-$what-$label
	mkdir -p "$mnt"
	cbfs_mount "$repo@$label" "$mnt" -o uid=postgres,gid=postgres
	if ((RC == 0)); then
		is "$(fingerprint "$mnt" | md5sum)" "$(md5sum <"$TMP/ref.$what.$label")" \
			"$what, $stage: the mount of $label reads every file as before gc"
		cbfs_umount "$mnt"
	else
		fail "$what, $stage: mount of $label" "exit $RC" "$ERR"
	fi
}

# check_clean REPO STAGE
check_clean() {
	cbfs check "$1" --read-data --jobs 4
	if ((RC == 0)); then
		pass "${NAME[$1]}, $2: check --read-data finds nothing"
	else
		fail "${NAME[$1]}, $2: check --read-data finds nothing" "exit $RC" "$OUT" "$ERR"
	fi
}

# maps REPO: the relocation maps of a local plain repository, one
# "pack old_off len new_pack new_off" line per extent
maps() {
	local m
	for m in "$1"/moved/*/*; do
		[[ -f $m ]] && awk -v p="$(basename "$m")" 'NF == 4 { print p, $0 }' "$m"
	done
}

# starts NAME LABEL: the restore of LABEL (kept from readers) starts and holds
# the rows the source held at LABEL
starts() {
	local name=r-$1-$2-4 hv="H_$2"
	chown -R postgres:postgres "$(datadir "$name")" "$(datadir "$name").ts"
	if pg_start "$name" && pg_wait_promoted "$name"; then
		is "$(table_hashes "$name" app)" "${!hv}" "$1: the restored $2 starts and holds the source's rows"
	else
		fail "$1: the restored $2 starts"
	fi
	pg_stop "$name"
	rm -rf "$(datadir "$name")" "$(datadir "$name").ts"
}

# collect_all LABEL MAX_WASTE: in both repositories, expire keeping the
# newest two backups drops LABEL, and gc --max-waste MAX_WASTE rewrites packs
collect_all() {
	local r
	for r in "${REPOS[@]}"; do
		cbfs expire "$r" --keep-last 2
		like "$OUT" "expired 1 of 3 backups" "${NAME[$r]}: expire drops $1"
		cbfs gc "$r" --max-waste "$2"
		like "$OUT" "gc complete: removed [0-9]+ packs?, rewrote [1-9][0-9]* packs?" \
			"${NAME[$r]}: gc --max-waste $2 rewrites packs"
	done
}

# ---------------------------------------------------------------- three backups
backup_all b1
# clustered: a quarter of customers in ranges of 15000 rows, the rest in runs
# of 45000 (some 10 MB); scattered: one row in 2000 of orders
change "update customers set name = name || 'x' where id % 60000 >= 45000;
	update orders set note = note || 'x' where id % 2000 = 0"
backup_all b2
change "update orders set note = note || 'y' where id % 2000 = 500"
backup_all b3
for r in "${REPOS[@]}"; do
	reference "$r" b2
	reference "$r" b3
done

# ---------------------------------------------------------------- first rewrite
collect_all b1 10
if [[ $KIND == local ]]; then
	# a run of used blocks cut into adjacent extents
	cut=$(maps "$PLAIN" | sort -k1,1 -k2,2n |
		awk '$1 == p && $2 == end { n++ } { p = $1; end = $2 + $3 } END { print n + 0 }')
	cmp_ok "$cut" -gt 0 "plain: a map cuts a run of blocks into adjacent extents ($cut)"
fi
# every reader of every kept backup, locally; on S3, where a restore costs
# a thousand requests, each reader once a stage
for r in "${REPOS[@]}"; do
	if [[ $KIND == local ]]; then
		readers "$r" b2 "one rewrite" "1 4" mount
		readers "$r" b3 "one rewrite" "1 4" mount
	else
		readers "$r" b2 "one rewrite" 4
		readers "$r" b3 "one rewrite" 1 mount
	fi
	check_clean "$r" "one rewrite"
done

# ---------------------------------------------------------------- second rewrite
change "update orders set note = note || 'z' where id % 2000 = 1000;
	update customers set name = name || 'z' where id % 60000 < 3000"
backup_all b4
for r in "${REPOS[@]}"; do
	reference "$r" b4
done
collect_all b2 0
if [[ $KIND == local ]]; then
	# a map into a pack that was rewritten in turn
	chained=$(maps "$PLAIN" | while read -r _ _ _ to _; do
		[[ -e $PLAIN/moved/${to:0:2}/$to ]] && echo x
	done | wc -l)
	cmp_ok "$chained" -gt 0 "plain: blocks were moved twice (maps into moved packs: $chained)"
fi
for r in "${REPOS[@]}"; do
	if [[ $KIND == local ]]; then
		readers "$r" b3 "two rewrites" "1 4" mount
		readers "$r" b4 "two rewrites" "1 4" mount keep
	else
		readers "$r" b3 "two rewrites" 1 mount
		readers "$r" b4 "two rewrites" 4 "" keep
	fi
	check_clean "$r" "two rewrites"
	starts "${NAME[$r]}" b4
done

# ---------------------------------------------------------------- check and restore agree
# On damaged copies of the plain repository: a map that lost an extent, a
# pack blocks were moved into that is gone.  Whatever check says of each
# backup, restore does the same, and both name the same object.
if [[ $KIND == local ]]; then
	D=$TMP/damaged
	# agree WHAT OBJECT: check's verdict on b3 and b4 is restore's
	agree() {
		local what=$1 object=$2 b dir verdict
		cbfs check "$D" --json
		local json=$OUT
		for b in b3 b4; do
			verdict=$(json_get "$json" "[x['ok'] for x in j['backups'] if x['label'] == '$b'][0]")
			dir=$TMP/agree
			rm -rf "$dir" "$dir.ts"
			cbfs restore "$D@$b" "$dir" --tablespace-map "ts1=$dir.ts" --jobs 4
			rm -rf "$dir" "$dir.ts"
			if [[ $verdict == true ]]; then
				is "$RC" 0 "$what: check passes $b, and restore restores it"
			else
				is "$RC" 5 "$what: check fails $b, and restore fails it"
				like "$ERR" "\"$object\"" "... naming $object"
				like "$(json_get "$json" "[p['message'] for x in j['backups'] if x['label'] == '$b' for p in x['problems']]")" \
					"\"$object\"" "... as check does"
			fi
			FAILED_ANY=$((FAILED_ANY + (RC != 0)))
			AGREE_ERR[$b]=$ERR
		done
	}
	# edit_map FILE LINE: FILE without its extent line LINE (1: the first),
	# its count and checksum made right again
	edit_map() {
		/usr/bin/python3 - "$1" "$2" <<-'PY'
			import hashlib, sys
			path, drop = sys.argv[1], int(sys.argv[2])
			lines = open(path).read().split("\n")[:-1]
			head, ext = lines[0], lines[1:-1]
			del ext[drop - 1]
			text = "\n".join([head] + ext) + "\n"
			end = "end %d %s\n" % (len(ext), hashlib.sha256(text.encode()).hexdigest())
			open(path, "w").write(text + end)
		PY
	}
	FAILED_ANY=0
	declare -A AGREE_ERR=()
	# the maps with several extents, each losing its first, then its last one
	for m in $(maps "$PLAIN" | awk '{ n[$1]++ } END { for (p in n) if (n[p] > 1) print p }' | sort | head -n 3); do
		for line in 1 -1; do
			rm -rf "$D" && cp -a "$PLAIN" "$D"
			f=$D/moved/${m:0:2}/$m
			count=$(grep -c '^[0-9]' "$f")
			edit_map "$f" "$((line > 0 ? 1 : count))"
			agree "map $m without extent $line" "moved/${m:0:2}/$m"
		done
	done
	# a pack blocks were moved into, gone: the one most extents lead to
	to=$(maps "$PLAIN" | awk '{ print $4 }' | while read -r p; do
		[[ -e $PLAIN/packs/${p:0:2}/$p.pack ]] && echo "$p"
	done | sort | uniq -c | sort -k1,1nr -k2 | awk 'NR == 1 { print $2 }')
	rm -rf "$D" && cp -a "$PLAIN" "$D"
	rm -f "$D/packs/${to:0:2}/$to.pack"
	agree "pack $to gone" "packs/${to:0:2}/$to.pack"
	# b3 names blocks by the packs gc rewrote (b4 may name the new ones)
	like "${AGREE_ERR[b3]}" "is missing \(gc moved the block there from pack \"packs/" \
		"... b3's block moved there, and from where"
	cmp_ok "$FAILED_ANY" -gt 0 "some damage made a backup fail ($FAILED_ANY)"
	rm -rf "$D"
fi

done_testing
