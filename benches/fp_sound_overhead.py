#!/usr/bin/env python3
# Overhead of --fp-sound (issue 16): CROWN and alpha-CROWN, f32 and f64, on every reference case of
# ../shared/reference, one `lirpa bounds --json --threads 1` process per run (model loading included;
# CROWN best of 3, alpha-CROWN one run), default against --fp-sound: time ratio, median width ratio
# (sound width / default width over the outputs), and whether the sound bounds enclose the default ones.
# Usage: python3 benches/fp_sound_overhead.py [LIRPA_BINARY]  (run from the repository root)
import json, os, subprocess, sys, time, statistics
B = sys.argv[1] if len(sys.argv) > 1 else 'target/release/lirpa'
R = '../shared/reference'
cases = []
for grp in ['synthetic', 'vnncomp']:
    for name in sorted(os.listdir(f'{R}/{grp}')):
        d = f'{R}/{grp}/{name}'
        if not os.path.exists(f'{d}/case.json'): continue
        c = json.load(open(f'{d}/case.json'))
        args = [B, 'bounds', f'{d}/{c["model"]}', '--json', '--threads', '1']
        if c['norm'] == 'box':
            json.dump(c['input_lower'], open(f'/tmp/lirpa-fp-{name}_l.json', 'w')); json.dump(c['input_upper'], open(f'/tmp/lirpa-fp-{name}_u.json', 'w'))
            args += ['--lower', f'/tmp/lirpa-fp-{name}_l.json', '--upper', f'/tmp/lirpa-fp-{name}_u.json']
        else:
            json.dump(c['center'], open(f'/tmp/lirpa-fp-{name}_c.json', 'w'))
            args += ['--norm', c['norm'], '--eps', str(c['eps']), '--center', f'/tmp/lirpa-fp-{name}_c.json']
        cases.append((name, args))
def run(args, reps):
    best = None; out = None
    for _ in range(reps):
        t = time.perf_counter(); p = subprocess.run(args, capture_output=True, text=True); dt = time.perf_counter() - t
        if p.returncode != 0: return None, p.stderr.strip().splitlines()[-1][:150]
        out = json.loads(p.stdout); best = dt if best is None else min(best, dt)
    return best, out
rows = []
for name, args in cases:
    for method, reps in [('crown', 3), ('alpha-crown', 1)]:
        for dt in ['f32', 'f64']:
            a = args + ['--method', method, '--dtype', dt]
            t0, o0 = run(a, reps)
            if t0 is None: print(f'{name:32} {method:11} {dt} default error: {o0}', flush=True); continue
            t1, o1 = run(a + ['--fp-sound'], reps)
            if t1 is None: print(f'{name:32} {method:11} {dt} REFUSED: {o1}', flush=True); continue
            ratios = [(u1-l1)/(u0-l0) for l0,u0,l1,u1 in zip(o0['lower'],o0['upper'],o1['lower'],o1['upper']) if u0 > l0]
            ok = all(l1 <= l0 and u1 >= u0 for l0,u0,l1,u1 in zip(o0['lower'],o0['upper'],o1['lower'],o1['upper']))
            med = statistics.median(ratios) if ratios else float('nan')
            print(f'{name:32} {method:11} {dt} default {t0:7.3f}s sound {t1:7.3f}s  x{t1/t0:5.2f}  median width ratio {med:.6f}  encloses default: {ok}', flush=True)
            rows.append((name, method, dt, t0, t1, med))
json.dump(rows, open('/tmp/lirpa-fp-rows.json', 'w'))
for m in ['crown', 'alpha-crown']:
    for dt in ['f32', 'f64']:
        r = [x for x in rows if x[1] == m and x[2] == dt]
        if not r: continue
        t = [x[4] / x[3] for x in r]; w = [x[5] for x in r]
        print(f'{m:11} {dt}: {len(r)} cases, time ratio median {statistics.median(t):.2f} (min {min(t):.2f}, max {max(t):.2f}), '
              f'total {sum(x[3] for x in r):.2f}s -> {sum(x[4] for x in r):.2f}s; width ratio median {statistics.median(w):.4f}, max {max(w):.4f}')
