#!/usr/bin/python3
"""manifest.py - the integration tests' view of a stored manifest.

A manifest object (lib/mobject.h) of an unencrypted repository is the
SQLite file cut into chunks, followed by the SHA-256 of each chunk; its
record holds manifest_size, manifest_chunk and manifest_index_sha256.
Format 2 manifests keep block references as runs (include/cbfs/manifest.h);
a connection from here also has a temporary table "blocks" with one row per
block (file, blockno, id, pack, offset, stored_len, raw_len), as format 1
had, so tests can look blocks up with plain SQL.

    manifest.py query REPO LABEL SQL     rows, tab-separated
    manifest.py edit REPO LABEL SQL      run SQL on the manifest and store it
                                         back, its record made to match
    manifest.py object REPO LABEL        the object's path
    manifest.py legacy REPO LABEL        rewrite LABEL's manifest as cbfs wrote
                                         it before format 2 (one row per block,
                                         one object .db, manifest_sha256)

REPO is a local repository directory (or a node's folder in it).
"""
import hashlib
import os
import sqlite3
import struct
import sys
import tempfile


def record(repo, label):
    rec = {}
    with open(os.path.join(repo, "backups", label + ".info")) as f:
        for line in f:
            if " = " in line:
                k, v = line.rstrip("\n").split(" = ", 1)
                rec[k] = v
    return rec


def object_path(repo, label):
    return os.path.join(repo, record(repo, label)["manifest"])


def plain_bytes(repo, label):
    rec = record(repo, label)
    data = open(os.path.join(repo, rec["manifest"]), "rb").read()
    if rec["manifest"].endswith(".mdb"):
        data = data[: int(rec["manifest_size"])]
    return data


def connect(path, temp=True):
    """A connection to a plain SQLite manifest file, with table blocks."""
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    if "runs" in tables:
        con.execute(
            "create %s table blocks(file, blockno, id, pack, offset, stored_len, raw_len)"
            % ("temp" if temp else ""))
        rows = []
        for file, blockno, count, pack, offset, ids, lens in con.execute(
                "select file, blockno, count, pack, offset, ids, lens from runs"):
            off = offset
            for i in range(count):
                stored, raw = struct.unpack_from("<II", lens, 8 * i)
                rows.append((file, blockno + i, ids[32 * i:32 * i + 32], pack, off, stored, raw))
                off += stored
        con.executemany("insert into blocks values (?,?,?,?,?,?,?)", rows)
    return con


def open_backup(repo, label):
    fd, path = tempfile.mkstemp(suffix=".db")
    os.write(fd, plain_bytes(repo, label))
    os.close(fd)
    con = connect(path)
    os.unlink(path)  # the connection keeps it open
    return con


def store(repo, label, data):
    """Store data as label's manifest object and make the record match."""
    rec = record(repo, label)
    key = rec["manifest"]
    info = os.path.join(repo, "backups", label + ".info")
    lines = [l for l in open(info).read().splitlines()
             if not l.startswith(("manifest_size =", "manifest_sha256 =",
                                  "manifest_index_sha256 ="))]
    if key.endswith(".mdb"):
        chunk = int(rec["manifest_chunk"])
        index = b"".join(hashlib.sha256(data[i:i + chunk]).digest()
                         for i in range(0, len(data), chunk))
        open(os.path.join(repo, key), "wb").write(data + index)
        lines += ["manifest_size = %d" % len(data),
                  "manifest_index_sha256 = " + hashlib.sha256(index).hexdigest()]
    else:
        open(os.path.join(repo, key), "wb").write(data)
        lines += ["manifest_size = %d" % len(data),
                  "manifest_sha256 = " + hashlib.sha256(data).hexdigest()]
    open(info, "w").write("\n".join(lines) + "\n")


def edit(repo, label, sql):
    """SQL may change table blocks: the runs are then made from it again,
    one block each."""
    fd, path = tempfile.mkstemp(suffix=".db")
    os.write(fd, plain_bytes(repo, label))
    os.close(fd)
    con = connect(path, temp=False)
    runs = con.execute("select 1 from sqlite_master where name = 'runs'").fetchone()
    con.executescript(sql)
    if runs:
        con.create_function("lens", 2, lambda s, r: struct.pack("<II", s, r))
        con.executescript("delete from runs;"
                          "insert into runs select file, blockno, 1, pack, offset, id,"
                          " lens(stored_len, raw_len) from blocks;"
                          "drop table blocks;")
    con.commit()
    con.close()
    data = open(path, "rb").read()
    os.unlink(path)
    store(repo, label, data)


def legacy(repo, label):
    rec = record(repo, label)
    fd, path = tempfile.mkstemp(suffix=".db")
    os.write(fd, plain_bytes(repo, label))
    os.close(fd)
    con = connect(path, temp=False)
    con.executescript(
        "create table blocks1(file INT NOT NULL, blockno INT NOT NULL, id BLOB NOT NULL,"
        " pack INT NOT NULL, offset INT NOT NULL, stored_len INT NOT NULL,"
        " raw_len INT NOT NULL, PRIMARY KEY(file, blockno)) WITHOUT ROWID;"
        "insert into blocks1 select * from blocks;"
        "drop table blocks; drop table runs;"
        "alter table blocks1 rename to blocks;"
        "update meta set value = '1' where key = 'format';")
    con.commit()
    con.execute("vacuum")
    con.close()
    data = open(path, "rb").read()
    os.unlink(path)
    old = rec["manifest"]
    key = old[:-len(".mdb")] + ".db"
    open(os.path.join(repo, key), "wb").write(data)
    os.unlink(os.path.join(repo, old))
    info = os.path.join(repo, "backups", label + ".info")
    lines = [l for l in open(info).read().splitlines()
             if not l.startswith(("manifest =", "manifest_size =", "manifest_chunk =",
                                  "manifest_index_sha256 ="))]
    lines += ["manifest = " + key, "manifest_size = %d" % len(data),
              "manifest_sha256 = " + hashlib.sha256(data).hexdigest()]
    open(info, "w").write("\n".join(lines) + "\n")


def main(argv):
    if len(argv) >= 4 and argv[1] == "query":
        con = open_backup(argv[2], argv[3])
        for r in con.execute(argv[4]):
            print("\t".join(str(x) for x in r))
    elif len(argv) == 5 and argv[1] == "edit":
        edit(argv[2], argv[3], argv[4])
    elif len(argv) == 4 and argv[1] == "legacy":
        legacy(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "object":
        print(object_path(argv[2], argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
