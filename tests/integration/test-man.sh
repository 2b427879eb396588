#!/usr/bin/env bash
# The man pages match --help: every option that "cbfs COMMAND --help" (and
# "cbfs COMMAND --cluster --help" where that is another text) prints is
# written in bold in the section "cbfs COMMAND" of cbfs(1); every option of
# "mount.cbfs --help", its -o mount options included, in mount.cbfs(8).
# Commands are those "cbfs --help" lists.  The pages checked are the ones
# meson built from docs/man/*.scd (CBFS_MANDIR).
#
# Options are taken from the usage lines (the text up to the first empty
# line), the option lines (those starting with "-" after the indentation),
# every --long word anywhere, and for mount.cbfs the option names of the
# "Options (-o, ...)" list.  An option is documented when the page has it
# in bold: \fB--pgdata, \fB-D, \fBuid= (after \- is read as -).
source "$(dirname "$0")/lib.sh"

MANDIR=${CBFS_MANDIR:-}
[[ -n $MANDIR && -s $MANDIR/cbfs.1 ]] ||
	skip_all "the man pages were not built (scdoc is missing: scripts/deps installs it)"
for p in cbfs.1 mount.cbfs.8 cbfs.conf.5; do
	[[ -s $MANDIR/$p ]] || bail "$MANDIR/$p is missing"
done
[[ -n $MOUNT_CBFS && -x $MOUNT_CBFS ]] || bail "MOUNT_CBFS is not set (run through meson test)"

# help_opts: the options of the help text on stdin, one a line.
help_opts() {
	local text
	text=$(cat)
	{
		# --long anywhere
		grep -oE -- '(^|[^A-Za-z0-9-])--[a-z][a-z0-9-]*' <<<"$text" | sed -E 's/^[^-]//'
		# -x in the usage lines (up to the first empty line)
		sed '/^$/q' <<<"$text" | grep -oE -- '(^|[][ |])-[A-Za-z]([] =,]|$)' |
			sed -E 's/^[][ |]//; s/[] =,]$//'
		# -x opening an option line ("  -D, --pgdata DIR", "  -f   stay ...")
		grep -oE -- '^ +-[A-Za-z]([ ,=]|$)' <<<"$text" | sed -E 's/^ +//; s/[ ,=]$//'
	} | sort -u
}

# mount_o_opts: the names of the "Options (-o, ...)" list on stdin.
mount_o_opts() {
	awk '/^Options \(-o/ { on = 1; next } on && /^$/ { on = 0 } on && /^  [a-z_]/ {
		sub(/^  /, ""); sub(/  .*/, ""); n = split($0, items, /, /)
		for (i = 1; i <= n; i++) { name = items[i]; sub(/[=[ ].*/, "", name); print name }
	}' | sort -u
}

# plain PAGE: the roff source with "\-" read as "-".
plain() { sed 's/\\-/-/g' "$1"; }

# section TEXTFILE NAME: the ".SS NAME" section of a page (to the next .SS
# or .SH).
section() {
	awk -v want="$2" '
		/^\.S[SH] / { t = $0; sub(/^\.S[SH] +/, "", t); gsub(/"/, "", t); on = ($1 == ".SS" && t == want); next }
		on { print }' "$1"
}

# missing TEXTFILE KIND OPTION...: the options not in bold in TEXTFILE;
# KIND "mount" for -o names (followed by =, [ or a font change), else
# options (followed by anything but a name character).
missing() {
	local file=$1 kind=$2 o re
	shift 2
	for o; do
		if [[ $kind == mount ]]; then
			re="\\\\fB${o}(=|\\[|\\\\f)"
		else
			re="\\\\fB${o}([^A-Za-z0-9-]|\$)"
		fi
		grep -qE -- "$re" "$file" || printf '%s\n' "$o"
	done
}

plain "$MANDIR/cbfs.1" >"$TMP/cbfs.1.txt"
plain "$MANDIR/mount.cbfs.8" >"$TMP/mount.cbfs.8.txt"

# ---------------------------------------------------------------- the checker can fail
# A page without --pgdata in its backup section: the check must name it.
sed 's/\\fB--pgdata/\\fBpgdata/g' "$TMP/cbfs.1.txt" >"$TMP/broken.1.txt"
section "$TMP/broken.1.txt" "cbfs backup" >"$TMP/broken.sec"
is "$(missing "$TMP/broken.sec" opt --pgdata --jobs -D)" "--pgdata" \
	"the check names an option missing from a page (--pgdata taken out)"
is "$(missing "$TMP/mount.cbfs.8.txt" mount uid no_such_option)" "no_such_option" \
	"the check names a mount option missing from mount.cbfs(8)"

# ---------------------------------------------------------------- cbfs(1)
run "$CBFS" --help
((RC == 0)) || bail "cbfs --help exited $RC: $ERR"
mapfile -t commands < <(awk '/^Commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 }' <<<"$OUT")
cmp_ok "${#commands[@]}" -ge 19 "cbfs --help lists the commands (${commands[*]})"
for o in -h --help --version; do
	[[ -z $(missing "$TMP/cbfs.1.txt" opt "$o") ]] || fail "cbfs(1) documents $o"
done

for c in "${commands[@]}"; do
	run "$CBFS" "$c" --help
	if ((RC != 0)) || [[ -z $OUT ]]; then
		fail "cbfs $c --help" "exit $RC" "$ERR"
		continue
	fi
	help=$OUT
	mapfile -t opts < <(help_opts <<<"$help" | grep -vxE -- '-h|--help')
	# the mount's own options are mount.cbfs(8)'s (checked below)
	[[ $c == mount ]] && opts=()
	# the whole-cluster form, when it is another text: in cbfs(1)
	run "$CBFS" "$c" --cluster --help
	if ((RC == 0)) && [[ -n $OUT && $OUT != "$help" ]]; then
		mapfile -t -O "${#opts[@]}" opts < <(help_opts <<<"$OUT" | grep -vxE -- '-h|--help')
		cluster=" (and --cluster --help)"
	else
		cluster=
	fi
	mapfile -t opts < <(printf '%s\n' "${opts[@]}" | sed '/^$/d' | sort -u)
	if ((${#opts[@]} == 0)); then
		fail "cbfs $c --help: options found" "no option found in:" "$help"
		continue
	fi
	section "$TMP/cbfs.1.txt" "cbfs $c" >"$TMP/sec.txt"
	if [[ ! -s $TMP/sec.txt ]]; then
		fail "cbfs(1) has a section \"cbfs $c\""
		continue
	fi
	gone=$(missing "$TMP/sec.txt" opt "${opts[@]}")
	if [[ -z $gone ]]; then
		pass "cbfs $c: the ${#opts[@]} options of --help$cluster are in cbfs(1)"
	else
		fail "cbfs $c: every option of --help$cluster is in cbfs(1)" \
			"missing from section \"cbfs $c\": $(echo $gone)"
	fi
done

# ---------------------------------------------------------------- mount.cbfs(8)
run "$MOUNT_CBFS" --help
((RC == 0)) || bail "mount.cbfs --help exited $RC: $ERR"
mapfile -t opts < <(help_opts <<<"$OUT" | grep -vxE -- '-h|--help')
mapfile -t mopts < <(mount_o_opts <<<"$OUT")
cmp_ok "${#mopts[@]}" -ge 15 "mount.cbfs --help lists its -o options (${mopts[*]})"
gone=$(missing "$TMP/mount.cbfs.8.txt" opt "${opts[@]}")
is "$(echo $gone)" "" "mount.cbfs: the options of --help (${opts[*]}) are in mount.cbfs(8)"
gone=$(missing "$TMP/mount.cbfs.8.txt" mount "${mopts[@]}")
is "$(echo $gone)" "" "mount.cbfs: the ${#mopts[@]} -o options of --help are in mount.cbfs(8)"
run "$CBFS" mount --help
is "$OUT" "$(${MOUNT_CBFS} --help)" "cbfs mount --help is mount.cbfs --help"

# ---------------------------------------------------------------- cbfs.conf(5)
# every key cbfs reads from a configuration file, found in the source
keys=$(grep -rhoE --include='*.c' '(setting|number_setting|cbfs_config_get)\("[a-z0-9_]+"' \
	"$CBFS_SRCDIR/lib" "$CBFS_SRCDIR/cli" "$CBFS_SRCDIR/maint" "$CBFS_SRCDIR/backup" \
	"$CBFS_SRCDIR/restore" "$CBFS_SRCDIR/fs" | sed -E 's/.*\("//; s/"$//' | sort -u)
keys+=$'\n'$(grep -hoE '"keep_[a-z]+"' "$CBFS_SRCDIR/maint/expire.c" | tr -d '"' | sort -u)
plain "$MANDIR/cbfs.conf.5" >"$TMP/cbfs.conf.5.txt"
# shellcheck disable=SC2086
gone=$(missing "$TMP/cbfs.conf.5.txt" opt $keys)
cmp_ok "$(wc -w <<<"$keys")" -ge 15 "configuration keys found in the source ($(echo $keys))"
is "$(echo $gone)" "" "cbfs.conf(5) documents every configuration key"

done_testing
