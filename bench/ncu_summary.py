#!/usr/bin/env python3
"""Summarize `ncu --metrics gpu__time_duration.sum --csv` output: time per kernel name."""
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
hdr = None
agg = collections.defaultdict(lambda: [0, 0.0])
for r in rows:
    if 'Kernel Name' in r: hdr = r; continue
    if not hdr or len(r) != len(hdr): continue
    d = dict(zip(hdr, r))
    if d.get('Metric Name') != 'gpu__time_duration.sum': continue
    name = d['Kernel Name'].split('(')[0]
    v = float(d['Metric Value'].replace(',', ''))
    unit = d.get('Metric Unit', 'nsecond')
    us = v / 1000 if unit.startswith('n') else v if unit.startswith('u') else v * 1000
    agg[name][0] += 1; agg[name][1] += us
tot = sum(a[1] for a in agg.values())
print(f"{'kernel':50s} {'calls':>6s} {'total us':>10s} {'avg us':>9s} {'share':>6s}")
for k, (n, t) in sorted(agg.items(), key=lambda x: -x[1][1]):
    print(f"{k[:50]:50s} {n:6d} {t:10.1f} {t/n:9.2f} {100*t/tot:5.1f}%")
print(f"total {tot:.1f} us")
