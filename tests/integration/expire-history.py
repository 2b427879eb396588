#!/usr/bin/python3
"""Synthetic backup histories for test-expire.sh, and an independent oracle
of what a retention policy keeps.

  expire-history.py make REPO      write made-up backup records, manifests,
                                   WAL objects and restore points into REPO
                                   (a local cbfs repository); prints nothing
  expire-history.py keep REPO ARGS print the labels the policy in ARGS
                                   (cbfs expire options) keeps, one a line,
                                   computed here from the records alone

Times are made up relative to $CBFS_NOW (Unix seconds; cbfs expire takes
it as its "now" too); nothing is slept through.  The oracle is
written from the documented rules (docs/design.md, retention), not from the
C code.
"""
import datetime as dt
import os
import re
import sys

SEG = 16 * 1024 * 1024
# the same "now" as cbfs expire's (CBFS_NOW), so no boundary moves between them
NOW = dt.datetime.fromtimestamp(int(os.environ["CBFS_NOW"]), dt.timezone.utc)


def history():
    """(label, stop time) of every made-up backup, oldest first."""
    out = []
    # one a day at 01:00 for the last 120 days, none on days 40-49 ago
    for ago in range(120, 0, -1):
        if 40 <= ago < 50:
            continue
        day = (NOW - dt.timedelta(days=ago)).replace(hour=1, minute=0, second=0)
        out.append(day)
    # a second backup on some days, later the same day
    for ago in (3, 10, 33, 70):
        day = (NOW - dt.timedelta(days=ago)).replace(hour=13, minute=30, second=0)
        out.append(day)
    # several within the last hours
    for hours in (5, 2):
        out.append(NOW - dt.timedelta(hours=hours))
    out.sort()
    return [("b" + t.strftime("%Y%m%dT%H%M%S"), t) for t in out]


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def lsn(n):
    return "%X/%X" % (n >> 32, n & 0xFFFFFFFF)


def segname(segno):
    return "%08X%08X%08X" % (1, segno // 256, segno % 256)


def put(repo, key, text):
    path = os.path.join(repo, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def make(repo):
    backups = history()
    for i, (label, t) in enumerate(backups):
        start_seg = 10 + 4 * i
        start = start_seg * SEG + 40
        stop = (start_seg + 1) * SEG + 100
        mkey = "backups/%s.00000000.db" % label
        put(repo, mkey, "not a real manifest: expire only removes it\n")
        rec = {
            "label": label, "start_time": iso(t - dt.timedelta(minutes=5)),
            "stop_time": iso(t), "start_lsn": lsn(start), "stop_lsn": lsn(stop),
            "timeline": "1", "wal_start": segname(start_seg),
            "wal_stop": segname(start_seg + 1), "wal_segment_size": str(SEG),
            "pg_version": "150000", "system_identifier": "7000000000000000001",
            "block_size": "65536", "manifest": mkey, "manifest_size": "1",
            "manifest_sha256": "0" * 64,
        }
        put(repo, "backups/%s.info" % label,
            "".join("%s = %s\n" % kv for kv in rec.items()))
        # a restore point in the middle of each backup's WAL
        put(repo, "points/p%03d" % i,
            "name = p%03d\nlsn = %s\ntime = %s\ntimeline = 1\n"
            "system_identifier = 7000000000000000001\n"
            % (i, lsn(start + 3 * SEG), iso(t + dt.timedelta(minutes=1))))
    last = 10 + 4 * len(backups) + 4
    for segno in range(0, last):
        put(repo, "wal/00000001/" + segname(segno), "x")
    put(repo, "wal/00000001/%s.00000028.backup" % segname(5), "x")
    put(repo, "wal/00000001/%s.partial" % segname(7), "x")
    put(repo, "wal/00000002/00000002.history", "1\t0/0\tno reason\n")


def read_records(repo):
    recs = []
    for name in os.listdir(os.path.join(repo, "backups")):
        if not name.endswith(".info"):
            continue
        kv = {}
        for line in open(os.path.join(repo, "backups", name)):
            k, _, v = line.rstrip("\n").partition(" = ")
            kv[k] = v
        t = dt.datetime.strptime(kv["stop_time"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.timezone.utc)
        recs.append((t, kv["label"]))
    recs.sort()
    return recs


def duration(s):
    total = 0
    for n, unit in re.findall(r"(\d+)([smhdw])", s):
        total += int(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    return total


def keep(repo, args):
    recs = read_records(repo)
    newest_first = list(reversed(recs))
    pinned = set(os.listdir(os.path.join(repo, "pins"))) if os.path.isdir(
        os.path.join(repo, "pins")) else set()
    kept = {newest_first[0][1]} | {l for _, l in recs if l in pinned}
    opts = dict(zip(args[0::2], args[1::2]))
    if "--keep-last" in opts:
        kept |= {l for _, l in newest_first[:int(opts["--keep-last"])]}
    if "--keep-within" in opts:
        limit = NOW - dt.timedelta(seconds=duration(opts["--keep-within"]))
        kept |= {l for t, l in recs if t >= limit}
    for opt, period in (("--keep-daily", lambda t: t.date()),
                        ("--keep-weekly", lambda t: t.isocalendar()[:2]),
                        ("--keep-monthly", lambda t: (t.year, t.month))):
        if opt not in opts:
            continue
        seen = []
        for t, l in newest_first:  # the first of a period is its newest
            p = period(t)
            if p in seen:
                continue
            if len(seen) == int(opts[opt]):
                break
            seen.append(p)
            kept.add(l)
    for _, l in recs:
        if l in kept:
            print(l)


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "keep":
        keep(sys.argv[2], sys.argv[3:])
