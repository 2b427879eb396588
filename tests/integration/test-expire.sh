#!/usr/bin/env bash
# cbfs expire, pin and unpin on a made-up history (tests/integration/
# expire-history.py): 116 backups over 120 days with gaps and several a day,
# their WAL and restore points.  What each policy keeps is compared with an
# independent oracle; then expire removes exactly the others, their
# manifests, the WAL before the oldest kept backup's start and the restore
# points before it.  No PostgreSQL is needed: expire reads records only.
source "$(dirname "$0")/lib.sh"

HIST=$CBFS_SRCDIR/tests/integration/expire-history.py
CBFS_NOW=$(date +%s)
export CBFS_NOW
MASTER=$TMP/master
cbfs init "$MASTER"
((RC == 0)) || bail "init: $ERR"
/usr/bin/python3 "$HIST" make "$MASTER" || bail "could not make the history"
TOTAL=$(ls "$MASTER"/backups/*.info | wc -l)
is "$TOTAL" 116 "the made-up history has 116 backups"

# kept_by REPO OPTION...: the labels cbfs expire --dry-run keeps, sorted like list
kept_by() {
	local repo=$1
	shift
	cbfs expire "$repo" "$@" --dry-run
	((RC == 0)) || {
		echo "expire failed ($RC): $ERR"
		return
	}
	sed -n 's/^keep    \([^ ]*\) .*/\1/p' <<<"$OUT" | sort
}

oracle() {
	local repo=$1
	shift
	/usr/bin/python3 "$HIST" keep "$repo" "$@" | sort
}

POLICIES=(
	"--keep-last 1"
	"--keep-last 7"
	"--keep-within 36h"
	"--keep-within 10d"
	"--keep-daily 7"
	"--keep-daily 30"
	"--keep-weekly 4"
	"--keep-weekly 10"
	"--keep-monthly 3"
	"--keep-monthly 12"
	"--keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 6"
	"--keep-within 2d --keep-weekly 8"
)
for p in "${POLICIES[@]}"; do
	# shellcheck disable=SC2086 # word splitting intended
	got=$(kept_by "$MASTER" $p)
	# shellcheck disable=SC2086
	want=$(oracle "$MASTER" $p)
	if [[ -n $want && $got == "$want" ]]; then
		pass "policy $p keeps $(wc -l <<<"$want") backups, as the oracle says"
	else
		fail "policy $p" "got:  $(tr '\n' ' ' <<<"$got")" "want: $(tr '\n' ' ' <<<"$want")"
	fi
done
# a dry run changes nothing
is "$(ls "$MASTER"/backups/*.info | wc -l)" 116 "dry runs removed no backup"

# the reasons are printed
cbfs expire "$MASTER" --keep-last 3 --keep-daily 7 --dry-run
NEWEST=$(ls "$MASTER"/backups/*.info | sort | tail -n1 | xargs basename | sed 's/\.info$//')
like "$OUT" "keep    $NEWEST \\(newest, last, daily\\)" "the newest backup's reasons"
like "$OUT" "would expire [0-9]+ of 116 backups" "the dry run's summary"

# ---- a real expire: exactly the others go, with their manifests, WAL and points
R=$TMP/r1
cp -a "$MASTER" "$R"
want=$(oracle "$R" --keep-daily 7 --keep-weekly 4)
cbfs expire "$R" --keep-daily 7 --keep-weekly 4
is "$RC" 0 "expire --keep-daily 7 --keep-weekly 4 succeeds"
like "$OUT" "expired [0-9]+ of 116 backups, [0-9]+ WAL files .* and [0-9]+ restore points; run \"cbfs gc\"" "expire's summary"
got=$(ls "$R"/backups/*.info | xargs -n1 basename | sed 's/\.info$//' | sort)
is "$got" "$want" "the records left are exactly the kept backups"
dbs=$(ls "$R"/backups/*.db | xargs -n1 basename | sed 's/\.00000000\.db$//' | sort)
is "$dbs" "$want" "the manifests left are exactly the kept backups'"
labels "$R" >/dev/null
is "$RC" 0 "cbfs list works after expire"
# WAL: nothing before the oldest kept backup's start, everything from it on
OLDEST=$(head -n1 <<<"$want")
CUT=$(sed -n 's/^wal_start = //p' "$R/backups/$OLDEST.info")
CUT_LSN=$(sed -n 's/^start_lsn = //p' "$R/backups/$OLDEST.info")
before=0 after=0 missing_after=0
for f in "$MASTER"/wal/00000001/*; do
	n=$(basename "$f")
	seg=${n:0:24}
	if [[ $seg < $CUT ]]; then
		[[ -e $R/wal/00000001/$n ]] && before=$((before + 1))
	else
		after=$((after + 1))
		[[ -e $R/wal/00000001/$n ]] || missing_after=$((missing_after + 1))
	fi
done
is "$before" 0 "no WAL file before the oldest kept backup's start ($CUT) is left"
cmp_ok "$after" -gt 50 "WAL files from the cut on: $after"
is "$missing_after" 0 "every WAL file from the oldest kept backup's start on is kept"
ok "history files are kept" test -e $R/wal/00000002/00000002.history
ok "an old backup history file is removed" test ! -e $R/wal/00000001/000000010000000000000005.00000028.backup
ok "an old partial segment is removed" test ! -e $R/wal/00000001/000000010000000000000007.partial
# points: those before the cut's LSN go, the others stay
pts_bad=0
for f in "$MASTER"/points/*; do
	n=$(basename "$f")
	lsn=$(sed -n 's/^lsn = //p' "$f")
	lt=$(/usr/bin/python3 -c 'import sys
def v(s): a, b = s.split("/"); return int(a, 16) << 32 | int(b, 16)
print(int(v(sys.argv[1]) < v(sys.argv[2])))' "$lsn" "$CUT_LSN")
	if ((lt)) && [[ -e $R/points/$n ]]; then pts_bad=$((pts_bad + 1)); fi
	if ((!lt)) && [[ ! -e $R/points/$n ]]; then pts_bad=$((pts_bad + 1)); fi
done
is "$pts_bad" 0 "restore points before the oldest kept backup's start are removed, the others kept"
# again: nothing more to do
cbfs expire "$R" --keep-daily 7 --keep-weekly 4
like "$OUT" "expired 0 of [0-9]+ backups, 0 WAL files" "a second expire with the same policy removes nothing"

# ---- pins
R=$TMP/r2
cp -a "$MASTER" "$R"
OLD=$(ls "$R"/backups/*.info | sort | sed -n 5p | xargs basename | sed 's/\.info$//')
cbfs pin "$R@$OLD"
is "$RC:$OUT" "0:backup $OLD pinned" "pin an old backup"
cbfs pin "$R@$OLD"
is "$RC:$OUT" "0:backup $OLD is already pinned" "pinning twice is fine"
got=$(kept_by "$R" --keep-last 2)
want=$(oracle "$R" --keep-last 2)
is "$got" "$want" "the oracle and expire agree with a pin"
like "$got" "$OLD" "the pinned backup is kept"
cbfs expire "$R" --keep-last 2
like "$OUT" "keep    $OLD \\(pinned\\)" "expire says why the pinned backup stays"
ok "the pinned backup is still there" test -e $R/backups/$OLD.info
OLD_WAL=$(sed -n 's/^wal_start = //p' "$R/backups/$OLD.info")
ok "the WAL from the pinned backup's start on stays" test -e $R/wal/00000001/$OLD_WAL
is "$(ls "$R"/backups/*.info | wc -l)" 3 "the pinned and the two newest are left"
cbfs unpin "$R@$OLD"
is "$RC:$OUT" "0:backup $OLD unpinned" "unpin"
cbfs expire "$R" --keep-last 2
ok "once unpinned, the backup expires" test ! -e $R/backups/$OLD.info
cbfs unpin "$R@$OLD"
check_error "unpin of a backup not pinned" 7 "cbfs: backup \"$OLD\" is not pinned in repository \"$R\""
cbfs pin "$R@nosuch"
check_error "pin of an unknown backup" 7 "cbfs: backup \"nosuch\" not found in repository \"$R\""
ok "no pin object is left for an unknown backup" test ! -e $R/pins/nosuch
cbfs pin "$R"
NEWEST_R=$(ls "$R"/backups/*.info | sort | tail -n1 | xargs basename | sed 's/\.info$//')
is "$RC:$OUT" "0:backup $NEWEST_R pinned" "pin without a label pins the newest"

# ---- the policy from the configuration file
R=$TMP/r3
cp -a "$MASTER" "$R"
printf 'keep_daily = 7\nkeep_weekly = 4\n' >"$TMP/cbfs.conf"
CBFS_CONFIG=$TMP/cbfs.conf run "$CBFS" expire "$R" --dry-run
got=$(sed -n 's/^keep    \([^ ]*\) .*/\1/p' <<<"$OUT" | sort)
is "$got" "$(oracle "$R" --keep-daily 7 --keep-weekly 4)" "keep_daily and keep_weekly from the configuration file"
CBFS_CONFIG=$TMP/cbfs.conf run "$CBFS" expire "$R" --keep-last 1 --dry-run
is "$(grep -c '^keep ' <<<"$OUT")" 1 "a policy on the command line replaces the file's"
printf 'keep_daily = many\n' >"$TMP/bad.conf"
CBFS_CONFIG=$TMP/bad.conf run "$CBFS" expire "$R" --dry-run
like "$ERR" "^cbfs: invalid value \"many\" for keep_daily: must be a positive integer" "a bad value in the file"
is "$RC" 2 "... exits 2"

# ---- bad input
cbfs expire "$R"
check_error "no policy" 2 "cbfs: no retention policy: give --keep-last, --keep-within, --keep-daily, --keep-weekly or --keep-monthly, or set keep_last, keep_within, ... in the configuration file
Try \"cbfs expire --help\" for more information."
cbfs expire "$R" --keep-last 0
check_error "--keep-last 0" 2 "cbfs: invalid value \"0\" for --keep-last: must be a positive integer
Try \"cbfs expire --help\" for more information."
cbfs expire "$R" --keep-within 3x
check_error "a bad duration" 2 "cbfs: invalid value \"3x\" for --keep-within: must be a duration such as 36h or 14d
Try \"cbfs expire --help\" for more information."
cbfs expire "$TMP/nosuch" --keep-last 1
check_error "a missing repository" 3 "cbfs: could not open repository \"$TMP/nosuch\": No such file or directory"

# ---- the lock: a live holder refuses, a dead one is broken
sleep 300 &
HOLDER=$!
_bg_pids+=("$HOLDER")
START=$(awk '{print $22}' "/proc/$HOLDER/stat")
printf 'command = gc\nhost = %s\nboot_id = %s\npid = %s\npid_start = %s\nsince = 1700000000\ntoken = x\n' \
	"$(hostname)" "$(cat /proc/sys/kernel/random/boot_id)" "$HOLDER" "$START" >"$R/lock"
cbfs expire "$R" --keep-last 1
check_error "a repository locked by a running gc" 1 "cbfs: repository \"$R\" is locked by gc (host $(hostname), pid $HOLDER) since 2023-11-14T22:13:20Z"
is "$(ls "$R"/backups/*.info | wc -l)" 116 "nothing was expired"
cbfs pin "$R@$NEWEST_R"
is "$RC" 0 "pin works while gc holds the lock"
sed -i 's/^command = gc/command = expire/' "$R/lock"
OLD=$(ls "$R"/backups/*.info | sort | sed -n 3p | xargs basename | sed 's/\.info$//')
cbfs pin "$R@$OLD"
check_error "pin while expire holds the lock" 1 "cbfs: could not pin backup \"$OLD\": repository \"$R\" is locked by expire (host $(hostname), pid $HOLDER) since 2023-11-14T22:13:20Z; try again when it has finished"
ok "the pin was taken back" test ! -e $R/pins/$OLD
kill "$HOLDER"
wait "$HOLDER" 2>/dev/null
cbfs expire "$R" --keep-last 1
is "$RC" 0 "the lock of a dead process is broken"
like "$ERR" "removing the lock of repository \"$R\" left by expire \\(host .*, pid $HOLDER\\) since 2023-11-14T22:13:20Z, which is no longer running" "... with a warning"
ok "and expire released it" test ! -e $R/lock

done_testing
