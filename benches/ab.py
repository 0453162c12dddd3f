#!/usr/bin/env python3
"""Interleaved A/B timing of whole commands: ROUNDS rounds, each running
every command once in a rotated order; prints the median and minimum wall
time and the median CPU time (user + system, from wait4) of each.

Usage: python3 benches/ab.py ROUNDS name=CMD [name=CMD ...]
(each CMD is a shell command line)."""
import os, subprocess, sys, time, statistics, json
rounds = int(sys.argv[1]); progs = [a.split("=", 1) for a in sys.argv[2:]]
res = {n: ([], []) for n, _ in progs}
for r in range(rounds):
    order = progs[r % len(progs):] + progs[:r % len(progs)]
    for n, cmd in order:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, st, ru = os.wait4(p.pid, 0)
        w = time.perf_counter() - t
        res[n][0].append(w); res[n][1].append(ru.ru_utime + ru.ru_stime)
for n, (w, c) in res.items():
    print(f"{n}: wall median {statistics.median(w):.3f} (min {min(w):.3f}) cpu median {statistics.median(c):.3f}")
