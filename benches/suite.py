#!/usr/bin/env python3
"""The benchmark suite: bake against ninja and make on the same generated graphs,
and the other figures of BENCHMARKS.md. `benches/suite.py [--quick]` builds
bake, runs everything, prints medians and spreads, and writes
target/bench/results.json and benches/scaling.svg (eval, plan and no-op time
against node count, bake and ninja).

Every timing is a whole process, started from here. Where bake and a peer are
compared, their runs alternate (bake, peer, bake, ...) so that a load on the
machine falls on both. Stores and ninja trees for the no-op runs are kept under
target/bench/ (a cold 10,000-step build takes minutes), so a rerun measures at
once; delete the directory to start over.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "target" / "bench"
BAKE = ROOT / "target" / "release" / "bake"
GEN = ROOT / "target" / "release" / "examples" / "gen_recipe"
FLOOR = ROOT / "target" / "release" / "examples" / "step_floor"


def unlimited_stack():
    # ninja recurses along dependency chains: 100,000 deep overflows 8 MB.
    resource.setrlimit(resource.RLIMIT_STACK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def run(cmd, cwd=None, stack=False):
    """Runs `cmd` to the end, which must succeed; returns (wall seconds, peak
    RSS in MB, CPU seconds), the last two the child's own, read by wait4."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            if cwd:
                os.chdir(cwd)
            if stack:
                unlimited_stack()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.execv(shutil.which(str(cmd[0])) or str(cmd[0]), [str(c) for c in cmd])
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(map(str, cmd))}")
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def stats(samples):
    s = sorted(samples)
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0], s[0], s[0]]
    return {"median": statistics.median(s), "q1": q[0], "q3": q[2], "min": s[0], "max": s[-1], "runs": len(s)}


def show(what, st, unit="ms", scale=1e3):
    cpu = f"; CPU median {st['cpu']['median'] * scale:.1f}" if "cpu" in st else ""
    print(
        f"  {what:<52} median {st['median'] * scale:9.1f} {unit}"
        f"  (IQR {st['q1'] * scale:.1f}-{st['q3'] * scale:.1f}, min {st['min'] * scale:.1f}, n={st['runs']}{cpu})",
        flush=True,
    )


def alternate(runs, named, prepare=None):
    """Times each (name, cmd, cwd, stack) of `named` `runs` times, alternating."""
    times = {n: [] for n, *_ in named}
    cpu = {n: [] for n, *_ in named}
    rss = {n: 0.0 for n, *_ in named}
    for _ in range(runs):
        for name, cmd, cwd, stack in named:
            if prepare:
                prepare(name)
            t, m, c = run(cmd, cwd, stack)
            times[name].append(t)
            cpu[name].append(c)
            rss[name] = max(rss[name], m)
    return {n: dict(stats(t), rss_mb=rss[n], cpu=stats(cpu[n])) for n, t in times.items()}


def generate(n, fmt, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(subprocess.check_output([GEN, str(n), fmt]))
        # Dated back, so the evaluation cache may keep what it reads (a file
        # changed within a timestamp tick of a run is not trusted to show edits).
        past = time.time() - 60
        os.utime(path, (past, past))
    return path


def graph_dir(n):
    d = BENCH / f"graph-{n}"
    generate(n, "kdl", d / "bake" / "r.kdl")
    generate(n, "ninja", d / "ninja" / "build.ninja")
    generate(n, "make", d / "make" / "Makefile")
    return d


def bake(*args):
    return [BAKE, *args]


def scaling(sizes, noop_sizes, runs, results):
    print("eval, plan and no-op against node count (bake vs ninja)", flush=True)
    out = results.setdefault("scaling", {})
    for n in sizes:
        d = graph_dir(n)
        r = d / "bake" / "r.kdl"
        fresh = d / "fresh-store"
        # Cold: no evaluation cache (a fresh store each run). Warm: from the cache.
        cold = alternate(
            3 if n >= 100_000 else runs,
            [("bake eval, cold", bake("eval", r, "--cache", fresh), None, False)],
            prepare=lambda _: shutil.rmtree(fresh, ignore_errors=True),
        )
        warm_store = d / "warm-store"
        run(bake("eval", r, "--cache", warm_store))
        ninja_plan = d / "ninja-plan"

        def fresh_ninja(name):
            if name.startswith("ninja"):
                shutil.rmtree(ninja_plan, ignore_errors=True)
                ninja_plan.mkdir()
                shutil.copy(d / "ninja" / "build.ninja", ninja_plan / "build.ninja")

        plan = alternate(
            runs,
            [
                ("bake eval, warm", bake("eval", r, "--cache", warm_store), None, False),
                ("bake plan, warm eval, empty store", bake("plan", r, "--cache", warm_store), None, False),
                ("ninja -n, fresh tree", ["ninja", "-n"], ninja_plan, True),
            ],
            prepare=fresh_ninja,
        )
        row = {**cold, **plan}
        for name, st in row.items():
            show(f"{name}, {n:,} nodes", st)
            print(f"  {'':<52} peak RSS {st['rss_mb']:.0f} MB")
        out[str(n)] = row
    for n in noop_sizes:
        d = graph_dir(n)
        store, links = d / "store", d / "out"
        for tool, cmd, cwd in [
            ("bake", bake("build", d / "bake" / "r.kdl", "--cache", store, "--out-link", links, "-j2"), None),
            ("ninja", ["ninja", "-j2"], d / "ninja"),
            ("make", ["make", "-j2"], d / "make"),
        ]:
            marker = d / f"{tool}.built"
            if not marker.exists():
                print(f"  (first {tool} build of {n:,} steps, once)", flush=True)
                t, _, _ = run(cmd, cwd, True)
                marker.write_text(f"{t}\n")
        noop = [
                ("bake no-op build", bake("build", d / "bake" / "r.kdl", "--cache", store, "--out-link", links), None, False),
                ("ninja no-op", ["ninja"], d / "ninja", True),
                ("make -q", ["make", "-q"], d / "make", False),
        ]
        for _, cmd, cwd, stack in noop:
            run(cmd, cwd, stack)  # the first after a build links or writes what it found
        row = alternate(runs * 2, noop)
        for name, st in row.items():
            show(f"{name}, {n:,} nodes", st)
        ratio = row["bake no-op build"]["median"] / row["ninja no-op"]["median"]
        print(f"  no-op bake/ninja at {n:,} nodes: {ratio:.2f}", flush=True)
        out.setdefault(str(n), {}).update(row)
        out[str(n)]["noop ratio bake/ninja"] = ratio


def cold_steps(n, runs, results):
    print(f"cold build of {n:,} trivial steps at -j2 (bake vs ninja, same commands)", flush=True)
    d = graph_dir(n)
    store = d / "cold-store"
    tree = d / "ninja-cold"

    # The last run's tree is moved aside, not removed, until all runs are done:
    # on an ext4 without a journal, each inode freed in the last minute (six,
    # while its block is unwritten) makes every inode allocation search past it,
    # so 30,000 files removed just before a run would slow down both tools.
    aside = d / "cold-aside"
    aside.mkdir(exist_ok=True)
    count = iter(range(1 << 30))

    def prepare(name):
        for t in (store, tree):
            if t.exists():
                t.rename(aside / f"{t.name}-{next(count)}")
        tree.mkdir()
        shutil.copy(d / "ninja" / "build.ninja", tree / "build.ninja")

    row = alternate(
        runs,
        [
            ("bake build -j2", bake("build", d / "bake" / "r.kdl", "--cache", store, "--out-link", d / "cold-out", "-j2"), None, False),
            ("ninja -j2", ["ninja", "-j2"], tree, True),
        ],
        prepare=prepare,
    )
    shutil.rmtree(aside, ignore_errors=True)
    for name, st in row.items():
        show(name, st, "s", 1)
    ratio = row["bake build -j2"]["median"] / row["ninja -j2"]["median"]
    per_step = (row["bake build -j2"]["median"] - row["ninja -j2"]["median"]) * 2 / n
    print(f"  cold bake/ninja: {ratio:.2f}; bake's extra cost per step (2 lanes): {per_step * 1e3:.1f} ms", flush=True)
    results["cold steps"] = {"steps": n, **row, "ratio bake/ninja": ratio, "extra per step s": per_step}


def step_floor(runs, results):
    print("the floor under a cold step: sh -c true started and waited for, in a step's namespaces and root or not", flush=True)
    samples = {}
    for _ in range(runs):
        out = subprocess.check_output([FLOOR, "500"], text=True)
        for line in out.splitlines():
            name, ms = line.rsplit(None, 2)[:2]
            samples.setdefault(name, []).append(float(ms) / 1e3)
    row = {name: stats(t) for name, t in samples.items()}
    for name, st in row.items():
        show(name, st, "µs/step", 1e6)
    results["step floor"] = row


def parallel(runs, results):
    print("parallel efficiency: 4 independent CPU-bound steps, -j1 against -j2", flush=True)
    d = BENCH / "parallel"
    d.mkdir(parents=True, exist_ok=True)
    r = d / "r.kdl"
    loop = "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done"
    r.write_text("".join(f'build "p{k}" {{\n    script "{loop}; echo {k} > $out/x"\n}}\n' for k in range(4)))
    store = d / "store"
    row = alternate(
        runs,
        [
            ("-j1", bake("build", r, "--cache", store, "--out-link", d / "out", "-j1"), None, False),
            ("-j2", bake("build", r, "--cache", store, "--out-link", d / "out", "-j2"), None, False),
        ],
        prepare=lambda _: shutil.rmtree(store, ignore_errors=True),
    )
    for name, st in row.items():
        show(name, st, "s", 1)
    eff = row["-j1"]["median"] / (2 * row["-j2"]["median"])
    print(f"  parallel efficiency t1 / (2 t2): {eff:.2f}", flush=True)
    results["parallel"] = {**row, "efficiency": eff}


INGEST_RECIPE = r'''build "tree" {
    script #"""
        python3 - <<'PY'
        import os
        out = os.environ["out"]
        chunk = os.urandom(1 << 20)
        # 1 GiB of mixed sizes: 2 x 256 MiB, 256 x 1 MiB, 8192 x 16 KiB, 65536 x 1 KiB.
        for name, count, size in [("big", 2, 256 << 20), ("mid", 256, 1 << 20),
                                  ("small", 8192, 16 << 10), ("tiny", 65536, 1 << 10)]:
            for k in range(count):
                d = os.path.join(out, name, "%03d" % (k // 1024))
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "f%d" % k), "wb") as f:
                    left = size
                    while left:
                        n = min(left, len(chunk))
                        f.write(chunk[:n])
                        left -= n
        PY
        """#
}
'''


def ingest(runs, results):
    """The store's ingest hash (bake verify rehashes every object with it)
    against b3sum on the same files, both from the page cache."""
    print("store ingest hash of a 1 GiB tree of mixed sizes, against b3sum on the same files", flush=True)
    d = BENCH / "ingest"
    d.mkdir(parents=True, exist_ok=True)
    r = d / "r.kdl"
    if not r.exists():
        r.write_text(INGEST_RECIPE)
    store = d / "store"
    run(bake("build", r, "--cache", store, "--out-link", d / "out"))
    tree = (d / "out" / "tree").resolve()
    files = sorted(str(p) for p in tree.rglob("f*"))
    listing = d / "files"
    listing.write_text("\0".join(files))
    total = sum(os.path.getsize(f) for f in files)
    run(bake("verify", "--cache", store))
    row = alternate(
        runs,
        [
            ("bake verify (tree hash)", bake("verify", "--cache", store), None, False),
            ("b3sum", ["sh", "-c", f"xargs -0 b3sum < {listing} > /dev/null"], None, False),
        ],
    )
    for name, st in row.items():
        show(f"{name} ({total / (1 << 30):.2f} GiB, {len(files):,} files)", st, "s", 1)
    tb = total / row["bake verify (tree hash)"]["median"] / (1 << 20)
    t3 = total / row["b3sum"]["median"] / (1 << 20)
    print(f"  throughput: bake {tb:.0f} MiB/s, b3sum {t3:.0f} MiB/s, ratio {tb / t3:.2f}", flush=True)
    results["ingest"] = {**row, "bytes": total, "bake MiB/s": tb, "b3sum MiB/s": t3, "ratio": tb / t3}


def keepalived(runs, results):
    print("recipes/keepalived.kdl, whole process", flush=True)
    r = ROOT / "recipes" / "keepalived.kdl"
    store = BENCH / "keepalived-store"
    shutil.rmtree(store, ignore_errors=True)
    cold = alternate(
        runs,
        [("bake eval, cold (fresh store)", bake("eval", r, "--cache", store), None, False)],
        prepare=lambda _: shutil.rmtree(store, ignore_errors=True),
    )
    run(bake("eval", r, "--cache", store))
    warm = alternate(
        runs * 2,
        [
            ("bake eval, warm", bake("eval", r, "--cache", store), None, False),
            ("bake plan, warm", bake("plan", r, "--cache", store), None, False),
        ],
    )
    row = {**cold, **warm}
    # A no-op build needs the whole matrix in a store: the tests' shared store
    # has it once the slow tests ran (or name one with --keepalived-store).
    built = Path(os.environ.get("BAKE_BENCH_KEEPALIVED_STORE", ROOT / "target" / "tmp" / "bake-store"))
    plan = subprocess.run(bake("plan", r, "--json", "--cache", built), capture_output=True, text=True)
    if plan.returncode == 0 and not json.loads(plan.stdout or "{}").get("build", ["?"]):
        run(bake("build", r, "--cache", built))
        row.update(alternate(runs * 2, [("bake build, no-op (matrix built)", bake("build", r, "--cache", built), None, False)]))
    else:
        print(f"  (no no-op build: {built} does not hold the built matrix)", flush=True)
    for name, st in row.items():
        show(name, st)
    results["keepalived"] = row


def svg(results, path):
    """eval, plan and no-op time against node count, log-log, bake and ninja."""
    series = [
        ("bake eval, cold", "#1f77b4", ""),
        ("bake eval, warm", "#1f77b4", "6,4"),
        ("bake plan, warm eval, empty store", "#2ca02c", "6,4"),
        ("ninja -n, fresh tree", "#d62728", ""),
        ("bake no-op build", "#9467bd", ""),
        ("ninja no-op", "#ff7f0e", ""),
    ]
    pts = {}
    for n, row in results.get("scaling", {}).items():
        for name, *_ in series:
            if name in row:
                pts.setdefault(name, []).append((int(n), row[name]["median"]))
    allp = [p for v in pts.values() for p in v]
    if not allp:
        return
    import math

    W, H, L, R, T, B = 720, 440, 70, 250, 30, 50
    xs = [math.log10(x) for x, _ in allp]
    ys = [math.log10(y) for _, y in allp]
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs))
    y0, y1 = math.floor(min(ys)), math.ceil(max(ys))
    fx = lambda x: L + (math.log10(x) - x0) / max(x1 - x0, 1) * (W - L - R)
    fy = lambda y: H - B - (math.log10(y) - y0) / max(y1 - y0, 1) * (H - T - B)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{L}" y="18" font-size="14">bake and ninja: time against node count (median, log-log)</text>',
    ]
    for e in range(x0, x1 + 1):
        x = fx(10**e)
        out.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H - B}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{H - B + 16}" text-anchor="middle">{10**e:,}</text>')
    for e in range(y0, y1 + 1):
        y = fy(10**e)
        label = f"{10**e * 1e3:g} ms" if e < 0 else f"{10**e:g} s"
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">nodes</text>')
    for k, (name, colour, dash) in enumerate(series):
        p = sorted(pts.get(name, []))
        if not p:
            continue
        d = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in p)
        # An empty dash list is not valid SVG: some renderers draw nothing.
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="2"{dashes}/>')
        for x, y in p:
            out.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="3" fill="{colour}"/>')
        ly = T + 10 + k * 20
        out.append(f'<line x1="{W - R + 15}" y1="{ly}" x2="{W - R + 40}" y2="{ly}" stroke="{colour}" stroke-width="2"{dashes}/>')
        out.append(f'<text x="{W - R + 46}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")
    print(f"plot: {path.relative_to(ROOT)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs, no 100,000-node graph, no ingest")
    ap.add_argument("--only", help="comma-separated: scaling (with noop), noop, floor, cold, parallel, ingest, keepalived")
    ap.add_argument("--keepalived-store", help="a store holding the built keepalived matrix, for its no-op build (default: the tests' target/tmp/bake-store)")
    args = ap.parse_args()
    if args.keepalived_store:
        os.environ["BAKE_BENCH_KEEPALIVED_STORE"] = args.keepalived_store
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "bake", "--example", "gen_recipe", "--example", "step_floor"],
        cwd=ROOT,
        check=True,
    )
    BENCH.mkdir(parents=True, exist_ok=True)
    runs = 5 if args.quick else 11
    sizes = [1000, 2000, 10000] if args.quick else [1000, 2000, 10000, 100000]
    only = set(args.only.split(",")) if args.only else {"scaling", "floor", "cold", "parallel", "ingest", "keepalived"}
    if args.quick:
        only.discard("ingest")
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}; load {os.getloadavg()[0]:.1f}", flush=True)
    results_path = BENCH / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["machine"] = {"cores": os.cpu_count(), "kernel": os.uname().release, "load at start": os.getloadavg()[0]}
    if "keepalived" in only:
        keepalived(runs, results)
    if "scaling" in only:
        scaling(sizes, [2000, 10000], runs, results)
    elif "noop" in only:
        scaling([], [2000, 10000], runs, results)
    if "parallel" in only:
        parallel(max(3, runs // 3), results)
    if "floor" in only:
        step_floor(3, results)
    if "cold" in only:
        cold_steps(2000, 1 if args.quick else 3, results)
    if "ingest" in only:
        ingest(max(3, runs // 3), results)
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    svg(results, ROOT / "benches" / "scaling.svg")


if __name__ == "__main__":
    main()
