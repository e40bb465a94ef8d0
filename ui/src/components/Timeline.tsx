import { useEditor } from '../store';

/**
 * The critical path: from the step that ended last, back through the dependency of each
 * step that ended last, to a step with none (the chain that set the run's length).
 */
export function criticalPath(ends: Map<string, number>, edges: { source: string; target: string }[]): Set<string> {
  const path = new Set<string>();
  let at = [...ends.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  while (at && !path.has(at)) {
    path.add(at);
    const deps = edges.filter((e) => e.target === at && ends.has(e.source)).map((e) => e.source);
    at = deps.sort((a, b) => (ends.get(b) ?? 0) - (ends.get(a) ?? 0))[0];
  }
  return path;
}

/**
 * The run as a Gantt chart: one row per step, one bar per attempt, coloured by outcome,
 * so parallelism and where the time went are visible at a glance; the critical path is
 * outlined.
 */
export function Timeline() {
  const run = useEditor((s) => s.run);
  const edges = useEditor((s) => s.edges);
  if (!run || run.attempts.length === 0) return <p className="timeline-empty">No attempts yet.</p>;
  const end = Math.max(1, ...run.attempts.map((a) => a.end ?? Date.now() - run.startedAt));
  const ends = new Map<string, number>();
  for (const a of run.attempts) ends.set(a.step, Math.max(ends.get(a.step) ?? 0, a.end ?? end));
  const critical = criticalPath(ends, edges);
  const steps = [...new Set(run.attempts.map((a) => a.step))];
  const rowHeight = 18;
  const width = 600;
  const label = 120;
  return (
    <svg
      className="timeline"
      data-testid="timeline"
      width={label + width + 10}
      height={steps.length * rowHeight + 20}
      role="img"
      aria-label={`Timeline of ${steps.length} steps; the critical path is ${[...critical].reverse().join(' → ')}`}
    >
      {steps.map((step, row) => (
        <g key={step}>
          <text x={0} y={row * rowHeight + 13} fontSize={11}>
            {step}
          </text>
          {run.attempts
            .filter((a) => a.step === step)
            .map((a) => {
              const x = label + (a.start / end) * width;
              const w = Math.max(2, (((a.end ?? end) - a.start) / end) * width);
              return (
                <rect
                  key={a.attempt}
                  data-testid={`gantt-bar-${step}-${a.attempt}`}
                  data-outcome={a.outcome}
                  data-critical={critical.has(step) ? 'true' : undefined}
                  className={`bar bar-${a.outcome}${critical.has(step) ? ' critical' : ''}`}
                  x={x}
                  y={row * rowHeight + 3}
                  width={w}
                  height={rowHeight - 6}
                >
                  <title>{`${step} attempt ${a.attempt}${a.model ? ` on ${a.model}` : ''}: ${a.outcome}, ${Math.round((a.end ?? end) - a.start)} ms`}</title>
                </rect>
              );
            })}
        </g>
      ))}
      <text className="axis" x={label} y={steps.length * rowHeight + 15} fontSize={10}>0 ms</text>
      <text className="axis" x={label + width - 40} y={steps.length * rowHeight + 15} fontSize={10}>{Math.round(end)} ms</text>
    </svg>
  );
}
