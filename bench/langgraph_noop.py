#!/usr/bin/env python3
"""LangGraph per-step engine overhead on no-op workflows (the LangGraph half of bench/run.sh).

What it measures
----------------
The wall time of one ``CompiledStateGraph.invoke()`` over a graph whose nodes do
nothing, divided by the number of nodes ("steps"). All of that time is LangGraph's
own machinery: Pregel superstep planning, channel updates, task dispatch (a thread
pool for parallel nodes) and, in ``sqlite`` mode, the checkpoint written after every
superstep plus the per-task pending writes.

Shapes (N = number of nodes = steps):
  chain   N nodes in a line: START -> n0 -> n1 -> ... -> n{N-1} -> END.
          One node per superstep, so ``recursion_limit`` is raised to N + 10.
  fanout  one start node "s", N-2 parallel nodes p0..p{N-3} that all depend on it,
          and one join node "j" waiting for all of them
          (``add_edge([p0, ..., p{N-3}], "j")``, LangGraph's barrier join):
          3 supersteps, the middle one running N-2 tasks.

Every node is ``lambda state: {}`` plus an atomic counter bump (``next()`` on an
``itertools.count``), used only to check afterwards that all N nodes ran.
The state schema is a one-key TypedDict; nothing is ever written to it.

Modes:
  memory      no checkpointer (LangGraph's fastest path).
  sqlite      ``langgraph-checkpoint-sqlite``'s ``SqliteSaver`` on a fresh temporary
              file for every repetition (WAL journal, as ``setup()`` sets it;
              SQLite's default synchronous=FULL, i.e. an fsync per commit), tables
              created (``setup()``) before the clock starts.
              ``--durability`` picks LangGraph's durability mode, default ``sync``
              (each superstep's checkpoint is persisted before the next one starts:
              the same guarantee as an engine that records every step durably).
              LangGraph's own default is ``async``; pass ``--durability async`` for it.
  inmemsaver  (optional, not in the default list) ``InMemorySaver`` checkpointer.

Timing: graph construction (``StateGraph`` + ``add_node``/``add_edge``, ``build_ms``)
and ``compile()`` (``compile_ms``) are timed separately and are NOT part of
``total_ms``. Each configuration runs in a child process (so a runaway one can be
killed, and configurations do not share heap state); inside it the graph is built,
compiled and invoked ``--repeat`` times (fresh graph, fresh thread id and, in sqlite
mode, fresh database file each time; ``gc.collect()`` before each timed call) and the
minimum (best) of the repetitions is reported. Repetitions stop early once one more
(build + compile + invoke) would take the configuration past the guard (at least
one always runs; ``repeats`` and ``runs_ms`` say how many ran).

Guard: configurations are run in increasing size. Before running one, its time is
predicted from the smaller sizes already measured for the same shape and mode
(power law t ~ N^k, k fitted on the two largest measured sizes, or k = 1.5 when only
one is known). If the prediction exceeds ``--guard`` seconds (default 120) it is not
run: instead an intermediate "probe" size predicted to take about guard/2 is measured
(a real measurement, reported with ``"probe": true``), k is refitted, and the
configuration is reported with ``"extrapolated": true`` and the basis of the
extrapolation. A child that still overruns (guard * 1.25 + 30 s) is killed and
reported as skipped. ``--no-extrapolate`` turns skipped configurations into a plain
'skipped' line.

Output (``--json``): one JSON object per line, e.g.
  {"engine": "langgraph", "version": "1.0.x", "shape": "chain", "steps": 1000,
   "mode": "memory", "total_ms": ..., "us_per_step": ..., "compile_ms": ..., ...}
plus extra keys (build_ms, runs_ms, repeats, durability, python, extrapolated ...).
A configuration that is not measured gives {"engine": "langgraph", ..., "skipped": "reason"}
(no "us_per_step" key). Without ``--json`` a human-readable table is printed.
Progress notes go to stderr.

Usage:
  pip install langgraph langgraph-checkpoint-sqlite
  python3 bench/langgraph_noop.py [--sizes 1000,10000] [--shapes chain,fanout]
      [--modes memory,sqlite] [--repeat 3] [--json] [--guard 120]
      [--durability sync|async|exit] [--no-extrapolate] [--tmpdir DIR]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

DEFAULT_K_ONE_POINT = 1.5  # conservative growth exponent when only one smaller size is known
K_MIN, K_MAX = 1.0, 2.5


# --------------------------------------------------------------------------- worker side


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build, compile and invoke one configuration `repeat` times; return the result row."""
    from importlib.metadata import version as pkg_version
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    shape, n, mode = spec["shape"], spec["steps"], spec["mode"]
    repeat, guard, durability = spec["repeat"], spec["guard"], spec["durability"]

    class State(TypedDict, total=False):
        x: int

    counter = itertools.count()

    def noop(state: State) -> dict:
        next(counter)  # atomic in CPython: lets us check that every node ran
        return {}

    def build() -> StateGraph:
        b = StateGraph(State)
        if shape == "chain":
            names = [f"n{i}" for i in range(n)]
            for name in names:
                b.add_node(name, noop)
            b.add_edge(START, names[0])
            for a, c in zip(names, names[1:]):
                b.add_edge(a, c)
            b.add_edge(names[-1], END)
        elif shape == "fanout":
            mids = [f"p{i}" for i in range(n - 2)]
            b.add_node("s", noop)
            b.add_node("j", noop)
            b.add_edge(START, "s")
            for name in mids:
                b.add_node(name, noop)
                b.add_edge("s", name)
            b.add_edge(mids, "j")  # join: "j" waits for all of them
            b.add_edge("j", END)
        else:
            raise ValueError(f"unknown shape {shape!r}")
        return b

    extra: dict[str, Any] = {}
    if mode == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        extra["checkpointer"] = "SqliteSaver"
        extra["checkpointer_version"] = pkg_version("langgraph-checkpoint-sqlite")
        extra["durability"] = durability
    elif mode == "inmemsaver":
        from langgraph.checkpoint.memory import InMemorySaver

        extra["checkpointer"] = "InMemorySaver"
        extra["durability"] = durability
    elif mode == "memory":
        extra["checkpointer"] = None
    else:
        raise ValueError(f"unknown mode {mode!r}")

    runs, builds, compiles = [], [], []
    w0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="lg_noop_", dir=spec.get("tmpdir"))
    try:
        for r in range(repeat):
            conn = None
            checkpointer = None
            if mode == "sqlite":
                import sqlite3

                db = os.path.join(tmp.name, f"bench_{r}.db")
                # check_same_thread=False: SqliteSaver serialises access with its own lock,
                # and LangGraph may write checkpoints from a background thread.
                conn = sqlite3.connect(db, check_same_thread=False)
                checkpointer = SqliteSaver(conn)
                checkpointer.setup()  # create tables before the clock starts
            elif mode == "inmemsaver":
                checkpointer = InMemorySaver()

            t0 = time.perf_counter()
            builder = build()
            t1 = time.perf_counter()
            graph = builder.compile(checkpointer=checkpointer)
            t2 = time.perf_counter()

            config = {
                "recursion_limit": n + 10,  # chain: one superstep per node
                "configurable": {"thread_id": f"bench-{shape}-{n}-{r}"},
            }
            kwargs = {"durability": durability} if checkpointer is not None else {}
            before = next(counter)
            gc.collect()
            t3 = time.perf_counter()
            graph.invoke({}, config, **kwargs)
            t4 = time.perf_counter()
            ran = next(counter) - before - 1
            if ran != n:
                raise RuntimeError(f"expected {n} node executions, counted {ran}")

            builds.append(t1 - t0)
            compiles.append(t2 - t1)
            runs.append(t4 - t3)
            del graph, builder
            if conn is not None:
                conn.close()
            # stop repeating once another repetition (build + compile + invoke, as long
            # as the last one) would push this configuration past the guard
            now = time.perf_counter()
            if (now - w0) + (now - t0) > guard:
                break
    finally:
        tmp.cleanup()

    best = min(runs)
    row = {
        "engine": "langgraph",
        "version": pkg_version("langgraph"),
        "shape": shape,
        "steps": n,
        "mode": mode,
        "total_ms": round(best * 1e3, 3),
        "us_per_step": round(best * 1e6 / n, 2),
        "compile_ms": round(min(compiles) * 1e3, 3),
        "build_ms": round(min(builds) * 1e3, 3),
        "repeats": len(runs),
        "runs_ms": [round(x * 1e3, 3) for x in runs],
        "extrapolated": False,
        "python": platform.python_version(),
    }
    row.update(extra)
    if len(runs) < repeat:
        row["note"] = f"{len(runs)} of {repeat} repeats (guard {guard:g}s)"
    return row


# --------------------------------------------------------------------------- parent side


def _note(msg: str) -> None:
    print(f"[langgraph_noop] {msg}", file=sys.stderr, flush=True)


def _run_child(spec: dict[str, Any], guard: float) -> dict[str, Any]:
    """Run one configuration in a child process with a hard timeout."""
    hard = guard * 1.25 + 30
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, timeout=hard, text=True)
    except subprocess.TimeoutExpired:
        return {"skipped": f"killed after {hard:.0f} s (guard {guard:g} s): too slow"}
    wall = time.perf_counter() - t0
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"skipped": f"child failed (exit {proc.returncode}); see stderr"}
    row = json.loads(lines[-1])
    _note(
        f"{spec['shape']} {spec['steps']} {spec['mode']}: best {row.get('total_ms', '?')} ms"
        f" ({row.get('us_per_step', '?')} us/step), child wall {wall:.1f} s"
    )
    return row


def _fit(points: list[tuple[int, float]]) -> tuple[float, int, float, str]:
    """Return (k, n_ref, t_ref, basis) for t ~ t_ref * (N / n_ref) ** k."""
    pts = sorted(points)
    n_ref, t_ref = pts[-1]
    if len(pts) >= 2:
        (n1, t1), (n2, t2) = pts[-2], pts[-1]
        k = math.log(t2 / t1) / math.log(n2 / n1) if t1 > 0 and t2 > 0 and n2 != n1 else 1.0
        k = min(max(k, K_MIN), K_MAX)
        return k, n_ref, t_ref, f"power law fitted on {n1} and {n2} steps"
    return DEFAULT_K_ONE_POINT, n_ref, t_ref, f"assumed exponent {DEFAULT_K_ONE_POINT} from {n_ref} steps"


def _predict(points: list[tuple[int, float]], n: int) -> float | None:
    if not points:
        return None
    k, n_ref, t_ref, _ = _fit(points)
    return t_ref * (n / n_ref) ** k


def main() -> int:
    ap = argparse.ArgumentParser(
        description="LangGraph per-step overhead on no-op workflows (chain / fanout; memory / sqlite).",
    )
    ap.add_argument("--sizes", default="1000,10000", help="comma-separated step counts (default 1000,10000)")
    ap.add_argument("--shapes", default="chain,fanout", help="chain,fanout")
    ap.add_argument("--modes", default="memory,sqlite", help="memory,sqlite (also: inmemsaver)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per configuration; the best is reported")
    ap.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    ap.add_argument("--guard", type=float, default=120.0, help="seconds a configuration may take (default 120)")
    ap.add_argument(
        "--durability", default="sync", choices=["sync", "async", "exit"],
        help="LangGraph durability mode with a checkpointer (default sync: persist every superstep before the next)",
    )
    ap.add_argument("--no-extrapolate", action="store_true", help="skip over-guard configurations without extrapolating")
    ap.add_argument("--tmpdir", default=None, help="directory for the SQLite files (default: system temp dir)")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._worker is not None:
        print(json.dumps(_worker(json.loads(args._worker))), flush=True)
        return 0

    try:
        from importlib.metadata import version as pkg_version

        lg_version = pkg_version("langgraph")
    except Exception:
        print("langgraph is not installed: pip install langgraph langgraph-checkpoint-sqlite", file=sys.stderr)
        return 2

    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for s in shapes:
        if s not in ("chain", "fanout"):
            ap.error(f"unknown shape {s!r}")
    for m in modes:
        if m not in ("memory", "sqlite", "inmemsaver"):
            ap.error(f"unknown mode {m!r}")
    if "sqlite" in modes:
        try:
            import langgraph.checkpoint.sqlite  # noqa: F401
        except ImportError:
            print("sqlite mode needs: pip install langgraph-checkpoint-sqlite", file=sys.stderr)
            return 2

    guard = args.guard
    # One parent-owned temp dir for all children's SQLite files, so that a child killed
    # by the hard timeout does not leave its database behind.
    run_tmp = tempfile.TemporaryDirectory(prefix="lg_noop_run_", dir=args.tmpdir)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)

    def base(shape: str, n: int, mode: str) -> dict[str, Any]:
        return {"engine": "langgraph", "version": lg_version, "shape": shape, "steps": n, "mode": mode}

    for shape in shapes:
        for mode in modes:
            measured: list[tuple[int, float]] = []  # (steps, best seconds)

            def measure(n: int, probe: bool = False) -> dict[str, Any]:
                spec = {
                    "shape": shape, "steps": n, "mode": mode, "repeat": 1 if probe else args.repeat,
                    "guard": guard, "durability": args.durability, "tmpdir": run_tmp.name,
                }
                row = _run_child(spec, guard)
                if "us_per_step" in row:
                    measured.append((n, row["total_ms"] / 1e3))
                    if probe:
                        row["probe"] = True
                return row

            for n in sizes:
                min_n = 3 if shape == "fanout" else 1
                if n < min_n:
                    emit({**base(shape, n, mode), "skipped": f"{shape} needs at least {min_n} steps"})
                    continue
                pred = _predict(measured, n)
                if pred is not None and pred > guard:
                    reason = f"predicted {pred:.0f} s for one invoke > guard {guard:g} s"
                    _note(f"{shape} {n} {mode}: {reason}")
                    if args.no_extrapolate:
                        emit({**base(shape, n, mode), "skipped": reason})
                        continue
                    # Probe an intermediate size predicted to take ~guard/2, to fit the exponent.
                    k, n_ref, t_ref, _ = _fit(measured)
                    m = int(n_ref * ((guard / 2) / t_ref) ** (1 / k))
                    if n_ref < m < n and m >= 1.5 * n_ref:
                        _note(f"{shape} {mode}: probing {m} steps to fit the growth exponent")
                        prow = measure(m, probe=True)
                        if "us_per_step" in prow:
                            emit({**prow, "note": f"probe run (1 repeat) to extrapolate {n} steps"})
                    pred2 = _predict(measured, n)
                    k, n_ref, t_ref, basis = _fit(measured)
                    if pred2 is not None and pred2 <= guard:
                        # The refit says it fits after all: measure it for real.
                        _note(f"{shape} {n} {mode}: refit predicts {pred2:.0f} s, measuring")
                    else:
                        emit({
                            **base(shape, n, mode),
                            "total_ms": round(pred2 * 1e3, 3),
                            "us_per_step": round(pred2 * 1e6 / n, 2),
                            "compile_ms": None,
                            "extrapolated": True,
                            "extrapolation": f"{basis}: t = {t_ref * 1e3:.1f} ms * (N/{n_ref})^{k:.3f}",
                            "growth_exponent": round(k, 3),
                            "reason": f"not run: {reason}; figures extrapolated",
                            **({"durability": args.durability} if mode != "memory" else {}),
                        })
                        continue
                row = measure(n)
                if "us_per_step" in row:
                    emit(row)
                else:
                    emit({**base(shape, n, mode), **row})

    run_tmp.cleanup()
    _note(f"done in {time.perf_counter() - started:.1f} s")
    if not args.json:
        print(f"LangGraph {lg_version} (Python {platform.python_version()}), best of {args.repeat}; "
              f"durability={args.durability} for checkpointed modes")
        print(f"{'shape':<7} {'steps':>6} {'mode':<10} {'total_ms':>12} {'us/step':>10} {'compile_ms':>11}  notes")
        for r in rows:
            if "us_per_step" in r:
                notes = []
                if r.get("extrapolated"):
                    notes.append("EXTRAPOLATED (" + r.get("extrapolation", "") + ")")
                if r.get("probe"):
                    notes.append("probe")
                if r.get("note") and not r.get("probe"):
                    notes.append(r["note"])
                cm = f"{r['compile_ms']:.1f}" if r.get("compile_ms") is not None else "-"
                print(f"{r['shape']:<7} {r['steps']:>6} {r['mode']:<10} {r['total_ms']:>12.1f} "
                      f"{r['us_per_step']:>10.1f} {cm:>11}  {'; '.join(notes)}")
            else:
                print(f"{r['shape']:<7} {r['steps']:>6} {r['mode']:<10} skipped: {r['skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
