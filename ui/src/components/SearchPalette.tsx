import { useMemo, useState } from 'react';
import { useReactFlow } from '@xyflow/react';
import { Button, Flex, TextField } from '@radix-ui/themes';
import { Search } from 'lucide-react';
import { Modal } from '../design/Modal';
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
    <Modal testId="search-palette" title="Add or find a step" onClose={onClose}>
      <TextField.Root
        autoFocus
        data-testid="search-input"
        aria-label="Add a step or find one"
        placeholder="Add a step or find one…"
        value={query}
        onChange={(e) => setQuery(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === 'Enter' && results[0]) {
            results[0].run();
            onClose();
          }
        }}
      >
        <TextField.Slot>
          <Search size={14} />
        </TextField.Slot>
      </TextField.Root>
      <Flex direction="column" gap="1" className="search-results">
        {results.map((r) => (
          <Button
            key={r.key}
            variant="ghost"
            color="gray"
            className="search-result"
            data-testid={`search-${r.key}`}
            onClick={() => {
              r.run();
              onClose();
            }}
          >
            {r.label}
          </Button>
        ))}
      </Flex>
    </Modal>
  );
}
