#!/usr/bin/env bash
# Runs tests/s3/test-s3-store (the binary given as $1) against a Swift
# s3api server started here on free ports (tests/s3/swift-start), with a
# new bucket; stops the server afterwards, also on failure or interrupt.
# The binary prints the TAP.  Skips (exit 77) when Swift is not installed.
#
# usage: run-s3-store.sh BINARY   (CBFS_SRCDIR: the source tree)
# CBFS_KEEP_TMP=1 keeps the temp dir (server logs, proxy stats).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/s3lib.sh"

BIN=${1:?usage: run-s3-store.sh BINARY}
export CBFS_SRCDIR=${CBFS_SRCDIR:-$(cd "$HERE/../.." && pwd)}

if ! [[ -x /usr/bin/python3 ]] ||
	! /usr/bin/python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec("swift") is None)' 2>/dev/null; then
	echo "1..0 # SKIP python3-swift is not installed (run scripts/deps)"
	exit 77
fi
command -v curl >/dev/null || {
	echo "1..0 # SKIP curl is not installed (run scripts/deps)"
	exit 77
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cbfs-s3store.XXXXXX") || {
	echo "Bail out! mktemp failed"
	exit 1
}
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	s3_cleanup >/dev/null 2>&1
	if [[ ${CBFS_KEEP_TMP:-} == 1 ]]; then
		echo "# kept $TMP"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! s3_start "$TMP/s3" 2>"$TMP/start.err"; then
	echo "Bail out! could not start the S3 server: $(cat "$TMP/start.err")"
	exit 1
fi
export S3_BUCKET=cbfs-store-test
code=$(s3curl -o "$TMP/mb.out" -w '%{http_code}' -X PUT "$S3_ENDPOINT/$S3_BUCKET" 2>&1)
if [[ $code != 200 ]]; then
	echo "Bail out! could not create bucket $S3_BUCKET: $code $(cat "$TMP/mb.out")"
	exit 1
fi
# no configuration file of this machine's may interfere
export CBFS_CONFIG=$TMP/no-such-cbfs.conf
unset AWS_ENDPOINT_URL_S3 AWS_ENDPOINT_URL AWS_SESSION_TOKEN AWS_CA_BUNDLE CBFS_S3_URI_STYLE \
	CBFS_S3_PART_SIZE CBFS_S3_MAX_ATTEMPTS CBFS_S3_RETRY_BASE_MS

"$BIN"
rc=$?
if ((rc != 0)); then
	for f in "$S3_STATE_DIR"/fp-c.log "$S3_STATE_DIR"/log/proxy-server.log; do
		[[ -f $f ]] || continue
		echo "# ---- last lines of ${f#"$TMP"/}"
		tail -n 15 "$f" | sed 's/^/# /'
	done
fi
exit "$rc"
