#!/usr/bin/env python3
"""Reads N files through Breezy's smart server (bzr://), one get each, as a
Breezy client does; prints the median seconds of RUNS runs as JSON.

usage: brz_read.py URL COUNT RUNS
"""
import json
import statistics
import sys
import time

from breezy.transport import get_transport

url, count, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = ["f%04d" % i for i in range(count)]
t = get_transport(url)
t.get_bytes(names[0])  # connect outside the timing, like the framegate side
times = []
for _ in range(runs):
    start = time.perf_counter()
    total = 0
    for name in names:
        total += len(t.get_bytes(name))
    times.append(time.perf_counter() - start)
    assert total == count * 1024, total
print(json.dumps({"median_s": statistics.median(times)}))
