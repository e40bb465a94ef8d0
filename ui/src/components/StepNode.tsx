// One step on the canvas, readable at a glance: a header coloured and iconned by kind,
// the title (name, else id), the model it will use ("auto" with the selector's first
// pick), badges for what guards it (retry, fallback, guardrails, budget, cache,
// local-only), labelled handles; while it runs a status ring, the elapsed time, the
// streamed tokens, the attempt and the fallback taken; on error the message.
import { Handle, Position, useStore, useUpdateNodeInternals, type NodeProps } from '@xyflow/react';
import { memo, useEffect, useMemo, useState } from 'react';
import { Cpu, Database, DatabaseZap, HardDrive, LifeBuoy, RotateCcw, ShieldCheck, Wallet, type LucideIcon } from 'lucide-react';
import { useEditor, type StepNode as StepNodeType } from '../store';
import { kindLook } from '../design/kinds';
import { caseName, casesOf, runPath } from '../graph';
import type { StepData } from '../workflow';

/** Below this zoom a node draws only its id and status colour (level of detail). */
const DETAIL_ZOOM = 0.45;

/** The model a step names, if any: a reference, the first of a list, or the first preferred. */
export function namedModel(model: unknown): string | null {
  if (typeof model === 'string') return model;
  if (Array.isArray(model)) return model.length ? String(model[0]) : null;
  if (model && typeof model === 'object') {
    const prefer = (model as { prefer?: unknown }).prefer;
    if (Array.isArray(prefer) && prefer.length) return String(prefer[0]);
  }
  return null;
}

interface Badge {
  key: string;
  icon: LucideIcon;
  text: string;
  title: string;
}

/** The badges of a step's settings, from its fields. */
export function badgesOf(fields: Record<string, unknown>): Badge[] {
  const out: Badge[] = [];
  const retry = fields.retry as { max_attempts?: number } | undefined;
  if (retry) out.push({ key: 'retry', icon: RotateCcw, text: `×${retry.max_attempts ?? 3}`, title: `Retry policy: ${retry.max_attempts ?? 3} attempts in all` });
  if (fields.fallback) out.push({ key: 'fallback', icon: LifeBuoy, text: 'fallback', title: 'Fallback ladder configured' });
  if (fields.guardrails) out.push({ key: 'guardrails', icon: ShieldCheck, text: 'guard', title: 'Guardrails configured' });
  const budget = fields.budget as { max_tokens?: number; max_cost_usd?: number } | undefined;
  if (budget) {
    const parts = [budget.max_tokens ? `${budget.max_tokens} tok` : '', budget.max_cost_usd ? `$${budget.max_cost_usd}` : ''].filter(Boolean);
    out.push({ key: 'budget', icon: Wallet, text: parts.join(' ') || 'budget', title: 'Budget limits' });
  }
  if (fields.cache === false) out.push({ key: 'cache', icon: DatabaseZap, text: 'no cache', title: 'Never reuses a stored output' });
  else if (fields.cache === true) out.push({ key: 'cache', icon: Database, text: 'cache', title: 'Reuses a stored output when nothing changed' });
  const model = fields.model as { local_only?: boolean } | undefined;
  if (fields.local_only === true || (model && typeof model === 'object' && !Array.isArray(model) && model.local_only)) {
    out.push({ key: 'local', icon: HardDrive, text: 'local only', title: 'Runs only on this machine (Ollama or the embedded model)' });
  }
  return out;
}

/**
 * A switch's outputs: one labelled handle per case (its name, `case<N>` by default) and
 * one for `default`; dragging from one to a step makes that case run it (`then:`).
 */
function SwitchHandles({ step }: { step: StepData }) {
  // Handles added or removed after the node was drawn are registered again.
  const updateInternals = useUpdateNodeInternals();
  const count = casesOf(step).length;
  useEffect(() => updateInternals(step.id), [count, step.id, updateInternals]);
  const outs = [...casesOf(step).map((c, i) => ({ handle: `case-${i}`, label: caseName(c, i), testId: `handle-case-${step.id}-${i}` })), { handle: 'default', label: 'default', testId: `handle-default-${step.id}` }];
  return (
    <>
      {outs.map((o, i) => {
        const left = `${((i + 1) * 100) / (outs.length + 1)}%`;
        return (
          <span key={o.handle}>
            <Handle
              type="source"
              position={Position.Bottom}
              id={o.handle}
              style={{ left }}
              data-testid={o.testId}
              title={`${step.id}: when ${o.label} is taken, run… (drag to a step)`}
            />
            <span className="handle-label case" style={{ left }} data-testid={`case-label-${step.id}-${o.handle}`}>
              {o.label}
            </span>
          </span>
        );
      })}
    </>
  );
}

/** What a step works on, in a line: its prompt or template, a map's items, a tool's name. */
function previewOf(step: StepData): string {
  const f = step.fields;
  if (step.kind === 'tool') return f.tool ? `tool ${String(f.tool)}` : '';
  if (step.kind === 'switch') return casesOf(step).map((c, i) => `${caseName(c, i)}: ${c.when}`).join(' · ');
  if (step.kind === 'vote' && Array.isArray(f.choices)) return `${String(f.prompt ?? '')} (${f.choices.join(' / ')})`;
  return String(f.prompt ?? f.template ?? f.items ?? '');
}

/** Seconds since `since`, ticking while shown. */
function Elapsed({ since, testId }: { since: number; testId: string }) {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 100);
    return () => clearInterval(t);
  }, []);
  return <span data-testid={testId}>{((now - since) / 1000).toFixed(1)} s</span>;
}

function StepNodeView({ id, data, selected, parentId }: NodeProps<StepNodeType>) {
  const detailed = useStore((s) => s.transform[2] >= DETAIL_ZOOM);
  // A body's step shows the picked item's run (a top-level step's path is its id).
  const run = useEditor((s) => s.run?.steps[parentId ? runPath(s.nodes, s.picked, id) : id]);
  const firstModel = useEditor((s) => s.firstModel);
  const diagnostics = useEditor((s) => s.diagnostics);
  const errors = useMemo(() => diagnostics.filter((d) => d.step === id), [diagnostics, id]);
  const step = data.step;
  const look = kindLook(step.kind);
  const status = run?.status;
  const classes = `step ${selected ? 'selected' : ''} ${status ? `status-${status}` : ''} ${errors.length ? 'has-error' : ''}`;
  const style = {
    ['--kind' as string]: `var(--${look.color}-9)`,
    ['--kind-soft' as string]: `var(--${look.color}-a3)`,
    ['--kind-text' as string]: `var(--${look.color}-11)`,
  };
  if (!detailed) {
    return (
      <div className={`${classes} compact`} style={style} data-testid={`node-${id}`}>
        <Handle type="target" position={Position.Top} />
        <span className="step-id">{id}</span>
        {step.kind === 'switch' ? <SwitchHandles step={step} /> : <Handle type="source" position={Position.Bottom} />}
      </div>
    );
  }
  const Icon = look.icon;
  const name = typeof step.fields.name === 'string' && step.fields.name ? step.fields.name : null;
  const preview = previewOf(step).slice(0, 80);
  const usesModel = step.kind === 'llm' || 'model' in step.fields;
  const model = run?.model ?? namedModel(step.fields.model);
  const badges = badgesOf(step.fields);
  const failed = status === 'failed' || (status === 'retrying' && run?.error);
  return (
    <div className={classes} style={style} data-testid={`node-${id}`}>
      <Handle type="target" position={Position.Top} data-testid={`handle-in-${id}`} title={`${id}: needs (drag an output here)`} />
      <div className="step-head">
        <Icon size={14} aria-hidden />
        <span className="step-kind">{look.label}</span>
        {status && (
          <span data-testid={`status-${id}`} className={`status-pill status-${status}`} title={run?.waitingFor ? `waiting for ${run.waitingFor}` : undefined}>
            {status}
          </span>
        )}
      </div>
      <div className="step-main">
        <div className="step-title" title={name ? `${name} (${id})` : id}>
          <span className="step-id">{name ?? id}</span>
          {name && <span className="step-subid">{id}</span>}
        </div>
        {usesModel && (
          <div className="step-model" data-testid={`model-${id}`} title="The model this step uses">
            <Cpu size={12} aria-hidden />
            {model ? <span>{model}</span> : <span>auto{firstModel ? ` · ${firstModel}` : ''}</span>}
          </div>
        )}
        <div className="step-body">{preview || <em>empty</em>}</div>
        {badges.length > 0 && (
          <div className="step-badges" data-testid={`badges-${id}`}>
            {badges.map((b) => (
              <span key={b.key} className="step-badge" title={b.title} data-testid={`badge-${b.key}-${id}`}>
                <b.icon size={11} aria-hidden /> {b.text}
              </span>
            ))}
          </div>
        )}
        {run && (
          <div className="step-run">
            {run.startedAt && (status === 'running' || status === 'retrying' || status === 'waiting') ? (
              <Elapsed since={run.startedAt} testId={`elapsed-${id}`} />
            ) : run.durationMs !== undefined ? (
              <span data-testid={`elapsed-${id}`}>{(run.durationMs / 1000).toFixed(1)} s</span>
            ) : null}
            {(run.usage || run.tokenCount) ? (
              <span data-testid={`tokcount-${id}`}>
                {run.usage ? `${run.usage.prompt_tokens + run.usage.completion_tokens} tok` : `${run.tokenCount} tok`}
              </span>
            ) : null}
            {run.attempt && run.attempt > 1 ? <span data-testid={`attempt-${id}`}>attempt {run.attempt}</span> : null}
            {run.progress && (
              <span className="progress" data-testid={`progress-${id}`}>
                {run.progress.done}/{run.progress.total} done
                {run.progress.failed > 0 ? `, ${run.progress.failed} failed` : ''}
              </span>
            )}
          </div>
        )}
        {run?.fallback && (
          <div className="step-fallback" data-testid={`fallback-${id}`} title="Fallback taken">
            <LifeBuoy size={11} aria-hidden /> {run.fallback}
          </div>
        )}
        {run?.tokens && (
          <div className="tokens" data-testid={`tokens-${id}`}>
            {run.tokens.slice(-80)}
          </div>
        )}
        {failed && run?.error && (
          <div className="step-error" data-testid={`run-error-${id}`}>
            {run.error}
          </div>
        )}
        {errors.length > 0 && (
          <div className="step-error" data-testid={`node-error-${id}`}>
            {errors[0].message}
          </div>
        )}
      </div>
      <span className="handle-label in" aria-hidden>needs</span>
      {step.kind === 'switch' ? (
        <SwitchHandles step={step} />
      ) : (
        <>
          <span className="handle-label out" aria-hidden>output</span>
          <Handle type="source" position={Position.Bottom} data-testid={`handle-out-${id}`} title={`${id}: output (drag to a step that needs it)`} />
        </>
      )}
    </div>
  );
}

export const StepNodeComponent = memo(StepNodeView);
