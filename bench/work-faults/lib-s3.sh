# shellcheck shell=bash disable=SC2154 # _tap_failed, TMP...: lib.sh's
# S3 part of the integration harness, sourced after lib.sh by the tests
# that use an S3 repository (test-s3*.sh).
#
# s3_setup BUCKET
#     starts a Swift s3api server for this test (tests/s3/swift-start, state
#     in $TMP/s3, stopped at exit after the clusters and mounts), creates
#     BUCKET, and exports its settings in the environment (AWS_ENDPOINT_URL,
#     AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; also kept in
#     S3_KEY_ID, S3_SECRET, S3_REGION).  Skips the test
#     when Swift is not installed.  A fault proxy started with fp_start
#     (tests/s3/s3lib.sh) is stopped at exit too.
# s3_config FILE [ENDPOINT] [key = value...]
#     writes a configuration file with the server's s3_* settings (ENDPOINT
#     instead of the server's, and more lines), owned by postgres, mode 0600.
# s3_env_off
#     unsets the AWS_* settings, so that only a configuration file counts.

# shellcheck source=../s3/s3lib.sh
. "$CBFS_SRCDIR/tests/s3/s3lib.sh"

_s3_at_exit() {
	if ((_tap_failed)); then
		local f
		for f in "${FP_LOG:-}" "$TMP/s3/log/proxy-server.log"; do
			[[ -n $f && -f $f ]] || continue
			diag "---- last lines of ${f#"$TMP"/}"
			diag "$(tail -n 15 "$f" | cut -c1-300)"
		done
	fi
	s3_cleanup >/dev/null 2>&1
}

s3_setup() {
	local bucket=$1 code
	/usr/bin/python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec("swift") is None)' \
		2>/dev/null || skip_all "python3-swift is not installed (scripts/deps installs it)"
	command -v curl >/dev/null || skip_all "curl is missing (scripts/deps installs it)"
	at_exit _s3_at_exit
	s3_start "$TMP/s3" 2>"$TMP/s3-start.err" || bail "could not start Swift: $(cat "$TMP/s3-start.err")"
	code=$(s3curl -o "$TMP/s3-mb.out" -w '%{http_code}' -X PUT "$S3_ENDPOINT/$bucket" 2>&1)
	[[ $code == 200 ]] || bail "could not create bucket $bucket: $code $(cat "$TMP/s3-mb.out")"
	# nothing of this machine's may interfere: no configuration file, no
	# other S3 settings
	export CBFS_CONFIG=$TMP/no-such-cbfs.conf
	unset AWS_ENDPOINT_URL_S3 AWS_SESSION_TOKEN AWS_CA_BUNDLE CBFS_S3_URI_STYLE \
		CBFS_S3_PART_SIZE CBFS_S3_MAX_ATTEMPTS CBFS_S3_RETRY_BASE_MS
	export AWS_ENDPOINT_URL=$S3_ENDPOINT
	S3_KEY_ID=$AWS_ACCESS_KEY_ID S3_SECRET=$AWS_SECRET_ACCESS_KEY S3_REGION=$AWS_REGION
}

s3_config() {
	local file=$1 endpoint=${2:-$S3_ENDPOINT}
	shift $(($# < 2 ? $# : 2))
	{
		echo "# written by $(basename "$0")"
		echo "s3_endpoint = $endpoint"
		echo "s3_region = $S3_REGION"
		echo "s3_access_key_id = $S3_KEY_ID"
		echo "s3_secret_access_key = $S3_SECRET"
		printf '%s\n' "$@"
	} >"$file"
	chown postgres:postgres "$file"
	chmod 600 "$file"
}

s3_env_off() {
	unset AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_DEFAULT_REGION
}

# fp_sync: the proxy's stats file is current (SIGHUP writes it now).
fp_sync() {
	local i
	rm -f "$FP_STATS"
	kill -HUP "$FP_PID"
	for ((i = 0; i < 50; i++)); do
		[[ -s $FP_STATS ]] && return 0
		sleep 0.1
	done
	fail "the fault proxy writes its stats"
}

# s3_load_data NAME: pgbench tables (scale 2), TOAST and a large object in
# cluster NAME, then a checkpoint; bails out if that fails.
s3_load_data() {
	{
		pgbench_as "$1" -i -s 2 -q postgres &&
			psql_as "$1" postgres "
			create table toasty (id int primary key, big text);
			insert into toasty
			select g, (select string_agg(md5(random()::text || g || i), '')
			           from generate_series(1, 2000) i)
			from generate_series(1, 10) g;
			select lo_from_bytea(0, decode((select string_agg(md5(random()::text || i), '')
			                                from generate_series(1, 20000) i), 'hex'));
			checkpoint"
	} >/dev/null 2>"$TMP/data.err" || bail "could not create the data: $(cat "$TMP/data.err")"
}
