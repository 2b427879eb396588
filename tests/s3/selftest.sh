#!/usr/bin/env bash
# Self-test of the S3 test infrastructure (tests/s3/): starts Swift+s3api,
# checks SigV4 authentication, object round trips directly and through
# faultproxy.py in pass-through mode, Swift's If-None-Match behaviour with
# and without swift-start's patch, then ~200 requests through the proxy
# with faults on, and that every fault kind happened and was seen by the
# client as it should; then stops everything and checks that no process is
# left.  Prints TAP.  Runs as any user that may run the servers (root in
# CI); needs scripts/deps' packages.
#
# S3_SELFTEST_SEED=N seeds the proxy's faults (default a fixed one).
# CBFS_KEEP_TMP=1 keeps the temp dir (state, logs, stats); so does a
# failure when CBFS_KEEP_FAILED=1.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/s3lib.sh"

T0=$(date +%s%N)
_n=0 _failed=0 c='' c2=''

pass() {
	_n=$((_n + 1))
	printf 'ok %d - %s\n' "$_n" "$1"
}
fail() {
	_n=$((_n + 1))
	_failed=$((_failed + 1))
	printf 'not ok %d - %s\n' "$_n" "$1"
	shift
	local m
	for m in "$@"; do
		printf '%s\n' "$m" | sed 's/^/# /'
	done
	return 1
}
is() { # GOT EXPECTED NAME [DIAG...]
	if [[ $1 == "$2" ]]; then pass "$3"; else fail "$3" "     got: '$1'" "expected: '$2'" "${@:4}"; fi
}
like() { # GOT ERE NAME
	if [[ $1 =~ $2 ]]; then pass "$3"; else fail "$3" "     got: '$1'" "expected to match /$2/"; fi
}
cmp_ok() { # A OP B NAME  (OP: == != < <= > >=)
	local op
	case $2 in
	'==') op=-eq ;; '!=') op=-ne ;; '<') op=-lt ;;
	'<=') op=-le ;; '>') op=-gt ;; '>=') op=-ge ;;
	esac
	if [[ $1 =~ ^-?[0-9]+$ && $3 =~ ^-?[0-9]+$ ]] && test "$1" "$op" "$3"; then
		pass "$4"
	else
		fail "$4" "'$1' $2 '$3' is false"
	fi
}
diag() { printf '%s\n' "$@" | sed 's/^/# /'; }
bail() {
	printf 'Bail out! %s\n' "$*"
	exit 1
}

[[ -x /usr/bin/python3 ]] || bail "/usr/bin/python3 is missing"
/usr/bin/python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec("swift") is None)' ||
	bail "python3-swift is not installed (run scripts/deps)"
command -v curl >/dev/null || bail "curl is missing (run scripts/deps)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cbfs-s3self.XXXXXX") || bail "mktemp failed"
W=$TMP/work
mkdir -p "$W"

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	s3_cleanup >/dev/null 2>&1
	if [[ ${CBFS_KEEP_TMP:-} == 1 || (${CBFS_KEEP_FAILED:-} == 1 && $_failed -gt 0) ]]; then
		diag "kept $TMP"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

dump() { # FILE...: its last lines as diagnostics
	local f
	for f in "$@"; do
		[[ -f $f ]] || continue
		diag "---- last lines of ${f#"$TMP"/}"
		tail -n 15 "$f" | sed 's/^/# /'
	done
}

# code VAR CURL-ARGS...: runs s3curl, body in $W/body, status in VAR
code() {
	local -n _c=$1
	shift
	_c=$(s3curl -o "$W/body" -w '%{http_code}' "$@" 2>>"$W/curl.err")
}

# get VAR FILE CURL-ARGS...: the same with the body in FILE
get() {
	local -n _g=$1
	local out=$2
	shift 2
	_g=$(s3curl -o "$out" -w '%{http_code}' "$@" 2>>"$W/curl.err")
}

# ------------------------------------------------------------ start

t=$(date +%s%N)
if s3_start "$TMP/s3" 2>"$W/start.err"; then
	pass "swift-start ($((($(date +%s%N) - t) / 1000000)) ms)"
else
	fail "swift-start" "$(cat "$W/start.err")"
	dump "$TMP"/s3/log/*.log
	bail "no S3 server"
fi
like "$S3_ENDPOINT" '^http://127\.0\.0\.1:[0-9]+$' "S3_ENDPOINT is printed"
is "$(grep -c . "$S3_STATE_DIR/env")" 9 "STATE/env has the 9 assignments"
cp "$S3_PIDFILE" "$W/pids" # swift-stop removes it
running=0
while read -r pid _; do
	_s3_running "$pid" && running=$((running + 1))
done <"$W/pids"
cmp_ok "$running" '>=' 4 "its servers run ($(wc -l <"$W/pids") pids in S3_PIDFILE)"

# ------------------------------------------------------------ authentication

code c "$S3_ENDPOINT/"
is "$c" 200 "SigV4-signed ListBuckets answers 200"
printf 'default login %s password WRONG\n' "$AWS_ACCESS_KEY_ID" >"$W/bad.netrc"
c=$(curl -sS -o "$W/body" -w '%{http_code}' --netrc-file "$W/bad.netrc" \
	--aws-sigv4 "aws:amz:$AWS_REGION:s3" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
	"$S3_ENDPOINT/" 2>>"$W/curl.err")
is "$c/$(grep -o '<Code>[^<]*' "$W/body" | cut -c7-)" 403/SignatureDoesNotMatch \
	"a wrong secret gets 403 SignatureDoesNotMatch"
c=$(curl -sS -o /dev/null -w '%{http_code}' "$S3_ENDPOINT/" 2>>"$W/curl.err")
isnt=$([[ $c != 200 ]] && echo refused || echo "accepted ($c)")
is "$isnt" refused "an unsigned request is refused"

B=selftest
code c -X PUT "$S3_ENDPOINT/$B"
is "$c" 200 "create bucket $B"

# ------------------------------------------------------------ pass-through proxy

if fp_start plain --passthrough; then
	pass "faultproxy starts (port $FP_PORT)"
else
	fail "faultproxy starts"
	dump "$TMP"/s3/plain.log
	bail "no proxy"
fi
head -c $((256 * 1024)) /dev/urandom >"$W/src"
code c -T "$W/src" "$FP_ENDPOINT/$B/src"
is "$c" 200 "PUT 256 KiB through the proxy"
get c "$W/got" "$FP_ENDPOINT/$B/src"
cmp -s "$W/src" "$W/got"
is "$c/$?" 200/0 "GET it back through the proxy, same bytes"
head -c $((64 * 1024 * 1024)) /dev/urandom >"$W/big"
t=$(date +%s%N)
code c -T "$W/big" "$FP_ENDPOINT/$B/big"
get c2 "$W/gotbig" "$FP_ENDPOINT/$B/big"
cmp -s "$W/big" "$W/gotbig"
is "$c/$c2/$?" 200/200/0 "64 MiB PUT and GET through the proxy ($((($(date +%s%N) - t) / 1000000)) ms)"
rm -f "$W/big" "$W/gotbig"
c=$(s3curl -o /dev/null -w '%{http_code}' -T - "$FP_ENDPOINT/$B/chunked" <"$W/src" 2>>"$W/curl.err")
get c2 "$W/got" "$FP_ENDPOINT/$B/chunked"
cmp -s "$W/src" "$W/got"
is "$c/$c2/$?" 200/200/0 "chunked PUT (Transfer-Encoding: chunked) through the proxy"
code c "$FP_ENDPOINT/$B?list-type=2&max-keys=2&prefix="
keys=$(grep -o '<Key>[^<]*' "$W/body" | cut -c6- | paste -sd,)
is "$c $keys" "200 big,chunked" "ListObjectsV2 (max-keys=2) through the proxy"
code c -X PUT -H 'If-None-Match: *' --data-binary x "$FP_ENDPOINT/$B/src"
is "$c" 501 "stock Swift: PUT with If-None-Match: * gets 501"
: >"$S3_IF_NONE_MATCH_FLAG"
code c -X PUT -H 'If-None-Match: *' --data-binary x "$FP_ENDPOINT/$B/src"
code c2 -X PUT -H 'If-None-Match: *' --data-binary x "$FP_ENDPOINT/$B/new"
is "$c/$c2" 412/200 "patched (S3_IF_NONE_MATCH_FLAG): 412 on an existing key, 200 on a new one"
rm -f "$S3_IF_NONE_MATCH_FLAG"
code c -X DELETE "$FP_ENDPOINT/$B/new"
fp_stop
is "$FP_EXIT" 0 "faultproxy exits 0 on SIGTERM"
is "$(fp_stat faults)/$(fp_stat upstream_errors)" 0/0 "pass-through: no fault, no upstream error"
is "$(fp_stat responses)" "$(fp_stat requests)" "pass-through: every request answered ($(fp_stat requests))"

# ------------------------------------------------------------ faults

N=200
fp_start faulty --passthrough --seed "${S3_SELFTEST_SEED:-20251121}" --error-rate 0.10 --reset-rate 0.10 \
	--delay-rate 0.05 --delay-min 0.05 --delay-max 0.15 ||
	bail "faultproxy (faults) did not start"
fp_faults on
# Every 4th request a PUT of its own 64 KiB object, the others GETs of src;
# one curl run, so that connections are kept alive across requests.  Every
# 8th PUT is sent without 'Expect: 100-continue' (--data-binary: curl 7.88
# signs an 'expect' header that -H 'Expect:' removed, and gets 403).
args=(-sS)
for ((i = 1; i <= N; i++)); do
	((i > 1)) && args+=(--next)
	args+=(--netrc-file "$S3_CURL_NETRC" --aws-sigv4 "aws:amz:$AWS_REGION:s3"
		-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --max-time 30
		-w "$i %{http_code} %{exitcode} %{size_download} %{time_total}\n")
	if ((i % 4 == 0)); then
		head -c 65536 /dev/urandom >"$W/part.$i"
		if ((i % 8 == 0)); then
			args+=(-X PUT --data-binary "@$W/part.$i")
		else
			args+=(-T "$W/part.$i")
		fi
		args+=(-o "$W/putresp.$i" "$FP_ENDPOINT/$B/put-$i")
	else
		args+=(-o "$W/get.$i" "$FP_ENDPOINT/$B/src")
	fi
done
t=$(date +%s%N)
curl "${args[@]}" >"$W/results" 2>"$W/curl-faults.err"
ms=$((($(date +%s%N) - t) / 1000000))
fp_stop
is "$(wc -l <"$W/results")" "$N" "$N requests through the faulty proxy ($ms ms)"

declare -A seen=()
bad_get=0 bad_status=() visible_mid=0 visible_conn=0 put_ok=()
while read -r i http rc _ _; do
	# 000: reset before any answer; 100: a PUT reset after its
	# '100 Continue' was relayed
	if [[ $http == 000 || $http == 100 ]]; then
		visible_conn=$((visible_conn + 1))
		[[ $rc =~ ^(52|55|56)$ ]] || bad_status+=("#$i: $http curl exit $rc")
		continue
	fi
	seen[$http]=$((${seen[$http]:-0} + 1))
	case $http/$rc in
	500/0 | 503/0) ;;
	200/0)
		if ((i % 4 == 0)); then
			put_ok+=("$i")
		elif ! cmp -s "$W/src" "$W/get.$i"; then
			bad_get=$((bad_get + 1))
		fi
		;;
	200/18 | 200/56) # a short read: the mid-body reset
		((i % 4 == 0)) && bad_status+=("#$i: a PUT cut in its response")
		visible_mid=$((visible_mid + 1))
		;;
	*) bad_status+=("#$i: HTTP $http, curl exit $rc") ;;
	esac
done <"$W/results"

for k in error_500 error_503 reset_before reset_after_request reset_mid_body delay; do
	cmp_ok "$(fp_stat $k)" '>' 0 "the proxy injected $k ($(fp_stat $k) times)"
done
is "$FP_EXIT" 0 "faultproxy exits 0 on SIGTERM"
is "${seen[500]:-0}" "$(fp_stat error_500)" "the client got each injected 500"
is "${seen[503]:-0}" "$(fp_stat error_503)" "the client got each injected 503"
is "$visible_mid" "$(fp_stat reset_mid_body)" "each mid-body reset was a short read for the client"
grep -q '<Code>SlowDown</Code>' "$W"/get.* "$W"/putresp.* 2>/dev/null
is "$?" 0 "injected 503s carry an S3 XML error (SlowDown)"
is "${#bad_status[@]}" 0 "no other outcome than 200, 500, 503 or a reset" "${bad_status[@]}" ||
	{ dump "$W/curl-faults.err" "$FP_LOG"; }
is "$bad_get" 0 "every complete GET has the right bytes"
is "$(fp_stat upstream_errors)" 0 "no upstream error"
cmp_ok "$(fp_stat connections)" '<' "$(fp_stat requests)" \
	"connections are kept alive ($(fp_stat connections) connections, $(fp_stat requests) requests)"
diag "proxy: requests $(fp_stat requests), forwarded $(fp_stat forwarded)," \
	"resets seen by curl as failed connections: $visible_conn (libcurl resends" \
	"a request whose reused connection was reset before any answer)"

# each PUT that got 200 stored exactly its bytes (ETag = MD5 of a simple PUT)
code c "$S3_ENDPOINT/$B?list-type=2&max-keys=1000&prefix=put-"
grep -o '<Key>[^<]*</Key><LastModified>[^<]*</LastModified><ETag>[^<]*' "$W/body" |
	sed 's/<Key>\([^<]*\)<.*<ETag>"*\([0-9a-f]*\).*/\1 \2/' | sort >"$W/etags"
bad_put=0
for i in "${put_ok[@]}"; do
	want=$(md5sum <"$W/part.$i" | cut -d' ' -f1)
	grep -qx "put-$i $want" "$W/etags" || bad_put=$((bad_put + 1))
done
is "$c/$bad_put" 200/0 "each PUT answered 200 stored its bytes (${#put_ok[@]} PUTs)"

# ------------------------------------------------------------ stop

ports=$(sed -n 's/^bind_port = //p' "$S3_STATE_DIR"/etc/*-server.conf)
ports+=" $(sed -n 's/^memcache_servers = 127.0.0.1://p' "$S3_STATE_DIR/etc/proxy-server.conf")"
t=$(date +%s%N)
s3_stop
is "$?" 0 "swift-stop ($((($(date +%s%N) - t) / 1000000)) ms)"
left=()
while read -r pid _ name; do
	_s3_running "$pid" && left+=("$pid $name")
done <"$W/pids"
is "${#left[@]}" 0 "none of the started pids is left" "${left[@]}"
# anything else still running from this test's dir (a server it forgot)
strays=()
for f in /proc/[0-9]*/cmdline; do
	p=${f#/proc/}
	p=${p%/cmdline}
	[[ $p == "$$" || $p == "$BASHPID" ]] && continue
	mapfile -d '' -t argv <"$f" 2>/dev/null || continue
	[[ "${argv[*]}" == *"$TMP"* ]] && _s3_running "$p" && strays+=("$p: ${argv[*]}")
done
is "${#strays[@]}" 0 "no process of this test is left" "${strays[@]}"
listening=()
for p in $ports; do
	(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && listening+=("$p")
done
is "${#listening[@]}" 0 "their ports are closed" "${listening[@]}"

printf '1..%d\n' "$_n"
diag "run time $((($(date +%s%N) - T0) / 1000000)) ms"
if ((_failed)); then
	dump "$W/curl.err" "$TMP"/s3/*.log "$TMP"/s3/log/proxy-server.log
	exit 1
fi
exit 0
