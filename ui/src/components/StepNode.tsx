import { Handle, Position, useStore, type NodeProps } from '@xyflow/react';
import { memo, useMemo } from 'react';
import { useEditor, type StepNode as StepNodeType } from '../store';

/** One step on the canvas: id, kind, live status and streamed tokens, inline errors. */
/** Below this zoom a node draws only its id and status colour (level of detail). */
const DETAIL_ZOOM = 0.45;

function StepNodeView({ id, data, selected }: NodeProps<StepNodeType>) {
  const detailed = useStore((s) => s.transform[2] >= DETAIL_ZOOM);
  const run = useEditor((s) => s.run?.steps[id]);
  const diagnostics = useEditor((s) => s.diagnostics);
  const errors = useMemo(() => diagnostics.filter((d) => d.step === id), [diagnostics, id]);
  const step = data.step;
  if (!detailed) {
    return (
      <div
        className={`step compact ${selected ? 'selected' : ''} ${run ? `status-${run.status}` : ''} ${errors.length ? 'has-error' : ''}`}
        data-testid={`node-${id}`}
      >
        <Handle type="target" position={Position.Top} />
        <span className="step-id">{id}</span>
        <Handle type="source" position={Position.Bottom} />
      </div>
    );
  }
  const preview = String(step.fields.prompt ?? step.fields.template ?? '').slice(0, 60);
  return (
    <div
      className={`step ${selected ? 'selected' : ''} ${run ? `status-${run.status}` : ''} ${errors.length ? 'has-error' : ''}`}
      data-testid={`node-${id}`}
    >
      <Handle type="target" position={Position.Top} data-testid={`handle-in-${id}`} />
      <div className="step-head">
        <span className="step-id">{id}</span>
        <span className="step-kind">{step.kind}</span>
      </div>
      <div className="step-body">{preview || <em>empty</em>}</div>
      {run && (
        <div className="step-run">
          <span data-testid={`status-${id}`} className="badge">
            {run.status}
          </span>
          {run.progress && (
            <span className="progress" data-testid={`progress-${id}`}>
              {run.progress.done}/{run.progress.total} done
              {run.progress.failed > 0 ? `, ${run.progress.failed} failed` : ''}
            </span>
          )}
          {run.tokens && (
            <span className="tokens" data-testid={`tokens-${id}`}>
              {run.tokens.slice(-80)}
            </span>
          )}
        </div>
      )}
      {errors.length > 0 && (
        <div className="step-error" data-testid={`node-error-${id}`}>
          {errors[0].message}
        </div>
      )}
      <Handle type="source" position={Position.Bottom} data-testid={`handle-out-${id}`} />
    </div>
  );
}

export const StepNodeComponent = memo(StepNodeView);
