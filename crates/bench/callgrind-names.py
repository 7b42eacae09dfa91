#!/usr/bin/env python3
"""Instructions per operation of each function on the thread that makes the
telemetry, guest functions named: callgrind sees the guest's compiled code
only as addresses, and wasmtime's perf map names them.

    WASI_OBSERVE_BENCH_PERFMAP=1 valgrind --tool=callgrind --separate-threads=yes \
        --callgrind-out-file=/tmp/cg/cg.%p \
        target/release/wasi-observe-bench --guest tracing 30000
    crates/bench/callgrind-names.py /tmp/cg/cg.PID-01 /tmp/perf-PID.map 33000

(30 000 operations and their tenth as warm-up: divide by 33 000.) Prints
the self cost of each function, largest first; docs/benchmarks.md cites its
figures.
"""
import bisect
import collections
import re
import sys


def main(profile, perf_map, ops, top=60):
    symbols = []
    with open(perf_map) as f:
        for line in f:
            start, size, name = line.rstrip("\n").split(" ", 2)
            symbols.append((int(start, 16), int(size, 16), name))
    symbols.sort()
    starts = [s[0] for s in symbols]

    def resolve(name):
        m = re.fullmatch(r"0x([0-9a-f]+)", name)
        if not m:
            return name
        addr = int(m.group(1), 16)
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and addr < symbols[i][0] + symbols[i][1]:
            return symbols[i][2]
        return name

    names = {}

    def named(token):
        m = re.match(r"\((\d+)\)(?: (.*))?", token)
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names[m.group(1)]

    cost = collections.Counter()
    current, call_line = None, False
    with open(profile) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                current = resolve(named(line[3:]))
            elif line.startswith("cfn="):
                named(line[4:])
            elif line.startswith("calls="):
                # The next cost line is the call's, counted in the callee.
                call_line = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if call_line:
                    call_line = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and current:
                    cost[current] += int(parts[1])
    print(f"{sum(cost.values()) / ops:8.0f} in all")
    for name, c in cost.most_common(top):
        print(f"{c / ops:8.0f} {name[:160]}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
