#!/usr/bin/env bash
# The Debian package (issue 19, item 3; docs/packaging.md): built with
# dpkg-buildpackage -us -uc -b from a clean copy of the source (the files
# git tracks or would track: no build directory, nothing ignored), without
# network; lintian finds no error and no warning; installed with apt-get,
# it holds /usr/bin/cbfs, /sbin/mount.cbfs, the man pages, the systemd
# units, the bash completion and /etc/cbfs.conf (mode 0600, a conffile);
# the demo's main steps run with the installed programs (init, archive,
# backup, list, restore and start, mount with /sbin/mount.cbfs and start,
# verify, check); then the package is purged, leaving the machine as it
# was.  The build takes most of the time (DEB_BUILD_OPTIONS: parallel=2
# nocheck noddebs).
source "$(dirname "$0")/lib.sh"
need_mount
for t in dpkg-buildpackage lintian dh apt-get git; do
	command -v "$t" >/dev/null || skip_all "$t is missing (scripts/deps installs it)"
done
# the test installs and purges the package: never over an installation
# or a configuration of someone else's
[[ $(dpkg-query -W -f='${db:Status-Status}' cbfs 2>/dev/null) == not-installed ||
	-z $(dpkg-query -W -f='${db:Status-Status}' cbfs 2>/dev/null) ]] ||
	bail "the package cbfs is installed already: this test would replace and purge it"
[[ ! -e /etc/cbfs.conf ]] || bail "/etc/cbfs.conf exists: this test would replace and remove it"

VERSION=$(sed -n "s/^  version : '\(.*\)',$/\1/p" "$CBFS_SRCDIR/meson.build")
ARCH=$(dpkg --print-architecture)
DEB=$TMP/pkg/cbfs_${VERSION}_${ARCH}.deb
[[ -n $VERSION ]] || bail "no version in meson.build"

# ---------------------------------------------------------------- build
SRC=$TMP/pkg/cbfs-$VERSION
mkdir -p "$SRC"
if git -C "$CBFS_SRCDIR" rev-parse --git-dir >/dev/null 2>&1; then
	(cd "$CBFS_SRCDIR" && git ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done |
		tar --null -T - -cf -) | tar -C "$SRC" -xf - || bail "could not copy the source"
else
	tar -C "$CBFS_SRCDIR" --exclude='./build*' -cf - . | tar -C "$SRC" -xf - ||
		bail "could not copy the source"
fi
ok "a clean copy of the source: no build directory" test ! -e "$SRC/build"
t0=$(date +%s)
(cd "$SRC" && DEB_BUILD_OPTIONS="parallel=2 nocheck noddebs" timeout 1500 \
	dpkg-buildpackage -us -uc -b) >"$TMP/build.log" 2>&1
rc=$?
t1=$(date +%s)
if ((rc == 0)) && [[ -f $DEB ]]; then
	pass "dpkg-buildpackage -us -uc -b builds ${DEB##*/} ($((t1 - t0)) s)"
else
	fail "dpkg-buildpackage -us -uc -b builds ${DEB##*/}" "exit $rc" "$(tail -n 40 "$TMP/build.log")"
	done_testing
fi
ok "the build used the bundled libfuse" \
	grep -qE 'libfuse *: *3\.[0-9.]+ \(subprojects/libfuse\)' "$TMP/build.log"
ok "  ... and no network (meson --wrap-mode=nodownload)" grep -q -- '--wrap-mode=nodownload' "$TMP/build.log"
is "$(dpkg-deb -f "$DEB" Version)" "$VERSION" "the package's version is meson.build's"

# ---------------------------------------------------------------- lintian
run lintian --fail-on error,warning "$TMP/pkg/cbfs_${VERSION}_${ARCH}.changes"
tags=$(grep -E '^[EW]: ' <<<"$OUT")
if ((RC == 0)) && [[ -z $tags ]]; then
	pass "lintian: no error, no warning"
else
	fail "lintian: no error, no warning" "exit $RC" "$OUT" "$ERR"
fi
[[ -n $OUT ]] && diag "lintian says: $OUT"

# ---------------------------------------------------------------- install
purge() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' cbfs 2>/dev/null) == installed ||
		-n $(dpkg-query -W -f='${Conffiles}' cbfs 2>/dev/null) ]] || return 0
	DEBIAN_FRONTEND=noninteractive apt-get purge -y -q cbfs >"$TMP/purge.log" 2>&1
}
at_exit purge
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$DEB"
is "$RC" "0" "apt-get install ${DEB##*/}" || diag "$OUT" "$ERR"
is "$(dpkg-query -W -f='${db:Status-Status}' cbfs)" "installed" "  ... installed"

# mode_of PATH: "mode owner" (of the target of a link)
mode_of() { stat -L -c '%a %U' "$1" 2>&1; }
is "$(mode_of /usr/bin/cbfs)" "755 root" "/usr/bin/cbfs"
is "$(readlink -f /sbin/mount.cbfs)" "$(readlink -f /usr/bin/mount.cbfs)" \
	"/sbin/mount.cbfs (where mount(8) looks) is mount.cbfs beside cbfs"
ok "  ... in the package" bash -c "dpkg -L cbfs | grep -qx /sbin/mount.cbfs"
is "$(mode_of /sbin/mount.cbfs)" "755 root" "  ... executable"
is "$(/usr/bin/cbfs --version)" "cbfs $VERSION" "cbfs --version"
for m in man1/cbfs.1 man8/mount.cbfs.8 man5/cbfs.conf.5; do
	ok "man page /usr/share/man/$m.gz" test -s "/usr/share/man/$m.gz"
done
is "$(zcat /usr/share/man/man1/cbfs.1.gz | grep -c '^\.SS cbfs ')" \
	"$(/usr/bin/cbfs --help | awk '/^Commands:/ { c = 1; next } c && /^  [a-z]/ { n++ } END { print n }')" \
	"cbfs(1) has a section for each command"
for u in backup verify expire; do
	ok "systemd units cbfs-$u@.service and .timer" \
		test -f "/lib/systemd/system/cbfs-$u@.service" -a -f "/lib/systemd/system/cbfs-$u@.timer"
done
like "$(grep -h '^ExecStart=' /lib/systemd/system/cbfs-*@.service | sort -u | tr '\n' ' ')" \
	'^(ExecStart=/usr/bin/cbfs [a-z]+ [^ ]+.* )+$' "  ... running /usr/bin/cbfs"
is "$(mode_of /etc/cbfs.conf)" "600 postgres" "/etc/cbfs.conf: mode 0600, postgres's (a statoverride)"
like "$(dpkg-query -W -f='${Conffiles}' cbfs)" " /etc/cbfs\.conf [0-9a-f]{32}" "  ... a conffile"
is "$(grep -v '^#' /etc/cbfs.conf | grep -c .)" "0" "  ... every setting commented out"
ok "/etc/cbfs/ for the units' instance files" test -d /etc/cbfs
ok "an example instance file" test -s /usr/share/doc/cbfs/examples/instance.conf
ok "the copyright file names libfuse's licences" \
	grep -q 'subprojects/libfuse' /usr/share/doc/cbfs/copyright
is "$(dpkg -L cbfs | grep -E 'fuse3|libfuse|/include/' | tr '\n' ' ')" "" \
	"nothing of the bundled libfuse is installed"

# bash completion, as bash loads it (on demand, by the command's name):
# complete_line NAME LINE: what <TAB> at the end of LINE offers
complete_line() {
	bash -c '
		source /usr/share/bash-completion/completions/"$1"
		COMP_LINE=$2 COMP_POINT=${#2}
		read -ra COMP_WORDS <<<"$2"
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		f=$(complete -p "$1" | sed -n "s/.*-F \([^ ]*\).*/\1/p")
		"$f" "$1" "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
		printf "%s\n" "${COMPREPLY[@]}"' complete "$@" 2>&1 | sort | tr '\n' ' '
}
is "$(complete_line cbfs 'cbfs ba')" "backup " "bash completion: cbfs ba<TAB> is backup"
is "$(complete_line cbfs 'cbfs backup --pgd')" "--pgdata " "  ... cbfs backup --pgd<TAB> is --pgdata"
is "$(complete_line cbfs 'cbfs backup --io-nice i')" "idle " "  ... --io-nice i<TAB> is idle"
is "$(complete_line cbfs 'cbfs copy --max')" "--max-rate " "  ... cbfs copy --max<TAB> is --max-rate"
is "$(complete_line mount.cbfs 'mount.cbfs r m -o uid=postgres,overl')" "postgres,overlay= " \
	"  ... mount.cbfs -o uid=postgres,overl<TAB> (after bash's \"=\")"

# ---------------------------------------------------------------- the demo, installed
CBFS=/usr/bin/cbfs
MOUNT_CBFS=/sbin/mount.cbfs
REPO=$TMP/repo
repo_init "$REPO"
pass "cbfs init (as postgres)"
pg_init src
pg_archive src "$REPO"
pg_start src || bail "could not start src"
pgbench_as src -i -s 5 -q postgres >/dev/null 2>&1 || bail "pgbench -i failed"
psql_as src postgres "create table notes (id int primary key, note text);
	insert into notes select g, 'note ' || g from generate_series(1, 10) g" >/dev/null
backup src "$REPO" demo
psql_as src postgres "insert into notes values (11, 'written after the backup')" >/dev/null
ok_cbfs "cbfs list" list "$REPO"
like "$OUT" "demo" "  ... lists the backup"
ok_cbfs "cbfs info" info "$REPO@demo"
cbfs_restore "$REPO@demo" restored --jobs 2
is "$RC" "0" "cbfs restore" || diag "$ERR"
like "$(grep '^restore_command' "$(datadir restored)/postgresql.auto.conf")" "'/usr/bin/cbfs'+ wal-fetch" \
	"  ... its restore_command is the installed cbfs"
pg_start restored && pg_wait_promoted restored
is "$(sql restored postgres "select count(*) from notes")" "10" "  ... the restored copy holds the notes of the backup"
pg_stop restored
MNT=$TMP/m
mkdir "$MNT"
cbfs_mount "$REPO@demo" "$MNT" -o uid=postgres,gid=postgres
is "$RC:$ERR" "0:" "/sbin/mount.cbfs mounts the backup"
like "$(grep '^restore_command' "$MNT/postgresql.auto.conf")" "'/usr/bin/cbfs'+ wal-fetch" \
	"  ... its restore_command is the installed cbfs"
pg_start m && pg_wait_promoted m
is "$(sql m postgres "select count(*) from notes")" "10" "  ... PostgreSQL on the mount holds the notes of the backup"
is "$(sql m postgres "select count(*) from pgbench_accounts")" "500000" "  ... and pgbench's accounts"
pg_stop m
cbfs_umount "$MNT"
is "$RC" "0" "cbfs umount"
ok_cbfs "cbfs verify (the nightly restore test)" verify "$REPO@demo" --jobs 2
ok_cbfs "cbfs check --read-data" check "$REPO" --read-data
pg_stop src

# ---------------------------------------------------------------- purge
purge
is "$(dpkg-query -W -f='${db:Status-Status}' cbfs 2>/dev/null)" "" "apt-get purge cbfs: dpkg knows it no more" ||
	diag "$(cat "$TMP/purge.log")"
ok "  ... /usr/bin/cbfs and /sbin/mount.cbfs are gone" test ! -e /usr/bin/cbfs -a ! -e /sbin/mount.cbfs
ok "  ... /etc/cbfs.conf is gone" test ! -e /etc/cbfs.conf
ok "  ... its statoverride is gone" bash -c "! dpkg-statoverride --list /etc/cbfs.conf"

done_testing
