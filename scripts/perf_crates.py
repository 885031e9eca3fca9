#!/usr/bin/env python3
"""Where the demo app's CPU goes, by crate, from a `perf record -g` of it
(scripts/load.sh with LOAD_PERF=1 writes target/load/perf.data):

    perf script -i target/load/perf.data -F comm,tid,ip,sym,dso > stacks.txt
    python3 scripts/perf_crates.py stacks.txt

Prints each sample's share twice: by where it landed (the leaf frame's
crate: the allocator, libc and the kernel are their own), and charged to
an owner, where a sample in the allocator, libc, Rust's standard library
or the tokio runtime goes to the first caller frame that names a crate
(so an allocation is charged to the code that asked for it). Symbols are
matched by name, so inlined code counts as its caller's.
"""
import collections
import re
import sys

CRATES = [
    ("argon2", r"argon2|blake2"),
    ("JWT (jsonwebtoken, HMAC, SHA-256, base64)", r"jsonwebtoken|hmac|sha2|base64"),
    ("TLS to PostgreSQL (rustls, ring)", r"rustls|ring_core|\bring::|webpki"),
    ("tracing", r"tracing"),
    ("the ORM (orm_core)", r"orm_core"),
    ("tokio-postgres, postgres-protocol, deadpool", r"tokio_postgres|postgres_protocol|postgres_types|deadpool"),
    ("serde, serde_json", r"serde"),
    ("demo app", r"demo_app"),
    ("HTTP (axum, tower, hyper)", r"axum|tower|hyper|\bhttp::|httparse|matchit"),
    ("chrono, uuid", r"chrono|uuid"),
    ("tokio runtime", r"tokio::|mio::"),
]
# Leaves charged to the first caller frame that names a crate.
GENERIC = {"allocator (glibc malloc, free)", "libc (memcpy, ...)", "Rust std, core, alloc", "tokio runtime"}


def crate(symbol, dso):
    if dso.startswith("[kernel"):
        return "kernel"
    if "libc" in dso:
        if re.search(r"malloc|free|unlink_chunk|realloc|calloc|consolidate|tcache", symbol):
            return "allocator (glibc malloc, free)"
        return "libc (memcpy, ...)"
    for name, pattern in CRATES:
        if re.search(pattern, symbol):
            return name
    return "Rust std, core, alloc"


def samples(path):
    stack = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            frame = re.match(r"\s+[0-9a-f]+ (.*) \((.*)\)\s*$", line)
            if frame:
                stack.append((frame.group(1), frame.group(2)))
            elif not line.strip() or not line[0].isspace():
                if stack:
                    yield stack
                stack = []
    if stack:
        yield stack


def main():
    leaves, owners = collections.Counter(), collections.Counter()
    for stack in samples(sys.argv[1]):
        leaf = crate(*stack[0])
        leaves[leaf] += 1
        owner = leaf
        if leaf in GENERIC:
            owner = next((c for c in (crate(s, d) for s, d in stack[1:]) if c not in GENERIC), leaf)
        owners[owner] += 1
    total = sum(leaves.values())
    if total == 0:
        sys.exit("no samples")
    for title, counts in (("where the samples landed", leaves), ("charged to their owner", owners)):
        print(f"{title} ({total} samples):")
        for name, count in counts.most_common():
            print(f"  {100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
