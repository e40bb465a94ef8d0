// A `map` or `loop` drawn as a group around its body (xyflow sub-flow: the body's steps
// are nodes with this node as `parentId`, kept inside it). The header says what it runs
// over (`items`, or the iteration cap and `until`), its status and progress; once a run
// has records for its items (or iterations), a picker chooses the one whose steps the
// body's nodes show. Steps dropped from the palette onto the group join its body, or
// are added to it from the group's "Add step" menu (keyboard too).
import { Handle, Position, type NodeProps } from '@xyflow/react';
import { memo, useMemo } from 'react';
import { DropdownMenu, IconButton, Select, Text } from '@radix-ui/themes';
import { Plus } from 'lucide-react';
import { KINDS } from '../registry';
import { useEditor, type StepNode } from '../store';
import { GROUP_HEADER, GROUP_PAD, itemsOf, runPath } from '../graph';
import { kindLook } from '../design/kinds';

/** The item (map) or iteration (loop) picker of the body at run path `path`. */
export function ItemPicker({ path, kind, testId }: { path: string; kind: string; testId: string }) {
  const keys = useEditor((s) => Object.keys(s.run?.steps ?? {}).join('\n'));
  const picked = useEditor((s) => s.picked[path] ?? 0);
  const pickItem = useEditor((s) => s.pickItem);
  const items = itemsOf(keys ? keys.split('\n') : [], path);
  if (!items.length) return null;
  const noun = kind === 'loop' ? 'iteration' : 'item';
  return (
    <Select.Root value={String(picked)} onValueChange={(v) => pickItem(path, Number(v))} size="1">
      <Select.Trigger className="nodrag item-picker" data-testid={testId} aria-label={`${path}: ${noun} shown`} variant="soft">
        {noun} {picked}
      </Select.Trigger>
      <Select.Content position="popper">
        {items.map((i) => (
          <Select.Item key={i} value={String(i)} data-testid={`${testId}-option-${i}`}>
            {noun} {i}
          </Select.Item>
        ))}
      </Select.Content>
    </Select.Root>
  );
}

/** Adds a step of the chosen kind to the body, below the body's lowest step. */
function AddToBody({ id }: { id: string }) {
  const addStep = useEditor((s) => s.addStep);
  const add = (kind: string) => {
    const children = useEditor.getState().nodes.filter((n) => n.parentId === id);
    const y = children.reduce((m, n) => Math.max(m, n.position.y + (n.measured?.height ?? 100) + 30), GROUP_HEADER);
    const added = addStep(kind, { x: GROUP_PAD, y }, id);
    useEditor.setState({ nodes: useEditor.getState().nodes.map((n) => ({ ...n, selected: n.id === added })) });
  };
  return (
    <DropdownMenu.Root>
      <DropdownMenu.Trigger>
        <IconButton size="1" variant="soft" className="nodrag" aria-label={`Add a step to the body of ${id}`} data-testid={`body-add-${id}`}>
          <Plus size={12} />
        </IconButton>
      </DropdownMenu.Trigger>
      {/* React events bubble out of the menu's portal to the node: keep them from selecting the group. */}
      <DropdownMenu.Content size="1" className="nodrag" onClick={(e) => e.stopPropagation()} onPointerDown={(e) => e.stopPropagation()}>
        <DropdownMenu.Label>Add to the body of {id}</DropdownMenu.Label>
        {KINDS.map((k) => (
          <DropdownMenu.Item key={k.kind} data-testid={`body-add-${id}-${k.kind}`} onSelect={() => add(k.kind)}>
            {kindLook(k.kind).label}
          </DropdownMenu.Item>
        ))}
      </DropdownMenu.Content>
    </DropdownMenu.Root>
  );
}

function GroupNodeView({ id, data, selected, parentId }: NodeProps<StepNode>) {
  const path = useEditor((s) => (parentId ? runPath(s.nodes, s.picked, id) : id));
  const run = useEditor((s) => s.run?.steps[path]);
  const diagnostics = useEditor((s) => s.diagnostics);
  const errors = useMemo(() => diagnostics.filter((d) => d.step === id), [diagnostics, id]);
  const step = data.step;
  const look = kindLook(step.kind);
  const Icon = look.icon;
  const status = run?.status;
  const name = typeof step.fields.name === 'string' && step.fields.name ? step.fields.name : null;
  const over =
    step.kind === 'map'
      ? `for each ${String(step.fields.as ?? 'item')} in ${String(step.fields.items ?? '') || '…'}`
      : `at most ${String(step.fields.max_iterations ?? '…')} times${step.fields.until ? ` until ${String(step.fields.until)}` : ''}`;
  const style = {
    ['--kind' as string]: `var(--${look.color}-9)`,
    ['--kind-soft' as string]: `var(--${look.color}-a3)`,
    ['--kind-text' as string]: `var(--${look.color}-11)`,
  };
  return (
    <div className={`group ${selected ? 'selected' : ''} ${status ? `status-${status}` : ''} ${errors.length ? 'has-error' : ''}`} style={style} data-testid={`node-${id}`}>
      <Handle type="target" position={Position.Top} data-testid={`handle-in-${id}`} title={`${id}: needs (drag an output here)`} />
      <div className="step-head">
        <Icon size={14} aria-hidden />
        <span className="step-kind">{look.label}</span>
        {status && (
          <span data-testid={`status-${id}`} className={`status-pill status-${status}`}>
            {status}
          </span>
        )}
      </div>
      <div className="group-main">
        <div className="step-title" title={name ? `${name} (${id})` : id}>
          <span className="step-id">{name ?? id}</span>
          {name && <span className="step-subid">{id}</span>}
          <span className="grow" />
          {run?.progress && (
            <span className="progress" data-testid={`progress-${id}`}>
              {run.progress.done}/{run.progress.total} done
              {run.progress.failed > 0 ? `, ${run.progress.failed} failed` : ''}
            </span>
          )}
          <ItemPicker path={path} kind={step.kind} testId={`group-item-${id}`} />
          <AddToBody id={id} />
        </div>
        <Text as="div" size="1" color="gray" className="step-body" data-testid={`group-over-${id}`}>
          {over}
        </Text>
        {errors.length > 0 && (
          <div className="step-error" data-testid={`node-error-${id}`}>
            {errors[0].message}
          </div>
        )}
      </div>
      <div className="group-body" data-testid={`body-${id}`} title={`${id}: body (drop a step here)`} />
      <span className="handle-label out" aria-hidden>output</span>
      <Handle type="source" position={Position.Bottom} data-testid={`handle-out-${id}`} title={`${id}: output (drag to a step that needs it)`} />
    </div>
  );
}

export const GroupNodeComponent = memo(GroupNodeView);
