#!/usr/bin/env bash
# cbfs check (issue 6): the structure of a repository -- records, manifests,
# packs and their indexes, WAL continuity across timelines -- and with
# --read-data its blocks.  A sound repository passes; each kind of damage,
# made in a copy of it, is found, named (backup, file, offset, object) and
# exits 5.  Also --json, --metrics-file, a missing repository and bad usage.
source "$(dirname "$0")/lib.sh"
NL=$'\n'

REPO=$TMP/repo
repo_init "$REPO"
pg_init c
pg_archive c "$REPO"
pg_start c || bail "could not start cluster c"
psql_as c postgres "
	create table t (id int, pad text);
	insert into t select g, repeat(md5(g::text), 10) from generate_series(1, 5000) g;
	checkpoint" >/dev/null || bail "could not create table t"
relpath=$(psql_as c postgres "select pg_relation_filepath('t')")

backup c "$REPO" b1 || bail "backup b1 failed"

# b2 spans several WAL segments: WAL is switched all along it
backup_spanning c "$REPO" b2 b3 b4
B2=$SPAN_LABEL ws=$SPAN_START we=$SPAN_STOP
isnt "$ws" "$we" "backup $B2 spans several WAL segments ($ws to $we)"
# six more segments after it, all archived, then a quiet repository
for ((i = 0; i < 6; i++)); do
	newest=$(pg_switch_and_archive c) || bail "the archiver is stuck: $(tail -n 5 "$TMP/c.log")"
done
pg_stop c
LABELS=$(labels "$REPO" | tr '\n' ' ')
# as Python lists: every backup, and those before B2
ALL=$(/usr/bin/python3 -c 'import sys; print(sys.argv[1].split())' "$LABELS")
OLDER=$(/usr/bin/python3 -c 'import sys; print([l for l in sys.argv[1].split() if l != sys.argv[2]])' "$LABELS" "$B2")

# seg NAME DELTA: the segment DELTA after NAME (16 MB segments, timeline of NAME)
seg() {
	/usr/bin/python3 -c '
import sys
n, d = sys.argv[1], int(sys.argv[2])
s = int(n[8:16], 16) * 256 + int(n[16:24], 16) + d
print("%s%08X%08X" % (n[:8], s // 256, s % 256))' "$1" "$2"
}
# with_tli NAME TLI: NAME on another timeline
with_tli() { printf '%08X%s' "$2" "${1:8}"; }

# first_block LABEL PATH: "blockno pack offset stored_len" of PATH's first stored block
first_block() {
	mq "$REPO" "$1" "select b.blockno, p.name, b.offset, b.stored_len from blocks b
		join files f on f.id = b.file join packs p on p.id = b.pack
		where f.path = '$2' order by b.blockno limit 1" | tr '\t' ' '
}

# copy NAME: a copy of the repository to damage; prints its path
copy() {
	rm -rf "${TMP:?}/$1"
	cp -a "$REPO" "$TMP/$1" && echo "$TMP/$1"
}

# ---------------------------------------------------------------- a sound repository
cbfs check "$REPO"
is "$RC/$ERR" "0/" "check of a sound repository exits 0"
like "$OUT" "(^|$NL)backup \"b1\": ok \([0-9]+ files, [0-9]+ blocks, [0-9]+ packs\)" \
	"b1 is ok, with its counts"
like "$OUT" "backup \"$B2\": ok \(" "$B2 is ok"
like "$OUT" "WAL: [0-9]+ files on timeline 1, newest $newest" "the WAL line names the newest segment"
like "$OUT" "checked [0-9]+ backups, [0-9]+ packs?, [0-9]+ WAL files: no problems in [0-9.]+ s$" \
	"the summary line"

cbfs check "$REPO" --json
is "$RC" 0 "check --json exits 0"
is "$(json_get "$OUT" 'j["ok"]')" true "--json: ok is true"
is "$(json_get "$OUT" '" ".join(b["label"] for b in j["backups"]) + " "')" "$LABELS" \
	"--json: every backup, in list order"
is "$(json_get "$OUT" '[b["ok"] and b["problems"] == [] for b in j["backups"]] == [True] * len(j["backups"])')" \
	true "--json: every backup ok, without problems"
is "$(json_get "$OUT" 'j["problems"], j["read_data"], j["wal"]["gaps"], j["wal"]["newest"]')" \
	"(0, None, [], '$newest')" "--json: no problems, no read_data, no WAL gaps, the newest segment"
cmp_ok "$(json_get "$OUT" 'j["backups"][0]["blocks"]')" -gt 10 "--json: b1's block count"
cmp_ok "$(json_get "$OUT" 'j["packs"]["used"]')" -ge 1 "--json: packs used"

# every distinct block of both backups, by pack and offset
distinct=$({
	for l in b1 "$B2"; do
		mq "$REPO" "$l" "select p.name, b.offset from blocks b join packs p on p.id = b.pack"
	done
} | sort -u | wc -l)
cbfs check "$REPO" --read-data --json --metrics-file "$TMP/check.prom"
is "$RC" 0 "check --read-data of a sound repository exits 0"
is "$(json_get "$OUT" 'j["read_data"]["blocks"], j["read_data"]["bad_blocks"], j["read_data"]["percent"]')" \
	"($distinct, 0, 100)" "--read-data reads each distinct block once ($distinct)"
bytes=$(json_get "$OUT" 'j["read_data"]["bytes"]')
cmp_ok "$bytes" -gt 1000000 "--read-data counts the bytes read ($bytes)"
prom=$(cat "$TMP/check.prom")
like "$prom" "cbfs_check_success\{repository=\"$REPO\"\} 1" "metrics: success 1"
like "$prom" "cbfs_check_failures\{repository=\"$REPO\"\} 0" "metrics: no failures"
like "$prom" "cbfs_check_bytes_checked\{repository=\"$REPO\"\} $bytes" "metrics: the bytes read"
like "$prom" "cbfs_check_last_success_timestamp_seconds\{repository=\"$REPO\"\} [1-9]" \
	"metrics: last success time"
like "$prom" "cbfs_check_duration_seconds\{repository=\"$REPO\"\} [0-9.]+" "metrics: duration"

cbfs check "$REPO" --read-data -j 1
is "$RC" 0 "check --read-data -j 1 exits 0"
like "$OUT" "read $distinct blocks \([0-9.]+ [kMG]?B\): no problems" "the summary names the blocks read"
cbfs check "$REPO" --read-data 30 --json
is "$RC" 0 "check --read-data 30 (a separate argument) exits 0"
is "$(json_get "$OUT" 'j["read_data"]["percent"]')" 30 "--read-data 30: a 30% sample"
is "$(json_get "$OUT" '0 < j["read_data"]["blocks"] < '"$distinct")" true \
	"--read-data 30: some blocks, not all"
cbfs check --read-data=5 "$REPO"
is "$RC" 0 "check --read-data=5 before the repository exits 0"
like "$OUT" "a 5% sample" "... and says it read a sample"

# ---------------------------------------------------------------- a flipped byte in a pack
read -r blockno pack off len <<<"$(first_block b1 "$relpath")"
packkey=packs/${pack:0:2}/$pack.pack
D=$(copy flipped)
flip_byte "$D/$packkey" $((off + len / 2))
cbfs check "$D"
is "$RC/$ERR" "0/" "a flipped byte inside a block: the structure is still sound"
cbfs check "$D" --read-data --metrics-file "$TMP/flipped.prom"
is "$RC" 5 "... but check --read-data exits 5"
like "$OUT" "backup \"b1\": [0-9]+ problems? " "... under backup b1"
like "$OUT" "  file \"$relpath\" at offset $((blockno * 65536)): pack \"$packkey\" offset $off: block [0-9a-f]{64} is corrupt" \
	"... naming the file, its offset, the pack and the offset in it"
like "$ERR" "^cbfs: repository \"$D\" has [0-9]+ problems?$" "... and one line on stderr"
like "$(cat "$TMP/flipped.prom")" "cbfs_check_success\{repository=\"$D\"\} 0" "metrics: success 0"
like "$(cat "$TMP/flipped.prom")" "cbfs_check_failures\{repository=\"$D\"\} [1-9]" "metrics: failures"
cbfs check "$D" --read-data --json
is "$(json_get "$OUT" 'j["ok"], j["read_data"]["bad_blocks"]')" "(False, 1)" "--json: not ok, 1 bad block"
is "$(json_get "$OUT" 'str([(p["kind"], p["file"], p["offset"], p["object"], p["pack_offset"]) for p in j["backups"][0]["problems"]])')" \
	"[('bad-block', '$relpath', $((blockno * 65536)), '$packkey', $off)]" "--json: the problem of b1"

# ---------------------------------------------------------------- a missing pack
D=$(copy nopack)
rm "$D/$packkey"
cbfs check "$D" --json
is "$RC" 5 "a deleted pack: check exits 5"
is "$(json_get "$OUT" 'str([(p["kind"], p["object"]) for p in j["backups"][0]["problems"]])')" \
	"[('missing-pack', '$packkey')]" "--json: b1 misses the pack"
cmp_ok "$(json_get "$OUT" 'j["backups"][0]["problems"][0]["blocks"]')" -ge 1 "--json: the blocks in it"
cbfs check "$D"
like "$OUT" "backup \"b1\": [0-9]+ problems? \([^$NL]*$NL  pack \"$packkey\" is missing; it holds [0-9]+ blocks? of the backup$NL      \"[^\"]+\" at offset [0-9]+" \
	"the missing pack is named under b1, with files and offsets that use it"

# ---------------------------------------------------------------- a damaged manifest
D=$(copy badmanifest)
mkey=$(sed -n 's/^manifest = //p' "$D/backups/b1.info")
flip_byte "$D/$mkey" 5000
cbfs check "$D"
is "$RC" 5 "a damaged manifest: check exits 5"
like "$OUT" "backup \"b1\": 1 problem$NL  manifest \"$mkey\" of backup \"b1\" is corrupt: chunk 0: checksum mismatch" \
	"... a problem of b1 naming the manifest"
like "$OUT" "backup \"$B2\": ok" "... the other backup is ok"

# a manifest naming paths a restore refuses
D=$(copy badpath)
medit "$D" b1 "update files set path = '../escape' where path = 'PG_VERSION';
	update files set path = '/etc/passwd' where path = 'postgresql.conf'"
cbfs check "$D" --json
is "$RC" 5 "a manifest with a path outside the data directory: check exits 5"
is "$(json_get "$OUT" 'str(sorted((p["kind"], p["file"]) for p in j["backups"][0]["problems"]))')" \
	"[('bad-path', '../escape'), ('bad-path', '/etc/passwd')]" "--json: both paths are named"
cbfs check "$D"
like "$OUT" "  the manifest names an invalid path \"\.\./escape\"" "... in the report"

# a block the pack's index does not list at that offset
D=$(copy badref)
medit "$D" b1 "update blocks set offset = offset + 1
	where file = (select id from files where path = '$relpath') and blockno = $blockno"
cbfs check "$D" --read-data --json
is "$RC" 5 "a block ref its pack's index does not list: check exits 5"
is "$(json_get "$OUT" 'str([(p["kind"], p["file"], p["offset"], p["object"], p["pack_offset"]) for p in j["backups"][0]["problems"]])')" \
	"[('bad-index-entry', '$relpath', $((blockno * 65536)), '$packkey', $((off + 1)))]" \
	"--json: the file, offset, pack and offset in it"
cbfs check "$D"
like "$OUT" "  file \"$relpath\" at offset $((blockno * 65536)): no block is indexed at offset $((off + 1)) of pack \"$packkey\"" \
	"... in the report"

# packs whose trailer index is damaged: one a backup uses, one none uses
D=$(copy badindex)
size=$(stat -c %s "$D/$packkey")
flip_byte "$D/$packkey" $((size - 56 - 20))
orphan=packs/ab/ab$(printf '%030d' 7).pack
mkdir -p "$D/packs/ab"
head -c 100 /dev/urandom >"$D/$orphan"
cbfs check "$D" --json
is "$RC" 5 "damaged pack indexes: check exits 5"
is "$(json_get "$OUT" 'str([(p["kind"], p["object"], p["message"]) for p in j["backups"][0]["problems"]])')" \
	"[('bad-pack', '$packkey', 'pack \"$packkey\" has a damaged index; it holds $(json_get "$OUT" 'j["backups"][0]["problems"][0]["blocks"]') blocks of the backup')]" \
	"--json: the used one, for the backup"
is "$(json_get "$OUT" 'str(([(p["kind"], p["object"]) for p in j["packs"]["problems"]], j["packs"]["unused"]))')" \
	"([('bad-pack', '$orphan')], 1)" "--json: the unused one, for the repository"
# one byte more than the trailer says
D=$(copy longpack)
printf x >>"$D/$packkey"
cbfs check "$D"
is "$RC" 5 "a pack longer than its trailer says: check exits 5"
like "$OUT" "  pack \"$packkey\" has a damaged index; it holds [0-9]+ blocks? of the backup" \
	"... its index is damaged"

# ---------------------------------------------------------------- WAL gaps
inside=$(seg "$ws" 1)
D=$(copy walgap)
rm "$D/wal/00000001/$inside"
cbfs check "$D"
is "$RC" 5 "a WAL segment missing between a backup's start and stop: check exits 5"
like "$OUT" "backup \"$B2\": 1 problem \([^$NL]*$NL  WAL missing: $inside \(timeline 1\), needed by backup \"$B2\"$NL" \
	"... the backup that needs it"
like "$OUT" "backup \"b1\": 1 problem \([^$NL]*$NL  WAL missing: $inside \(timeline 1\), needed for recovery past backup \"b1\"" \
	"... and recovery past the older backup"
like "$OUT" "WAL: [0-9]+ files on timeline 1, newest $newest, 2 gaps" "the WAL line counts the gaps"
cbfs check "$D" --json
is "$(json_get "$OUT" 'str([(g["from"], g["to"], g["inside_backup"], g["backups"]) for g in j["wal"]["gaps"]])')" \
	"[('$inside', '$inside', False, $OLDER), ('$inside', '$inside', True, ['$B2'])]" \
	"--json: the gaps grouped, inside the backup or past it"
is "$(json_get "$OUT" 'str([(p["kind"], p["timeline"], p["from"], p["inside_backup"]) for p in j["backups"][-1]["problems"]])')" \
	"[('wal-gap', 1, '$inside', True)]" "--json: the problem of $B2"

after=$(seg "$we" 2)
D=$(copy walafter)
rm "$D/wal/00000001/$(seg "$we" 1)" "$D/wal/00000001/$after"
cbfs check "$D"
is "$RC" 5 "WAL missing after the last backup's stop: check exits 5"
like "$OUT" "  WAL missing from $(seg "$we" 1) to $after \(timeline 1\), needed for recovery past backup \"$B2\"" \
	"... named as needed for recovery past the backup, as one range"
cbfs check "$D" --json
is "$(json_get "$OUT" 'str([(g["from"], g["to"], g["inside_backup"], g["backups"]) for g in j["wal"]["gaps"]])')" \
	"[('$(seg "$we" 1)', '$after', False, $ALL)]" "--json: one gap, needed past every backup"

# ---------------------------------------------------------------- timelines
# Timeline 2 branches off timeline 1 in segment S after the last backup, as
# a promotion does: timeline 1 up to S-1 and S.partial, timeline 2 from S on
# with its history file.
S=$(seg "$we" 2)
D=$(copy tl)
mkdir -p "$TMP/hist"
printf '1\t%X/%X\tno recovery target specified\n' $((0x${S:8:8})) $((0x${S:16:8} * 16777216 + 4096)) \
	>"$TMP/hist/00000002.history"
cbfs wal-push "$D" "$TMP/hist/00000002.history"
is "$RC/$ERR" "0/" "a timeline 2 history file"
mkdir -p "$D/wal/00000002"
for ((i = 0; i < 3; i++)); do
	cp "$D/wal/00000001/$ws" "$D/wal/00000002/$(with_tli "$(seg "$S" $i)" 2)"
done
mv "$D/wal/00000001/$S" "$D/wal/00000001/$S.partial"
for ((i = 1; i < 8; i++)); do
	rm -f "$D/wal/00000001/$(seg "$S" $i)"
done
cbfs check "$D"
is "$RC/$ERR" "0/" "WAL that follows a timeline switch is complete"
like "$OUT" "WAL: [0-9]+ files on timelines 1, 2, newest $(with_tli "$(seg "$S" 2)" 2)$NL" \
	"... on timelines 1 and 2"

D2=$TMP/tl-gap
rm -rf "$D2" && cp -a "$D" "$D2"
rm "$D2/wal/00000001/$(seg "$S" -1)" "$D2/wal/00000002/$(with_tli "$(seg "$S" 1)" 2)"
cbfs check "$D2"
is "$RC" 5 "gaps on both sides of a timeline switch: check exits 5"
like "$OUT" "  WAL missing: $(seg "$S" -1) \(timeline 1\), needed for recovery past backup \"$B2\"$NL  WAL missing: $(with_tli "$(seg "$S" 1)" 2) \(timeline 2\), needed for recovery past backup \"$B2\"" \
	"... each on its timeline"

D2=$TMP/tl-nohist
rm -rf "$D2" && cp -a "$D" "$D2"
rm "$D2/wal/00000002/00000002.history"
cbfs check "$D2"
is "$RC" 5 "a timeline without its history file: check exits 5"
like "$OUT" "WAL: [^$NL]*$NL  WAL history file \"wal/00000002/00000002.history\" is missing \(timeline 2 has WAL files\)" \
	"... named in the WAL section"

D2=$TMP/tl-badhist
rm -rf "$D2" && cp -a "$D" "$D2"
echo "not a history" >"$TMP/hist/00000003.history"
cbfs wal-push "$D2" "$TMP/hist/00000003.history"
cbfs check "$D2" --json
is "$RC" 5 "a damaged history file: check exits 5"
is "$(json_get "$OUT" 'str([(p["kind"], p["object"]) for p in j["wal"]["problems"]])')" \
	"[('bad-history', 'wal/00000003/00000003.history')]" "--json: a WAL problem naming it"

# ---------------------------------------------------------------- no repository, bad usage
cbfs list "$TMP/nowhere"
want=$ERR
like "$want" "^cbfs: could not open repository \"$TMP/nowhere\": " "cbfs list of a missing repository"
cbfs check "$TMP/nowhere" --metrics-file "$TMP/nowhere.prom"
check_error "check of a missing repository: exit 3, the same message" 3 "$want"
like "$(cat "$TMP/nowhere.prom")" "cbfs_check_success\{repository=\"$TMP/nowhere\"\} 0" \
	"... and metrics with success 0"
for v in 0 101 x ""; do
	cbfs check "$REPO" --read-data="$v"
	check_error "--read-data=$v is a usage error" 2 \
		"cbfs: invalid value for --read-data: \"$v\" (expected a percentage from 1 to 100)
Try \"cbfs check --help\" for more information."
done
cbfs check "$REPO" --read-data 0
is "$RC" 2 "--read-data 0 (a separate argument) is a usage error"
cbfs check
is "$RC" 2 "no repository: a usage error"
cbfs check --help
is "$RC" 0 "--help exits 0"
like "$OUT" "--read-data\[=PERCENT\]" "--help documents --read-data"
like "$OUT" '"wal": \{"files", "timelines", "newest",' "--help documents the JSON"

# nothing left behind
is "$(ls "${TMPDIR:-/tmp}" | grep -c '^cbfs-check\.')" 0 "no temporary directory is left behind"

done_testing
