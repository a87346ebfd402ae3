#!/usr/bin/env python3
"""Summarise a `perf record -g` profile of Trestle by component.

    perf record -e cpu-clock -F 299 --call-graph dwarf,32768 -p PID -o perf.data -- sleep 8
    perf script -i perf.data --no-inline -F comm,tid,ip,sym,dso > perf.txt
    benches/tools/profile-buckets.py perf.txt

Prints three views of the same samples:
  1. by thread name (tokio workers, raft drivers, RocksDB background threads);
  2. by leaf: where the CPU actually was (kernel, malloc/free, memcpy, the process's own code);
  3. by component: each sample goes to the innermost frame that names a component (so malloc called by
     the JSON writer counts as JSON writing, a send() syscall made by hyper counts as HTTP/1);
plus the inclusive share of a few key functions (every sample with that function anywhere on its stack).
"""

import collections
import re
import sys

# Innermost match wins, so more specific patterns may appear in any order.
COMPONENTS = [
    ("fsync (kernel)", r"\b(fdatasync|fsync|__x64_sys_fdatasync|__x64_sys_fsync)\b"),
    ("RocksDB write path", r"rocksdb::(DBImpl::Write|WriteBatch|WriteImpl|MemTable::Add|log::Writer)"),
    ("RocksDB read path", r"rocksdb::"),
    ("entity codec (storage)", r"trestle_storage_node::codec::"),
    ("query engine", r"trestle_storage_node::query::"),
    ("REST: JSON write", r"trestle_rest_gateway::json::write"),
    ("REST: JSON parse", r"trestle_rest_gateway::json::parse"),
    ("REST: Shared Key auth", r"trestle_rest_gateway::auth|sha2::|hmac::"),
    ("REST: $batch multipart", r"trestle_rest_gateway::batch"),
    ("uuid v4 (getrandom)", r"uuid::|getrandom"),
    ("protobuf (prost / rust-protobuf)", r"prost::|protobuf::|::encode_to_vec|::decode\b"),
    ("raft-rs", r"^raft::|<raft::|raft::raw_node|raft::raft"),
    ("replication driver", r"trestle_replication::"),
    ("gRPC (tonic/h2)", r"tonic::|h2::"),
    ("HTTP/1 (hyper)", r"hyper::proto::h1|hyper::body|httparse"),
    ("storage node (tables, forwarding, grpc api)", r"trestle_storage_node::"),
    ("REST gateway (routing, headers, errors)", r"trestle_rest_gateway::|axum::"),
    ("http/headers", r"\bhttp::"),
    ("tokio runtime", r"tokio::"),
]
KEY_FUNCTIONS = [
    ("REST request (gateway::server::process)", r"trestle_rest_gateway::server::process"),
    ("  Shared Key authenticate", r"trestle_rest_gateway::auth::authenticate"),
    ("  EDM JSON write", r"trestle_rest_gateway::json::write"),
    ("  EDM JSON parse", r"trestle_rest_gateway::json::parse"),
    ("  ClusterTableService (service call)", r"ClusterTableService as trestle_rest_gateway::service::TableService"),
    ("  uuid::Uuid::new_v4", r"uuid::Uuid::new_v4"),
    ("gRPC table API (grpc_api)", r"trestle_storage_node::grpc_api"),
    ("forwarding to the leader (forward.rs)", r"trestle_storage_node::forward"),
    ("Raft transport (replication::grpc)", r"trestle_replication::grpc"),
    ("raft driver thread (Driver::run)", r"trestle_replication::driver::Driver::run"),
    ("raft driver: handling inbound messages", r"trestle_replication::driver::Driver::handle"),
    ("engine write (incl. fsync)", r"RocksEngine as trestle_engine::Engine>::write"),
    ("apply (state machine)", r"apply_committed"),
    ("RocksDB get (point reads)", r"rocksdb::DBImpl::Get"),
    ("malloc/free/realloc (anywhere)", r"^(malloc|free|cfree|realloc|_int_malloc|_int_free|_int_realloc|malloc_consolidate|unlink_chunk)"),
    ("memcpy/memmove (anywhere)", r"memmove|memcpy"),
]


def samples(path):
    """Yields (comm, frames leaf-first as (sym, dso))."""
    comm, frames = None, []
    header = re.compile(r"^(\S.*?)\s+(\d+)\s*$")
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if comm is not None:
                    yield comm, frames
                comm, frames = None, []
                continue
            if not line.startswith(("\t", " ")):
                m = header.match(line)
                comm = m.group(1) if m else line.strip()
                frames = []
                continue
            parts = line.strip().split(None, 1)
            rest = parts[1] if len(parts) > 1 else ""
            m = re.match(r"^(.*?)\s+\((.*)\)$", rest)
            sym, dso = (m.group(1), m.group(2)) if m else (rest, "")
            frames.append((sym, dso))
    if comm is not None:
        yield comm, frames


GENERIC = {"tokio runtime", "http/headers"}


def component(frames, comps):
    """The innermost specific component on the stack; generic ones (tokio, http) only if nothing else."""
    generic = None
    for sym, _ in frames:
        hit = next((n for n, rx in comps if rx.search(sym)), None)
        if hit and hit not in GENERIC:
            return hit
        if hit and generic is None:
            generic = hit
    return generic or "other"


def syscall_kind(libc_call, kernel_frames):
    """Classifies a syscall by the kernel functions on the stack, falling back on the libc entry point."""
    k = " ".join(kernel_frames)
    if "tcp_sendmsg" in k or "tcp_write_xmit" in k:
        return "TCP send (loopback: includes the receiver's softirq)"
    if "tcp_recvmsg" in k:
        return "TCP recv"
    if re.search(r"fsync|fdatasync|file_write_and_wait|jbd2", k):
        return "fsync"
    if "futex" in k:
        return "futex (thread wake-ups and locks)"
    if "epoll" in k:
        return "epoll"
    if "getrandom" in k or "getrandom" in libc_call:
        return "getrandom (uuid v4)"
    if re.search(r"vfs_write|ext4_|xfs_|generic_perform_write", k):
        return "file write (RocksDB WAL / SST)"
    if re.search(r"vfs_read|filemap_read|ext4_file_read", k):
        return "file read (RocksDB SST)"
    if re.search(r"writev|write|send", libc_call):
        return "TCP send (loopback: includes the receiver's softirq)"
    if re.search(r"recv|read", libc_call):
        return "TCP recv"
    if re.search(r"syscall|futex|lll_lock", libc_call):
        return "futex (thread wake-ups and locks)"
    return "other (" + libc_call[:40] + ")"


def leaf_kind(sym, dso):
    if "kernel" in dso or dso.startswith("[k"):
        return "kernel (syscalls, TCP, scheduler)"
    if re.match(r"^(malloc|free|cfree|realloc|_int_malloc|_int_free|_int_realloc|malloc_consolidate|unlink_chunk|__libc_malloc|__libc_free)", sym):
        return "malloc/free"
    if "memmove" in sym or "memcpy" in sym or "memset" in sym or "memcmp" in sym:
        return "memcpy/memcmp"
    if "libc" in dso:
        return "libc (other)"
    if "libstdc++" in dso:
        return "libstdc++"
    return "process code"


def main():
    path = sys.argv[1]
    comps = [(n, re.compile(p)) for n, p in COMPONENTS]
    keys = [(n, re.compile(p)) for n, p in KEY_FUNCTIONS]
    by_thread, by_leaf, by_comp, inclusive, senders = (collections.Counter() for _ in range(5))
    total = 0
    for comm, frames in samples(path):
        total += 1
        thread = re.sub(r"[-:]?\d+$", "", comm)
        by_thread[thread] += 1
        if frames:
            by_leaf[leaf_kind(*frames[0])] += 1
        chosen = component(frames, comps)
        if frames and "kernel" in frames[0][1]:
            kernel = [sym for sym, dso in frames if "kernel" in dso]
            call = next((sym for sym, dso in frames if "kernel" not in dso), "?")
            from_syscall = kernel and kernel[-1].startswith("entry_SYSCALL")
            kind = syscall_kind(call, kernel) if from_syscall else "interrupts, page faults, scheduler IPIs"
            by_comp["kernel: " + kind] += 1
            if kind == "TCP send (loopback: includes the receiver's softirq)":
                senders[chosen] += 1
        else:
            by_comp[chosen] += 1
        for name, rx in keys:
            if any(rx.search(sym) for sym, _ in frames):
                inclusive[name] += 1
    print(f"{total} samples")
    for title, counter in (("by thread", by_thread), ("by leaf", by_leaf), ("by component (innermost)", by_comp)):
        print(f"\n{title}:")
        for name, n in counter.most_common():
            print(f"  {100.0 * n / total:5.1f}%  {name}")
    if senders:
        sent = sum(senders.values())
        print("\nTCP send samples by the component that sent:")
        for name, n in senders.most_common():
            print(f"  {100.0 * n / sent:5.1f}%  {name}")
    print("\ninclusive (function anywhere on the stack):")
    for name, _ in keys:
        print(f"  {100.0 * inclusive[name] / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
