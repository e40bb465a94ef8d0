import { useEditor } from '../store';

/**
 * The run as a Gantt chart: one row per step, one bar per attempt, coloured by outcome,
 * so parallelism and where the time went are visible at a glance.
 */
export function Timeline() {
  const run = useEditor((s) => s.run);
  if (!run || run.attempts.length === 0) return null;
  const end = Math.max(1, ...run.attempts.map((a) => a.end ?? Date.now() - run.startedAt));
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
                  className={`bar bar-${a.outcome}`}
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
      <text x={label} y={steps.length * rowHeight + 15} fontSize={10}>0 ms</text>
      <text x={label + width - 40} y={steps.length * rowHeight + 15} fontSize={10}>{Math.round(end)} ms</text>
    </svg>
  );
}
