#!/usr/bin/env python3
"""Python's process pools on the workloads of procpool's benchmark report.

Run by `cargo run --release --example bench_report` (which adds the figures
to its table); it can also be run by hand: `python3 benches/python_pool.py`.
Prints one JSON object on stdout, progress on stderr.

Variants, each with 2 workers:
- cf_spawn: concurrent.futures.ProcessPoolExecutor, "spawn" start method
- cf_forkserver: concurrent.futures.ProcessPoolExecutor, "forkserver"
- mp_pool_fork: multiprocessing.Pool with Linux's default start method (fork)

Workloads (iteration counts are smaller than the Rust side's, to keep the
run bounded; the JSON says how many were run):
- w1: one no-op job (int in, int out) submitted and waited for, one at a
  time, after a warm-up: p50 and p99 in microseconds
- w2: no-op jobs through map() with chunksize=1, and 200,000 with a large
  chunksize: jobs/s
- w4: from creating the pool to the first result of a no-op job: median ms
  (for forkserver, the fork server itself is already running after the
  first round)
- w5: a job taking 64 MiB of bytes and returning its length, and one
  echoing them back: MB/s (echo counts the bytes moved both ways)
"""

import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import statistics
import sys
import time

WORKERS = 2
W1_WARMUP = 200
W1_ITERS = 3_000
W2_CHUNK1_JOBS = 20_000
W2_BATCHED_JOBS = 200_000
W2_CHUNK = 1_000
W4_ROUNDS = 20
W5_SIZE = 64 << 20
W5_REPS = 3


def noop(x):
    return x + 1


def length(b):
    return len(b)


def echo(b):
    return b


def percentile(samples, p):
    """The sample of rank ceil(p * n), as the Rust side computes it."""
    s = sorted(samples)
    rank = max(1, min(len(s), math.ceil(p * len(s))))
    return s[rank - 1]


class Executor:
    """One interface over both pool kinds: submit -> result, map."""

    def __init__(self, kind, method):
        self.kind = kind
        ctx = mp.get_context(method)
        if kind == "cf":
            self.pool = cf.ProcessPoolExecutor(max_workers=WORKERS, mp_context=ctx)
        else:
            self.pool = ctx.Pool(WORKERS)

    def call(self, fn, arg):
        if self.kind == "cf":
            return self.pool.submit(fn, arg).result()
        return self.pool.apply(fn, (arg,))

    def map(self, fn, items, chunksize):
        return list(self.pool.map(fn, items, chunksize=chunksize))

    def close(self):
        if self.kind == "cf":
            self.pool.shutdown(wait=True)
        else:
            self.pool.close()
            self.pool.join()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def measure(name, kind, method):
    out = {}
    log(f"python {name}: W4 cold start...")
    times = []
    for _ in range(W4_ROUNDS):
        t = time.perf_counter()
        ex = Executor(kind, method)
        assert ex.call(noop, 1) == 2
        times.append(time.perf_counter() - t)
        ex.close()
    out["w4_ms"] = statistics.median(times) * 1e3
    out["w4_rounds"] = W4_ROUNDS

    ex = Executor(kind, method)
    try:
        log(f"python {name}: W1 latency...")
        # Warm up with jobs in flight at once, so that every worker exists
        # (concurrent.futures starts spawn/forkserver workers on demand).
        ex.map(noop, range(WORKERS * 10), 1)
        for i in range(W1_WARMUP):
            ex.call(noop, i)
        samples = []
        for i in range(W1_ITERS):
            t = time.perf_counter()
            r = ex.call(noop, i)
            samples.append(time.perf_counter() - t)
            assert r == i + 1
        out["w1_p50_us"] = percentile(samples, 0.50) * 1e6
        out["w1_p99_us"] = percentile(samples, 0.99) * 1e6
        out["w1_iters"] = W1_ITERS

        log(f"python {name}: W2 throughput...")
        t = time.perf_counter()
        r = ex.map(noop, range(W2_CHUNK1_JOBS), 1)
        out["w2_chunk1_jobs_per_s"] = W2_CHUNK1_JOBS / (time.perf_counter() - t)
        out["w2_chunk1_jobs"] = W2_CHUNK1_JOBS
        assert r[-1] == W2_CHUNK1_JOBS
        t = time.perf_counter()
        r = ex.map(noop, range(W2_BATCHED_JOBS), W2_CHUNK)
        out["w2_batched_jobs_per_s"] = W2_BATCHED_JOBS / (time.perf_counter() - t)
        out["w2_batched_jobs"] = W2_BATCHED_JOBS
        out["w2_chunk"] = W2_CHUNK
        assert r[-1] == W2_BATCHED_JOBS

        log(f"python {name}: W5 64 MiB payloads...")
        payload = bytes(range(256)) * (W5_SIZE // 256)
        len_times = []
        echo_times = []
        for rep in range(W5_REPS + 1):
            t = time.perf_counter()
            n = ex.call(length, payload)
            len_t = time.perf_counter() - t
            assert n == W5_SIZE
            t = time.perf_counter()
            back = ex.call(echo, payload)
            echo_t = time.perf_counter() - t
            assert back == payload
            del back
            if rep > 0:  # the first is a warm-up
                len_times.append(len_t)
                echo_times.append(echo_t)
        out["w5_len_mb_per_s"] = W5_SIZE / statistics.median(len_times) / 1e6
        out["w5_echo_mb_per_s"] = 2 * W5_SIZE / statistics.median(echo_times) / 1e6
        out["w5_reps"] = W5_REPS
    finally:
        ex.close()
    return out


def main():
    started = time.perf_counter()
    variants = [
        ("cf_spawn", "cf", "spawn"),
        ("cf_forkserver", "cf", "forkserver"),
        ("mp_pool_fork", "mp", "fork"),
    ]
    result = {"python": sys.version.split()[0], "workers": WORKERS, "variants": {}}
    for name, kind, method in variants:
        result["variants"][name] = measure(name, kind, method)
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
