/*
 * test-location.c - unit tests for lib/location.c: local and S3 repository
 * locations, lexical path normalization, "@POINT" suffixes and the exact
 * error messages for invalid locations.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbfs/location.h"
#include "cbfs/util.h"
#include "tap.h"

static char cwd[PATH_MAX];

static void check_posix(const char *spec, bool allow_point, const char *path, const char *point)
{
    CbfsLocation loc;
    CbfsError err;

    cbfs_error_init(&err);
    memset(&loc, 0x5A, sizeof(loc));
    if (cbfs_location_parse(spec, allow_point, &loc, &err) != 0) {
        ok(0, "parse \"%s\": %s", spec, err.msg);
        return;
    }
    is_int(loc.kind, CBFS_LOCATION_POSIX, "\"%s\" is a local location", spec);
    is_str(loc.path, path, "\"%s\": path", spec);
    is_str(loc.point, point, "\"%s\": point", spec);
    ok(loc.bucket == NULL && loc.prefix == NULL, "\"%s\": no bucket or prefix", spec);
    cbfs_location_release(&loc);
}

static void check_s3(const char *spec, bool allow_point, const char *bucket, const char *prefix,
                     const char *point)
{
    CbfsLocation loc;
    CbfsError err;

    cbfs_error_init(&err);
    memset(&loc, 0x5A, sizeof(loc));
    if (cbfs_location_parse(spec, allow_point, &loc, &err) != 0) {
        ok(0, "parse \"%s\": %s", spec, err.msg);
        return;
    }
    is_int(loc.kind, CBFS_LOCATION_S3, "\"%s\" is an S3 location", spec);
    is_str(loc.bucket, bucket, "\"%s\": bucket", spec);
    is_str(loc.prefix, prefix, "\"%s\": prefix", spec);
    is_str(loc.point, point, "\"%s\": point", spec);
    ok(loc.path == NULL, "\"%s\": no path", spec);
    cbfs_location_release(&loc);
}

/* want: the whole message, or NULL to check only its start. */
static void check_invalid(const char *spec, bool allow_point, const char *want)
{
    CbfsLocation loc;
    CbfsError err;
    char *start = cbfs_xasprintf("invalid repository location \"%s\": ", spec);

    cbfs_error_init(&err);
    memset(&loc, 0x5A, sizeof(loc));
    is_int(cbfs_location_parse(spec, allow_point, &loc, &err), -EINVAL, "\"%s\" is invalid", spec);
    is_int(err.code, CBFS_EXIT_USAGE, "\"%s\": CBFS_EXIT_USAGE", spec);
    if (want)
        is_str(err.msg, want, "\"%s\": message", spec);
    else
        ok(strncmp(err.msg, start, strlen(start)) == 0, "\"%s\": message \"%s\"", spec, err.msg);
    /* a failed parse leaves nothing to release, and release is safe */
    ok(loc.spec == NULL && loc.path == NULL && loc.bucket == NULL && loc.prefix == NULL &&
           loc.point == NULL,
       "\"%s\": nothing left allocated", spec);
    cbfs_location_release(&loc);
    free(start);
}

static void test_posix(void)
{
    char *want, *parent;
    CbfsLocation loc;
    CbfsError err;

    check_posix("/abs/path", false, "/abs/path", NULL);
    check_posix("/abs/path/", false, "/abs/path", NULL);
    check_posix("/abs/path///", false, "/abs/path", NULL);
    check_posix("//abs//path", false, "/abs/path", NULL);
    check_posix("/abs/./path/.", false, "/abs/path", NULL);
    check_posix("/abs/x/../path", false, "/abs/path", NULL);
    check_posix("/abs/x/y/../../path", false, "/abs/path", NULL);
    check_posix("/a/b/..", false, "/a", NULL);
    check_posix("/..", false, "/", NULL);
    check_posix("/../../a", false, "/a", NULL);
    check_posix("/", false, "/", NULL);
    check_posix("///", false, "/", NULL);
    check_posix("/a/..", false, "/", NULL);
    check_posix("/a..b/...c/.d", false, "/a..b/...c/.d", NULL);
    check_posix("/srv/backups:/x", false, "/srv/backups:/x", NULL);
    check_posix("file:/abs", false, "/abs", NULL);
    check_posix("file:/abs/dir/", false, "/abs/dir", NULL);
    check_posix("file:/abs/x/../dir", false, "/abs/dir", NULL);
    check_posix("file:///abs", false, "/abs", NULL);

    /* relative paths are made absolute against the current directory */
    want = cbfs_xasprintf("%s/rel/dir", strcmp(cwd, "/") ? cwd : "");
    check_posix("rel/dir", false, want, NULL);
    check_posix("rel/dir/", false, want, NULL);
    check_posix("./rel/./dir", false, want, NULL);
    check_posix("rel/x/../dir", false, want, NULL);
    free(want);
    check_posix(".", false, cwd, NULL);
    parent = cbfs_xstrdup(cwd);
    if (strrchr(parent, '/') && strrchr(parent, '/') != parent)
        *strrchr(parent, '/') = '\0';
    else
        strcpy(parent, "/");
    check_posix("..", false, parent, NULL);
    want = cbfs_xasprintf("%s/sibling", strcmp(parent, "/") ? parent : "");
    check_posix("../sibling", false, want, NULL);
    free(want);
    free(parent);
    want = cbfs_xasprintf("%s/my:repo", strcmp(cwd, "/") ? cwd : "");
    check_posix("my:repo", false, want, NULL); /* no '/' after ':': a relative path */
    free(want);
    want = cbfs_xasprintf("%s/dir/b:/x", strcmp(cwd, "/") ? cwd : "");
    check_posix("dir/b:/x", false, want, NULL); /* '/' before ':': a relative path */
    free(want);

    /* spec is the repository part as written */
    cbfs_error_init(&err);
    if (cbfs_location_parse("rel/dir/@latest", true, &loc, &err) == 0) {
        is_str(loc.spec, "rel/dir/", "spec keeps the text as written, without the point");
        cbfs_location_release(&loc);
    } else {
        ok(0, "parse \"rel/dir/@latest\": %s", err.msg);
    }
    ok(loc.spec == NULL && loc.path == NULL, "release clears the location");
    cbfs_location_release(&loc); /* a second release is harmless */
}

static void test_s3(void)
{
    char b63[64];

    check_s3("s3://bucket/prefix/", false, "bucket", "prefix", NULL);
    check_s3("s3://bucket/prefix", false, "bucket", "prefix", NULL);
    check_s3("s3://bucket/a/b/c/", false, "bucket", "a/b/c", NULL);
    check_s3("s3://bucket", false, "bucket", "", NULL);
    check_s3("s3://bucket/", false, "bucket", "", NULL);
    check_s3("s3://bucket///p//", false, "bucket", "p", NULL);
    check_s3("s3://my.bucket-01/x", false, "my.bucket-01", "x", NULL);
    check_s3("s3://123/x", false, "123", "x", NULL);
    check_s3("bucket:/prefix", false, "bucket", "prefix", NULL);
    check_s3("bucket:/prefix/sub/", false, "bucket", "prefix/sub", NULL);
    check_s3("bucket:/", false, "bucket", "", NULL);
    memset(b63, 'b', 63);
    b63[63] = '\0';
    {
        char *spec = cbfs_xasprintf("s3://%s/p", b63);
        check_s3(spec, false, b63, "p", NULL);
        free(spec);
    }
}

static void test_points(void)
{
    char *want = cbfs_xasprintf("%s/repo@x", strcmp(cwd, "/") ? cwd : "");

    check_posix("/r@latest", true, "/r", "latest");
    check_posix("/r@latest", false, "/r@latest", NULL);
    check_posix("/r@2024-01-01_full", true, "/r", "2024-01-01_full");
    check_posix("/a@b/c@d", true, "/a@b/c", "d");
    check_posix("/r/@p", true, "/r", "p");
    check_posix("file:/r@p", true, "/r", "p");
    check_posix("/r", true, "/r", NULL);
    check_posix("repo@x", false, want, NULL);
    check_s3("s3://bucket/pre@lbl", true, "bucket", "pre", "lbl");
    check_s3("s3://bucket@lbl", true, "bucket", "", "lbl");
    check_s3("bucket:/p@latest", true, "bucket", "p", "latest");
    free(want);
}

static void test_invalid(void)
{
    static const char *const buckets[] = {
        "s3://ab/x",      "s3:///x",        "s3://",          "s3://Bucket/x",  "s3://-bucket/x",
        "s3://bucket-/x", "s3://.bucket/x", "s3://bu_cket/x", "s3://bu cket/x", "Bucket:/x",
        "ab:/x",          "b_c:/x",         "s3://bucket./x",
    };
    char b64[80];

    check_invalid("", false, "invalid repository location \"\": empty location");
    check_invalid("", true, "invalid repository location \"\": empty location");
    check_invalid("@latest", true, "invalid repository location \"@latest\": empty location");
    check_invalid("repo@", true, "invalid repository location \"repo@\": empty point after \"@\"");
    check_invalid("/r@", true, "invalid repository location \"/r@\": empty point after \"@\"");
    check_invalid("file:rel", false,
                  "invalid repository location \"file:rel\": a file: location must be an "
                  "absolute path");
    check_invalid("file:", false, NULL);
    check_invalid("s3://ab/x", false,
                  "invalid repository location \"s3://ab/x\": invalid bucket "
                  "name");
    check_invalid("s3://bucket/a/../b", false,
                  "invalid repository location \"s3://bucket/a/../b\": invalid prefix");
    check_invalid("s3://bucket/a//b", false, NULL);
    check_invalid("bucket:/..", false, NULL);
    for (size_t i = 0; i < CBFS_ARRAY_LEN(buckets); i++)
        check_invalid(buckets[i], false, NULL);
    memset(b64, 'b', 64);
    strcpy(b64 + 64, "/x");
    {
        char *spec = cbfs_xasprintf("s3://%s", b64);
        check_invalid(spec, false, NULL);
        free(spec);
    }
    /* the message quotes the spec as given, point included */
    check_invalid("s3://ab/x@latest", true,
                  "invalid repository location \"s3://ab/x@latest\": invalid bucket name");
}

int main(void)
{
    if (!getcwd(cwd, sizeof(cwd))) {
        printf("Bail out! getcwd failed\n");
        return 1;
    }
    test_posix();
    test_s3();
    test_points();
    test_invalid();
    return done_testing();
}
