#!/usr/bin/env bash
# The systemd units and timers of systemd/: each loads with
# "systemd-analyze verify" without a word about it (an unknown key, a bad
# value, a missing program: a failure, shown to fail on a broken copy),
# they carry their hardening, and their commands do what they say: with
# an instance file /etc/cbfs/NAME.conf as the units read it (EnvironmentFile
# and CBFS_CONFIG), each service's ExecStart lines, expanded as systemd
# expands ${VAR} and $VAR, run as the unit's User= within its
# CapabilityBoundingSet= and NoNewPrivileges= (setpriv): two backups,
# expire and gc keeping the newest, verify of it.  systemd need not be
# running (it is not PID 1 here): systemd-analyze verify reads files.
source "$(dirname "$0")/lib.sh"

command -v systemd-analyze >/dev/null || skip_all "systemd-analyze is missing (package systemd)"
command -v setpriv >/dev/null || skip_all "setpriv is missing (package util-linux)"
need_mount

SRC=$CBFS_SRCDIR/systemd
UNITS=$TMP/units
mkdir -p "$UNITS"
BINDIR=$(dirname "$CBFS")

# the units as installed (@bindir@: the cbfs under test), as instance
# "main" of each template
for u in cbfs-backup cbfs-verify cbfs-expire; do
	sed "s|@bindir@|$BINDIR|g" "$SRC/$u@.service.in" >"$UNITS/$u@main.service"
	cp "$SRC/$u@.timer" "$UNITS/$u@main.timer"
done
ok "the units name the cbfs under test (no @...@ left)" \
	bash -c "! grep -n '@[a-z]*@' '$UNITS'/*"

# analyze FILE...: systemd-analyze verify; prints what it says about cbfs
# units (not about the system's own units it loads on the way)
analyze() {
	SYSTEMD_LOG_LEVEL=info systemd-analyze verify --man=no "$@" 2>&1 | grep -F 'cbfs-'
	return 0
}

# ---------------------------------------------------------------- systemd-analyze verify
for u in backup verify expire; do
	out=$(analyze "$UNITS/cbfs-$u@main.service" "$UNITS/cbfs-$u@main.timer")
	is "$out" "" "systemd-analyze verify: cbfs-$u@.service and .timer load without a word"
done

# the check fails on a unit systemd finds wrong
mkdir -p "$TMP/broken"
sed 's/^ProtectHome=yes/ProtectHome=yse\nNoSuchKey=1/' "$UNITS/cbfs-backup@main.service" \
	>"$TMP/broken/cbfs-backup@main.service"
out=$(analyze "$TMP/broken/cbfs-backup@main.service")
like "$out" "NoSuchKey" "systemd-analyze verify names an unknown key"
like "$out" "[Pp]rotect ?[Hh]ome.*yse" "systemd-analyze verify names a bad value"
sed 's|^ExecStart=[^ ]*/cbfs |ExecStart=/nonexistent/cbfs |' "$UNITS/cbfs-backup@main.service" \
	>"$TMP/broken/cbfs-backup@main.service"
out=$(analyze "$TMP/broken/cbfs-backup@main.service")
like "$out" "nonexistent/cbfs" "systemd-analyze verify names a missing program"

# ---------------------------------------------------------------- hardening
# key FILE KEY: the values of KEY in FILE, one a line
key() { sed -n "s/^$2=//p" "$1"; }

bad=
for u in backup verify expire; do
	f=$UNITS/cbfs-$u@main.service
	for kv in ProtectSystem=strict PrivateTmp=yes ProtectHome=yes NoNewPrivileges=yes \
		ProtectKernelTunables=yes ProtectKernelModules=yes ProtectKernelLogs=yes \
		ProtectControlGroups=yes RestrictSUIDSGID=yes RestrictRealtime=yes LockPersonality=yes \
		SystemCallArchitectures=native Type=oneshot \
		EnvironmentFile=/etc/cbfs/%i.conf; do
		[[ $(key "$f" "${kv%%=*}") == "${kv#*=}" ]] || bad+="$kv (got '$(key "$f" "${kv%%=*}")') "
	done
	is "${bad:-}" "" "cbfs-$u@: ProtectSystem=strict, PrivateTmp, ProtectHome, NoNewPrivileges ..."
	bad=
	like "$(key "$f" Environment)" "CBFS_CONFIG=/etc/cbfs/%i.conf" "cbfs-$u@: CBFS_CONFIG is the instance file"
	like "$(key "$f" RestrictAddressFamilies)" "^AF_UNIX AF_INET AF_INET6" "cbfs-$u@: RestrictAddressFamilies"
	is "$(key "$SRC/cbfs-$u@.timer" WantedBy)" "timers.target" "cbfs-$u@.timer: WantedBy=timers.target"
	is "$(key "$SRC/cbfs-$u@.timer" Persistent)" "true" "cbfs-$u@.timer: Persistent=true"
	ok "cbfs-$u@.timer: OnCalendar is a calendar spec" \
		systemd-analyze calendar "$(key "$SRC/cbfs-$u@.timer" OnCalendar)"
done
for u in backup expire; do
	f=$UNITS/cbfs-$u@main.service
	is "$(key "$f" User):$(key "$f" Group)" "postgres:postgres" "cbfs-$u@ runs as postgres"
	is "$(key "$f" CapabilityBoundingSet)" "" "cbfs-$u@: no capabilities"
	is "$(key "$f" PrivateDevices)" "yes" "cbfs-$u@: PrivateDevices"
	is "$(key "$f" SystemCallFilter)" "@system-service" "cbfs-$u@: SystemCallFilter"
	is "$(key "$f" MemoryDenyWriteExecute)" "yes" "cbfs-$u@: MemoryDenyWriteExecute"
done
f=$UNITS/cbfs-verify@main.service
is "$(key "$f" User)" "" "cbfs-verify@ runs as root (it mounts)"
is "$(key "$f" DevicePolicy)/$(key "$f" DeviceAllow)" "closed//dev/fuse rw" "cbfs-verify@: /dev/fuse is its one device"
like "$(key "$f" CapabilityBoundingSet)" "^CAP_SYS_ADMIN " "cbfs-verify@: a bounded set of capabilities"
is "$(key "$UNITS/cbfs-expire@main.service" ExecStart | awk '{ print $2 }' | tr '\n' ' ')" "expire gc " \
	"cbfs-expire@ runs expire, then gc"
# systemd's own judgement of the exposure (0 best, 10 worst)
for u in backup expire verify; do
	out=$(systemd-analyze security --offline=yes --no-pager "$UNITS/cbfs-$u@main.service" 2>&1 |
		sed -n 's/.*Overall exposure level for [^:]*: *\([0-9.]*\).*/\1/p')
	limit=3.0
	[[ $u == verify ]] && limit=6.0
	if [[ $out =~ ^[0-9.]+$ ]] && awk -v e="$out" -v l="$limit" 'BEGIN { exit !(e <= l) }'; then
		pass "systemd-analyze security: cbfs-$u@ exposure $out (at most $limit)"
	else
		fail "systemd-analyze security: cbfs-$u@ exposure at most $limit" "got: '$out'"
	fi
done

# ---------------------------------------------------------------- the commands
REPO=$TMP/repo
repo_init "$REPO"
pg_init src
pg_archive src "$REPO"
pg_start src || bail "could not start src"
pgbench_as src -i -s 2 -q postgres >/dev/null 2>&1 || bail "pgbench -i failed"
ETC=$TMP/etc
mkdir -p "$ETC" "$TMP/cache/cbfs/postgres" "$TMP/cache/cbfs/root"
chown postgres:postgres "$TMP/cache/cbfs/postgres"
chmod 700 "$TMP/cache/cbfs/postgres" "$TMP/cache/cbfs/root"
cat >"$ETC/main.conf" <<EOF
# an instance of the cbfs units (cbfs.conf(5))
repo = $REPO
pgdata = $(datadir src)
backup_options = --jobs 2 --io-nice idle --dbname=postgresql:///postgres?host=$SOCK&port=${PG_PORT[src]}&user=postgres
verify_options = --jobs 2
keep_last = 1
gc_options = --max-waste 50
EOF
chown postgres:postgres "$ETC/main.conf"
chmod 600 "$ETC/main.conf"

# unit_cmds UNIT: each ExecStart line of UNIT expanded with the instance
# file's variables as systemd does ("${v}" one argument, "$v" split at
# spaces), one command a line, its arguments shell-quoted
unit_cmds() {
	/usr/bin/python3 - "$1" "$ETC/main.conf" <<'PY'
import re, shlex, sys
env = {}
for line in open(sys.argv[2]):
    line = line.rstrip("\n")
    if not line or line[0] in "#;" or "=" not in line:
        continue
    k, v = line.split("=", 1)
    env[k.strip()] = v.strip()
for line in open(sys.argv[1]):
    if not line.startswith("ExecStart="):
        continue
    out = []
    for w in line[len("ExecStart="):].split():
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if m:
            out += env.get(m.group(1), "").split()
        else:
            out.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), w))
    print(" ".join(shlex.quote(a) for a in out))
PY
}

# run_unit UNIT: runs UNIT's commands as its User= with its capability
# bounding set and no new privileges, its Environment= (%i: main, %C: the
# cache here); 0 when all exit 0; output in $OUT/$ERR of the last
run_unit() {
	local f=$UNITS/$1 user caps line
	user=$(key "$f" User)
	caps=$(key "$f" CapabilityBoundingSet | tr 'A-Z' 'a-z' | sed 's/cap_//g; s/ \+/,+/g; s/^./+&/')
	local -a priv=(setpriv --no-new-privs --bounding-set "-all${caps:+,$caps}")
	[[ -n $user ]] && priv+=(--reuid "$user" --regid "$user" --init-groups)
	local -a envs=(CBFS_CONFIG="$ETC/main.conf" CBFS_CACHE_DIR="$TMP/cache/cbfs/${user:-root}"
		PATH=/usr/bin:/bin HOME=/nonexistent)
	while IFS= read -r line; do
		eval "local -a cmd=($line)"
		run "${priv[@]}" env -i "${envs[@]}" "${cmd[@]}"
		((RC == 0)) || return 1
	done < <(unit_cmds "$f")
}

run_unit cbfs-backup@main.service
ok_rc() { ((RC == 0)) && pass "$1" || fail "$1" "exit $RC" "stdout: $OUT" "stderr: $ERR"; }
ok_rc "cbfs-backup@main as postgres, no capabilities: a backup"
like "$OUT" "^backup [0-9TZ]+ complete" "  ... it says so"
sleep 1 # labels are start times
pgbench_as src -T 2 postgres >/dev/null 2>&1
run_unit cbfs-backup@main.service
ok_rc "cbfs-backup@main again: a second backup"
is "$(labels "$REPO" | wc -l)" "2" "two backups"
last=$(labels "$REPO" | tail -n 1)
run_unit cbfs-expire@main.service
ok_rc "cbfs-expire@main as postgres: expire (keep_last = 1 from the instance file) and gc"
is "$(labels "$REPO")" "$last" "the newest backup is kept, the other expired"
ok "gc ran after expire (its summary)" grep -qi "pack" <<<"$OUT"
run_unit cbfs-verify@main.service
ok_rc "cbfs-verify@main as root within its capabilities: the newest backup passes"

done_testing
