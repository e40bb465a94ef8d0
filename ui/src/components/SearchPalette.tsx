import { useMemo, useState } from 'react';
import { useReactFlow } from '@xyflow/react';
import { KINDS } from '../registry';
import { useEditor } from '../store';

/** Ctrl+K: add a step of a kind, or find a step by id and select it. */
export function SearchPalette({ onClose }: { onClose(): void }) {
  const [query, setQuery] = useState('');
  const nodes = useEditor((s) => s.nodes);
  const { setCenter, getViewport } = useReactFlow();
  const q = query.trim().toLowerCase();
  const results = useMemo(() => {
    const add = KINDS.filter((k) => k.kind.includes(q)).map((k) => ({
      key: `add-${k.kind}`,
      label: `Add ${k.kind} step`,
      run: () => {
        const vp = getViewport();
        useEditor.getState().addStep(k.kind, { x: -vp.x / vp.zoom + 200, y: -vp.y / vp.zoom + 200 });
      },
    }));
    const find = nodes
      .filter((n) => n.id.includes(q))
      .slice(0, 20)
      .map((n) => ({
        key: `find-${n.id}`,
        label: `Go to ${n.id}`,
        run: () => {
          useEditor.setState({
            nodes: useEditor.getState().nodes.map((m) => ({ ...m, selected: m.id === n.id })),
          });
          void setCenter(n.position.x + 100, n.position.y + 40, { zoom: 1.2 });
        },
      }));
    return [...add, ...find];
  }, [q, nodes, setCenter, getViewport]);
  return (
    <div className="dialog" data-testid="search-palette">
      <input
        autoFocus
        data-testid="search-input"
        placeholder="Add a step or find one…"
        value={query}
        onChange={(e) => setQuery(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === 'Escape') onClose();
          if (e.key === 'Enter' && results[0]) {
            results[0].run();
            onClose();
          }
        }}
      />
      {results.map((r) => (
        <button
          key={r.key}
          data-testid={`search-${r.key}`}
          onClick={() => {
            r.run();
            onClose();
          }}
        >
          {r.label}
        </button>
      ))}
    </div>
  );
}
