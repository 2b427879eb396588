#!/usr/bin/env bash
# S3 over HTTPS (DESIGN §2 "S3": certificates are always verified, the CA
# file comes from AWS_CA_BUNDLE or s3_ca_file) against the real Swift s3api
# server, behind tests/s3/faultproxy.py in pass-through mode accepting TLS
# with a throw-away self-signed certificate for 127.0.0.1.
#
# With that certificate as the CA file, from the environment and from a
# CBFS_CONFIG file: cbfs init, list, the archiver's wal-push, wal-fetch (the
# segment equal to the original), backup and restore (pg_control intact, of
# the source's system).  Without the CA file, with a wrong one (the
# environment wins over the file) and with a missing one: exit 3 and one
# line naming the certificate problem, no secret in it, no request sent,
# not retried.  A certificate for another name (example.invalid) is refused
# even when it is the CA file (host name verification), while it is valid
# for that name (curl --resolve).  About 15 s.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib-s3.sh"

command -v openssl >/dev/null || skip_all "openssl is missing (scripts/deps installs it)"

BUCKET=cbfs-tls
s3_setup "$BUCKET"
REPO=s3://$BUCKET/a
T0=$(date +%s%N)

# ---------------------------------------------------------------- certificates
mkdir "$TMP/tls"
chmod 755 "$TMP/tls"
# cert NAME CN SAN: a self-signed certificate (P-256, 2 days) and its key in
# $TMP/tls/NAME.crt (readable by postgres) and NAME.key
cert() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-subj "/CN=$2" -addext "subjectAltName=$3" \
		-keyout "$TMP/tls/$1.key" -out "$TMP/tls/$1.crt" >"$TMP/tls/openssl.log" 2>&1 ||
		bail "openssl req for $2 failed: $(tail -n 3 "$TMP/tls/openssl.log")"
	chmod 644 "$TMP/tls/$1.crt"
}
cert ip 127.0.0.1 IP:127.0.0.1
cert other example.invalid DNS:example.invalid
CA=$TMP/tls/ip.crt
OTHER_CA=$TMP/tls/other.crt

fp_start tls --passthrough --tls-cert "$CA" --tls-key "$TMP/tls/ip.key" ||
	bail "could not start the TLS proxy"
EP=https://127.0.0.1:$FP_PORT

# mark: remembers the proxy's counters; delta KEY: their growth since.
mark() {
	fp_sync
	_m_req=$(fp_stat requests) _m_conn=$(fp_stat connections) _m_hse=$(fp_stat tls_handshake_errors)
}
delta() {
	local v
	case $1 in
	requests) v=$_m_req ;; connections) v=$_m_conn ;; tls_handshake_errors) v=$_m_hse ;;
	esac
	echo $(($(fp_stat "$1") - v))
}

# check_tls_error NAME PREFIX ERE: the last run exited 3 with one line on
# stderr, PREFIX then text matching ERE, holding no secret.
shown=" "
check_tls_error() {
	local name=$1 prefix=$2 re=$3 why=()
	((RC == 3)) || why+=("exit $RC, expected 3")
	[[ $ERR == "$prefix"* ]] || why+=("expected it to begin with '$prefix'")
	[[ ${ERR#"$prefix"} =~ ^$re$ ]] || why+=("expected the rest to match /^$re\$/")
	[[ $ERR != *$'\n'* ]] || why+=("more than one line")
	[[ -n $ERR && $ERR != *"$S3_SECRET"* && $ERR != *Signature=* && $ERR != *AWS4-HMAC* ]] ||
		why+=("a secret (or nothing) on stderr")
	[[ -z $OUT ]] || why+=("stdout: '$OUT'")
	if ((${#why[@]})); then
		fail "$name" "stderr: '$ERR'" "${why[@]}"
	else
		pass "$name"
		# each distinct message once in the log, for the record
		[[ $shown == *" $ERR |"* ]] || diag "stderr: $ERR"
		shown+=" $ERR |"
	fi
}
OPEN="cbfs: could not open repository \"$REPO\": could not read object \"$REPO/config\": "
SELF_SIGNED='SSL certificate problem: self[- ]signed certificate'

# ---------------------------------------------------------------- (a) environment
export AWS_ENDPOINT_URL=$EP AWS_CA_BUNDLE=$CA
mark
cbfs_pg init "$REPO"
is "$RC/$ERR" "0/" "cbfs init over HTTPS (AWS_ENDPOINT_URL=https://127.0.0.1:PORT, AWS_CA_BUNDLE)"
cbfs list "$REPO"
like "$RC/$ERR/$(grep -c . <<<"$OUT")/$OUT" "^0//1/label +stop time" "cbfs list over HTTPS: an empty repository (a header only)"
fp_sync
cmp_ok "$(delta requests)" -ge 2 "the requests went through the TLS proxy"
cmp_ok "$(fp_stat tls_handshakes)" -ge 2 "the proxy completed TLS handshakes"
is "$(fp_stat tls_handshake_errors)" 0 "and no handshake failed"

# the archiver (started with this environment) pushes over HTTPS
pg_init a
pg_archive a "$REPO"
pg_start a || bail "could not start cluster a"
psql_as a postgres "create table t as select g from generate_series(1, 20000) g" >/dev/null ||
	bail "could not create the data"
seg=$(pg_switch_and_archive a) || bail "no segment archived over HTTPS: $(tail -n 5 "$TMP/a.log")"
pass "archive_command (cbfs wal-push over HTTPS) archived $seg"
mkdir "$TMP/w"
cp "$(datadir a)/pg_wal/$seg" "$TMP/w/$seg.orig"
chown -R postgres:postgres "$TMP/w"
cbfs_pg wal-fetch "$REPO" "$seg" "$TMP/w/$seg"
is "$RC/$ERR" "0/" "wal-fetch $seg over HTTPS"
ok "the fetched segment equals the original" cmp "$TMP/w/$seg.orig" "$TMP/w/$seg"

backup a "$REPO" b1 --jobs 2
cbfs list "$REPO"
like "$RC/$OUT" "^0/.*b1" "cbfs list over HTTPS shows b1"
cbfs_restore "$REPO@b1" r1 --jobs 2
is "$RC/$ERR" "0/" "restore @b1 over HTTPS"
control=$("$PGBIN/pg_controldata" "$(datadir r1)" 2>&1)
like "$control" "Database system identifier: +$(sysid a)" "r1: pg_control of the source's system"
is "$(grep -c WARNING <<<"$control")" 0 "r1: pg_control's CRC is right"
pg_stop a
# (a byte-for-byte comparison with a restore over plain HTTP costs 4 s more)

# ---------------------------------------------------------------- (b) no CA file
unset AWS_CA_BUNDLE
mark
cbfs list "$REPO"
check_tls_error "no CA file: cbfs list exits 3 naming the certificate problem" "$OPEN" "$SELF_SIGNED"
cbfs_pg wal-fetch "$REPO" "$seg" "$TMP/w/nocafile"
check_tls_error "no CA file: wal-fetch fails loudly, not as a missing segment" "$OPEN" "$SELF_SIGNED"
ok "wal-fetch wrote nothing" test ! -e "$TMP/w/nocafile"
cbfs_pg init "$BUCKET:/b"
check_tls_error "no CA file: cbfs init" \
	"cbfs: could not create repository \"$BUCKET:/b\": could not write object \"s3://$BUCKET/b/config\": " "$SELF_SIGNED"
fp_sync
is "$(delta requests)" 0 "no request was sent over an unverified connection"
is "$(delta connections)" 3 "one connection per command: a certificate problem is not retried"
is "$(delta tls_handshake_errors)" 3 "each time the client broke off the handshake"

AWS_CA_BUNDLE=$TMP/tls/missing.crt cbfs list "$REPO"
check_tls_error "a missing CA file: exit 3, one line naming it" \
	"${OPEN}error setting certificate file: $TMP/tls/missing.crt" ""

# ---------------------------------------------------------------- (c) configuration file
CONF=$TMP/cbfs.conf
s3_config "$CONF" "$EP" "s3_ca_file = $CA"
s3_config "$TMP/noca.conf" "$EP"
s3_env_off
export CBFS_CONFIG=$CONF
cbfs list "$REPO"
like "$RC/$ERR/$OUT" "^0//.*b1" "s3_ca_file from CBFS_CONFIG: cbfs list over HTTPS"
cbfs_pg wal-fetch "$REPO" "$seg" "$TMP/w/conf"
is "$RC/$ERR" "0/" "s3_ca_file: wal-fetch as postgres"
ok "the fetched segment equals the original" cmp "$TMP/w/$seg.orig" "$TMP/w/conf"

CBFS_CONFIG=$TMP/noca.conf cbfs list "$REPO"
check_tls_error "a configuration file without s3_ca_file: exit 3" "$OPEN" "$SELF_SIGNED"
AWS_CA_BUNDLE=$OTHER_CA cbfs list "$REPO"
check_tls_error "AWS_CA_BUNDLE (another certificate) wins over s3_ca_file" "$OPEN" "$SELF_SIGNED"

# ---------------------------------------------------------------- (d) another name
fp_stop
fp_start other --passthrough --tls-cert "$OTHER_CA" --tls-key "$TMP/tls/other.key" ||
	bail "could not start the second TLS proxy"
EP2=https://127.0.0.1:$FP_PORT
s3_config "$TMP/other.conf" "$EP2" "s3_ca_file = $OTHER_CA"
s3_config "$TMP/other-noca.conf" "$EP2"
mark
NAME_RE="SSL: no alternative certificate subject name matches target (host name|ipv4 address) '127\.0\.0\.1'"
CBFS_CONFIG=$TMP/other.conf cbfs list "$REPO"
check_tls_error "a certificate for example.invalid, trusted through s3_ca_file: refused for 127.0.0.1" "$OPEN" "$NAME_RE"
CBFS_CONFIG=$TMP/other-noca.conf AWS_CA_BUNDLE=$OTHER_CA cbfs_pg wal-fetch "$REPO" "$seg" "$TMP/w/other"
check_tls_error "the same through AWS_CA_BUNDLE: wal-fetch refused" "$OPEN" "$NAME_RE"
fp_sync
is "$(delta requests)" 0 "no request was sent to the host of the wrong name"
is "$(delta connections)" 2 "not retried"
# the control: the certificate and the proxy are fine for example.invalid
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$OTHER_CA" \
	--resolve "example.invalid:$FP_PORT:127.0.0.1" "https://example.invalid:$FP_PORT/$BUCKET" 2>&1)
like "$code" '^[1-5][0-9][0-9]$' "control: curl accepts that certificate for example.invalid (HTTP $code)"

diag "run time without Swift's start: $((($(date +%s%N) - T0) / 1000000)) ms"
done_testing
