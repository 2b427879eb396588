# Helpers for tests that need the S3 endpoint, sourced by bash scripts:
#   . "$CBFS_SRCDIR/tests/s3/s3lib.sh"
#
# s3_start DIR [--if-none-match]
#     starts Swift+s3api (tests/s3/swift-start) with its state in DIR and
#     exports what it prints: S3_ENDPOINT AWS_ACCESS_KEY_ID
#     AWS_SECRET_ACCESS_KEY AWS_REGION AWS_DEFAULT_REGION S3_STATE_DIR
#     S3_PIDFILE S3_CURL_NETRC S3_IF_NONE_MATCH_FLAG.  Returns 1 (the reason
#     on stderr) when it cannot start.
# s3_stop
#     stops it (tests/s3/swift-stop); returns 1 if something is left.
# fp_start NAME [faultproxy options...]
#     starts tests/s3/faultproxy.py in front of $S3_ENDPOINT, its stats in
#     $S3_STATE_DIR/NAME.stats and its log in $S3_STATE_DIR/NAME.log; sets
#     FP_PID, FP_PORT, FP_ENDPOINT (http://127.0.0.1:PORT), FP_STATS, FP_LOG.
#     One proxy at a time per shell.
# fp_faults on|off
#     turns the proxy's faults on (SIGUSR2) or off (SIGUSR1).
# fp_stop
#     SIGTERM, waits for it (SIGKILL after 5 s); its stats file is final;
#     FP_EXIT is its exit status (0 after a clean exit on SIGTERM).
# fp_stat KEY
#     a counter from $FP_STATS (final after fp_stop; otherwise at most 1 s
#     old).
# s3curl ARG...
#     curl signing with SigV4 as $AWS_ACCESS_KEY_ID (a netrc, since the key
#     contains ':'), sending 'x-amz-content-sha256: UNSIGNED-PAYLOAD'.
#     Mind curl 7.88: it signs the query string as written, so query
#     parameters must be given sorted by name, or the request gets 403.
# s3_cleanup
#     fp_stop and s3_stop; for an EXIT trap.

# shellcheck disable=SC2034 # FP_* are for the callers
S3_TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FP_PID=

# _s3_running PID: it exists and is not a zombie (a child that exited stays
# a zombie until waited for, and kill -0 still finds it)
_s3_running() {
	local st
	{ read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
	st=${st##*) }
	[[ ${st%% *} != Z ]]
}

s3_start() {
	local out
	out=$("$S3_TOOLS/swift-start" "$@") || return 1
	set -a
	eval "$out"
	set +a
}

s3_stop() {
	[[ -n ${S3_STATE_DIR:-} ]] || return 0
	"$S3_TOOLS/swift-stop" "$S3_STATE_DIR"
}

fp_start() {
	local name=$1
	shift
	[[ -z $FP_PID ]] || {
		echo "fp_start: a proxy (pid $FP_PID) already runs" >&2
		return 1
	}
	local portfile=$S3_STATE_DIR/$name.port
	FP_STATS=$S3_STATE_DIR/$name.stats
	FP_LOG=$S3_STATE_DIR/$name.log
	rm -f "$portfile"
	env -u PYTHONPATH -u PYTHONHOME /usr/bin/python3 "$S3_TOOLS/faultproxy.py" --target "${S3_ENDPOINT#http://}" \
		--port-file "$portfile" --stats "$FP_STATS" --log "$FP_LOG" "$@" \
		</dev/null >/dev/null 2>>"$FP_LOG" &
	FP_PID=$!
	local i
	for ((i = 0; i < 100; i++)); do
		if [[ -s $portfile ]]; then
			FP_PORT=$(<"$portfile")
			FP_ENDPOINT=http://127.0.0.1:$FP_PORT
			return 0
		fi
		_s3_running "$FP_PID" || break
		sleep 0.1
	done
	echo "fp_start: faultproxy did not start: $(tail -n 1 "$FP_LOG" 2>/dev/null)" >&2
	fp_stop
	return 1
}

fp_faults() {
	[[ -n $FP_PID ]] || return 1
	case $1 in
	on) kill -USR2 "$FP_PID" ;;
	off) kill -USR1 "$FP_PID" ;;
	*) return 2 ;;
	esac
}

fp_stop() {
	[[ -n $FP_PID ]] || return 0
	local i
	kill -TERM "$FP_PID" 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		_s3_running "$FP_PID" || break
		sleep 0.1
	done
	_s3_running "$FP_PID" && kill -KILL "$FP_PID" 2>/dev/null
	wait "$FP_PID" 2>/dev/null
	FP_EXIT=$?
	FP_PID=
	return 0
}

fp_stat() {
	local v
	v=$(sed -n "s/^$1=//p" "$FP_STATS" 2>/dev/null)
	echo "${v:-0}"
}

s3curl() {
	curl -sS --netrc-file "$S3_CURL_NETRC" --aws-sigv4 "aws:amz:$AWS_REGION:s3" \
		-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}

s3_cleanup() {
	fp_stop
	s3_stop
}
