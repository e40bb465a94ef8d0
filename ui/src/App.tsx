import { useCallback, useEffect, useMemo, useRef, useState, type DragEvent, type ReactNode } from 'react';
import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
  useStore,
  type Connection,
} from '@xyflow/react';
import { Toolbar } from 'radix-ui';
import { Button, Flex, IconButton, Text, TextField, Theme, Tooltip } from '@radix-ui/themes';
import {
  AlarmClock,
  Cpu,
  FileCode,
  FolderOpen,
  GripVertical,
  History,
  Keyboard,
  Network,
  Play,
  Redo2,
  Save,
  SaveAll,
  Search,
  Trash2,
  Undo2,
  Workflow,
  type LucideIcon,
} from 'lucide-react';
import '@radix-ui/themes/styles.css';
import '@xyflow/react/dist/style.css';
import './styles.css';
import { KINDS } from './registry';
import { useEditor, type StepNode } from './store';
import { StepNodeComponent } from './components/StepNode';
import { GroupNodeComponent } from './components/GroupNode';
import { sizeGroups, withDescendants } from './graph';
import { Inspector } from './components/Inspector';
import { SearchPalette } from './components/SearchPalette';
import { RunPanel } from './components/RunPanel';
import { HistoryDialog } from './components/HistoryDialog';
import { ModelsDialog } from './components/ModelsDialog';
import { TriggersDialog } from './components/TriggersDialog';
import { Field } from './components/fields';
import { DocTabs } from './components/DocTabs';
import { Toasts } from './components/Toasts';
import { OpenDialog } from './components/OpenDialog';
import { EmptyState } from './components/EmptyState';
import { ShortcutsDialog } from './components/ShortcutsDialog';
import { activeTab, anyDirty, newTab } from './tabs';
import { useRuns } from './useRuns';
import { YamlView } from './components/YamlView';
import { kindLook } from './design/kinds';
import { Modal } from './design/Modal';
import { useColorScheme } from './design/useColorScheme';
import type { Backend, RunOptions } from './backend';

const nodeTypes = { step: StepNodeComponent, container: GroupNodeComponent };

function undo() {
  useEditor.temporal.getState().undo();
  useEditor.setState({ dirty: true });
}
function redo() {
  useEditor.temporal.getState().redo();
  useEditor.setState({ dirty: true });
}

/**
 * The step kinds from the schema (registry.ts): drag one onto the canvas, or focus it and
 * press Enter (double-click works too) to add it in the middle of the view.
 */
function Palette() {
  const addStep = useEditor((s) => s.addStep);
  const { screenToFlowPosition } = useReactFlow();
  const addHere = (kind: string) => {
    const canvas = document.querySelector('[data-testid="canvas"]')?.getBoundingClientRect();
    const at = canvas
      ? screenToFlowPosition({ x: canvas.left + canvas.width / 2 - 110, y: canvas.top + canvas.height / 3 })
      : { x: 40, y: 40 };
    const id = addStep(kind, at);
    useEditor.setState({ nodes: useEditor.getState().nodes.map((n) => ({ ...n, selected: n.id === id })) });
  };
  return (
    <nav className="palette" data-testid="palette" aria-label="Step kinds">
      <Text as="div" size="1" weight="bold" color="gray" className="palette-title">
        STEPS
      </Text>
      <ul className="palette-list">
        {KINDS.map((k) => {
          const look = kindLook(k.kind);
          const Icon = look.icon;
          return (
            <li key={k.kind}>
              <Tooltip content={k.description} side="right">
                <button
                  type="button"
                  className="palette-item"
                  data-testid={`palette-${k.kind}`}
                  style={{ ['--kind' as string]: `var(--${look.color}-9)`, ['--kind-soft' as string]: `var(--${look.color}-a3)` }}
                  draggable
                  aria-label={`Add ${look.label} step`}
                  onDragStart={(e) => {
                    e.dataTransfer.setData('application/nexus-kind', k.kind);
                    e.dataTransfer.effectAllowed = 'move';
                  }}
                  onClick={(e) => e.detail === 0 && addHere(k.kind)}
                  onDoubleClick={() => addHere(k.kind)}
                >
                  <span className="kind-chip" aria-hidden>
                    <Icon size={14} />
                  </span>
                  <span className="palette-label">{look.label}</span>
                  <GripVertical size={14} className="grip" aria-hidden />
                </button>
              </Tooltip>
            </li>
          );
        })}
      </ul>
      <div className="minimap-dock" data-testid="minimap-dock" aria-label="Overview of the canvas">
        <MiniMap pannable zoomable ariaLabel="Overview of the canvas" bgColor="var(--gray-2)" maskColor="var(--gray-a4)" maskStrokeColor="var(--accent-9)" maskStrokeWidth={2} nodeColor={(n) => `var(--${kindLook((n as StepNode).data.step.kind).color}-9)`} />
      </div>
    </nav>
  );
}

/** Below this zoom the dots would be a dense grey wash (a tile every 2 px) that costs every frame to draw. */
const DOTS_ZOOM = 0.3;

/** The canvas's dot grid, drawn where it helps: not when zoomed far out. */
function CanvasDots() {
  const shown = useStore((s) => s.transform[2] >= DOTS_ZOOM);
  return shown ? <Background gap={20} size={1.2} /> : null;
}

function Canvas({ backend }: { backend: Backend }) {
  const nodes = useEditor((s) => s.nodes);
  const edges = useEditor((s) => s.edges);
  const onNodesChange = useEditor((s) => s.onNodesChange);
  const onEdgesChange = useEditor((s) => s.onEdgesChange);
  const connect = useEditor((s) => s.connect);
  const addStep = useEditor((s) => s.addStep);
  const { screenToFlowPosition, getIntersectingNodes, getInternalNode } = useReactFlow();
  const temporal = useEditor.temporal;
  const scheme = useColorScheme();
  const shown = useMemo(() => sizeGroups(nodes), [nodes]);

  /** The innermost map or loop at flow point (x, y), other than `except` and its body, with its absolute position. */
  const innermostGroup = useCallback(
    (x: number, y: number, except?: string) => {
      const all = useEditor.getState().nodes;
      const depth = (id?: string): number => (id ? 1 + depth(all.find((n) => n.id === id)?.parentId) : 0);
      const mine = except ? withDescendants(all, new Set([except])) : new Set<string>();
      const group = getIntersectingNodes({ x, y, width: 1, height: 1 })
        .filter((n) => n.type === 'container' && !mine.has(n.id))
        .sort((a, b) => depth(b.id) - depth(a.id))[0];
      const at = group ? getInternalNode(group.id)?.internals.positionAbsolute : undefined;
      return group && at ? { id: group.id, at } : null;
    },
    [getIntersectingNodes, getInternalNode],
  );

  // A step dropped on a map or loop joins its body (the innermost group under the pointer).
  const onDrop = useCallback(
    (e: DragEvent) => {
      e.preventDefault();
      const kind = e.dataTransfer.getData('application/nexus-kind');
      if (!kind) return;
      const at = screenToFlowPosition({ x: e.clientX, y: e.clientY });
      const group = innermostGroup(at.x, at.y);
      if (group) addStep(kind, { x: at.x - group.at.x, y: at.y - group.at.y }, group.id);
      else addStep(kind, at);
    },
    [addStep, screenToFlowPosition, innermostGroup],
  );

  return (
    <div className="canvas" data-testid="canvas" onDrop={onDrop} onDragOver={(e) => e.preventDefault()}>
      <ReactFlow
        nodes={shown}
        edges={edges}
        nodeTypes={nodeTypes}
        onNodesChange={onNodesChange}
        onEdgesChange={onEdgesChange}
        onConnect={(c: Connection) => c.source && c.target && connect(c.source, c.target, c.sourceHandle)}
        onNodeDragStart={() => temporal.getState().pause()}
        onNodeDragStop={(_, node) => {
          temporal.getState().resume();
          // Record the final positions as one history entry.
          useEditor.setState({ nodes: [...useEditor.getState().nodes], dirty: true });
          // A top-level step dropped on a map or loop joins its body.
          if (!node.parentId) {
            const group = innermostGroup(node.position.x + (node.measured?.width ?? 0) / 2, node.position.y + 20, node.id);
            if (group) useEditor.getState().moveIntoBody(node.id, group.id, { x: node.position.x - group.at.x, y: node.position.y - group.at.y });
          }
        }}
        deleteKeyCode={['Delete', 'Backspace']}
        multiSelectionKeyCode={['Shift', 'Meta', 'Control']}
        fitView
        colorMode={scheme}
        defaultEdgeOptions={{ type: 'smoothstep' }}
        minZoom={0.05}
        onlyRenderVisibleElements
      >
        <CanvasDots />
        <Controls showInteractive={false} />
      </ReactFlow>
      {nodes.length === 0 && <EmptyState backend={backend} />}
    </div>
  );
}

function RunDialog({
  backend,
  options,
  onStart,
  onClose,
}: {
  backend: Backend;
  options: RunOptions;
  onStart(inputs: Record<string, string>): void;
  onClose(): void;
}) {
  const inputs = useEditor((s) => s.inputs);
  const [values, setValues] = useState<Record<string, string>>(() =>
    Object.fromEntries(
      Object.entries(inputs).map(([k, v]) => [k, v.default === undefined ? '' : String(v.default)]),
    ),
  );
  const names = Object.keys(inputs);
  return (
    <Modal
      testId="run-dialog"
      title={options.from ? `Run from ${options.from}` : options.until ? `Run up to ${options.until}` : 'Run'}
      description={
        options.from
          ? `Steps before ${options.from} reuse the outputs of this workflow's latest run.`
          : names.length
            ? 'The workflow\'s inputs for this run.'
            : 'This workflow takes no inputs.'
      }
      onClose={onClose}
      footer={
        <>
          <Button variant="soft" color="gray" onClick={onClose}>
            Close
          </Button>
          <Button data-testid="run-start" onClick={() => onStart(values)}>
            <Play size={14} /> Start
          </Button>
        </>
      }
    >
      {Object.entries(inputs).map(([name, spec]) => (
        <Field key={name} label={name} help={spec.description} htmlFor={`input-${name}`}>
          <Flex gap="2">
            <TextField.Root
              className="grow"
              id={`input-${name}`}
              data-testid={`input-${name}`}
              value={values[name] ?? ''}
              onChange={(e) => setValues({ ...values, [name]: e.target.value })}
            />
            {spec.type === 'file' && (
              <Tooltip content="A file outside the workflows folder can be used only when chosen here">
                <Button
                  variant="soft"
                  data-testid={`browse-${name}`}
                  onClick={() =>
                    void backend.chooseInputFile().then((path) => {
                      if (path) setValues((v) => ({ ...v, [name]: path }));
                    })
                  }
                >
                  Browse…
                </Button>
              </Tooltip>
            )}
          </Flex>
        </Field>
      ))}
    </Modal>
  );
}

function Editor({ backend }: { backend: Backend }) {
  const path = useEditor((s) => s.path);
  const dirty = useEditor((s) => s.dirty);
  const workflowId = useEditor((s) => s.workflowId);
  const [dialog, setDialog] = useState<'open' | 'run' | 'search' | 'history' | 'models' | 'triggers' | 'shortcuts' | null>(null);
  const [runOptions, setRunOptions] = useState<RunOptions>({});
  const [yamlOpen, setYamlOpen] = useState(false);
  const nodes = useEditor((s) => s.nodes);
  const edges = useEditor((s) => s.edges);

  // Live validation from the backend as the user edits.
  useEffect(() => {
    const t = setTimeout(() => {
      // A tab shown meanwhile is not given another tab's diagnostics.
      const tab = activeTab();
      void backend.validate(useEditor.getState().serialize()).then((d) => tab === activeTab() && useEditor.getState().setDiagnostics(d));
    }, 200);
    return () => clearTimeout(t);
  }, [backend, nodes, edges]);

  const save = useCallback(
    async (as: boolean) => {
      let target = useEditor.getState().path;
      if (as || !target) {
        target = window.prompt('Save as', target ?? `${useEditor.getState().workflowId}.yaml`);
        if (!target) return;
      }
      try {
        const text = useEditor.getState().serialize();
        await backend.writeWorkflow(target, text);
        useEditor.getState().markSaved(target, text);
      } catch (e) {
        useEditor.getState().setMessage({ kind: 'error', text: `Not saved: ${String(e)}` });
      }
    },
    [backend],
  );

  const runs = useRuns(backend);
  const startRun = (inputs: Record<string, string>) => {
    setDialog(null);
    void runs.start(inputs, runOptions);
  };
  const resumeRun = (runId: string) => {
    setDialog(null);
    void runs.resume(runId);
  };
  const askRun = useCallback((options: RunOptions) => {
    setRunOptions(options);
    setDialog('run');
  }, []);

  // Keyboard shortcuts users expect.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement;
      const mod = e.ctrlKey || e.metaKey;
      if (target.closest('input, textarea, select') && !(mod && ['k', 's'].includes(e.key.toLowerCase()))) return;
      if (mod && e.key.toLowerCase() === 'z' && !e.shiftKey) {
        e.preventDefault();
        undo();
      } else if (mod && (e.key.toLowerCase() === 'y' || (e.key.toLowerCase() === 'z' && e.shiftKey))) {
        e.preventDefault();
        redo();
      } else if (mod && e.key.toLowerCase() === 'c') {
        useEditor.getState().copy();
      } else if (mod && e.key.toLowerCase() === 'v') {
        useEditor.getState().paste();
      } else if (mod && e.key.toLowerCase() === 'k') {
        e.preventDefault();
        setDialog('search');
      } else if (mod && e.key.toLowerCase() === 's') {
        e.preventDefault();
        void save(e.shiftKey);
      } else if (e.altKey && !mod && e.code === 'KeyN') {
        e.preventDefault();
        void newTab();
      } else if (e.key === '?' && !mod) {
        setDialog('shortcuts');
      }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [save]);

  // Unsaved changes are never lost without a prompt.
  useEffect(() => {
    const onBeforeUnload = (e: BeforeUnloadEvent) => {
      if (anyDirty()) e.preventDefault();
    };
    window.addEventListener('beforeunload', onBeforeUnload);
    return () => window.removeEventListener('beforeunload', onBeforeUnload);
  }, []);

  const name = path ?? workflowId;
  return (
    <div className="app">
      <Toolbar.Root className="toolbar" aria-label="Editor">
        <Flex align="center" gap="2" className="toolbar-title">
          <span className="logo" aria-hidden>
            <Workflow size={16} />
          </span>
          <Text size="2" weight="bold" data-testid="title" className="ellipsis">
            {name}
            {dirty && (
              <span className="unsaved" data-testid="unsaved" title="Unsaved changes" aria-label="unsaved changes">
                {' •'}
              </span>
            )}
          </Text>
        </Flex>
        <ToolGroup>
          <Tool testId="open" label="Open / New" tip="Open a workflow or start from a template" icon={FolderOpen} onClick={() => setDialog('open')} text />
          <Tool testId="save" label="Save" tip="Save (Ctrl+S)" icon={Save} onClick={() => void save(false)} />
          <Tool testId="save-as" label="Save as" tip="Save as… (Ctrl+Shift+S)" icon={SaveAll} onClick={() => void save(true)} />
        </ToolGroup>
        <Toolbar.Separator className="toolbar-sep" />
        <ToolGroup>
          <Tool testId="undo" label="Undo" tip="Undo (Ctrl+Z)" icon={Undo2} onClick={undo} />
          <Tool testId="redo" label="Redo" tip="Redo (Ctrl+Shift+Z)" icon={Redo2} onClick={redo} />
          <Tool testId="delete" label="Delete" tip="Delete the selection (Delete)" icon={Trash2} onClick={() => useEditor.getState().deleteSelected()} />
          <Tool testId="layout" label="Auto-layout" tip="Arrange the steps by their dependencies" icon={Network} onClick={() => void useEditor.getState().layout()} />
          <Tool testId="search" label="Search" tip="Add or find a step (Ctrl+K)" icon={Search} onClick={() => setDialog('search')} />
        </ToolGroup>
        <div className="grow" />
        <ToolGroup>
          <Tool testId="history" label="History" tip="Past runs" icon={History} onClick={() => setDialog('history')} />
          <Tool testId="models" label="Models" tip="Models, Ollama and API keys" icon={Cpu} onClick={() => setDialog('models')} />
          <Tool testId="triggers" label="Triggers" tip="Schedules, watched files and webhooks of this folder" icon={AlarmClock} onClick={() => setDialog('triggers')} />
          <Tool testId="shortcuts" label="Keyboard shortcuts" tip="Keyboard shortcuts (?)" icon={Keyboard} onClick={() => setDialog('shortcuts')} />
          <Tooltip content={yamlOpen ? 'Hide the YAML view' : 'Show the workflow as YAML beside the canvas (kept in sync)'}>
            <Toolbar.Button asChild>
              <Button
                variant={yamlOpen ? 'solid' : 'soft'}
                color="gray"
                data-testid="yaml-toggle"
                aria-pressed={yamlOpen}
                onClick={() => setYamlOpen(!yamlOpen)}
              >
                <FileCode size={15} /> YAML
              </Button>
            </Toolbar.Button>
          </Tooltip>
        </ToolGroup>
        <Toolbar.Button asChild>
          <Button data-testid="run" onClick={() => askRun({})}>
            <Play size={14} /> Run
          </Button>
        </Toolbar.Button>
      </Toolbar.Root>
      <Toasts />
      <DocTabs onClosed={runs.closed}>
        <main className="main">
          <Palette />
          <Canvas backend={backend} />
          {yamlOpen && <YamlView />}
          <Inspector backend={backend} onRun={askRun} />
        </main>
        <RunPanel backend={backend} handle={runs.handle} />
      </DocTabs>
      {dialog === 'open' && <OpenDialog backend={backend} onClose={() => setDialog(null)} />}
      {dialog === 'search' && <SearchPalette onClose={() => setDialog(null)} />}
      {dialog === 'run' && <RunDialog backend={backend} options={runOptions} onStart={startRun} onClose={() => setDialog(null)} />}
      {dialog === 'history' && <HistoryDialog backend={backend} onClose={() => setDialog(null)} onResume={resumeRun} />}
      {dialog === 'models' && <ModelsDialog backend={backend} onClose={() => setDialog(null)} />}
      {dialog === 'triggers' && <TriggersDialog backend={backend} onClose={() => setDialog(null)} />}
      {dialog === 'shortcuts' && <ShortcutsDialog onClose={() => setDialog(null)} />}
    </div>
  );
}

function ToolGroup({ children }: { children: ReactNode }) {
  return <Flex gap="1" align="center">{children}</Flex>;
}

/** One toolbar button: an icon (and its label when `text`), a tooltip, an accessible name. */
function Tool({ testId, label, tip, icon: Icon, onClick, text }: { testId: string; label: string; tip: string; icon: LucideIcon; onClick(): void; text?: boolean }) {
  return (
    <Tooltip content={tip}>
      <Toolbar.Button asChild>
        {text ? (
          <Button variant="soft" color="gray" data-testid={testId} aria-label={label} onClick={onClick}>
            <Icon size={15} /> {label}
          </Button>
        ) : (
          <IconButton variant="ghost" color="gray" data-testid={testId} aria-label={label} onClick={onClick}>
            <Icon size={16} />
          </IconButton>
        )}
      </Toolbar.Button>
    </Tooltip>
  );
}

export function App({ backend }: { backend: Backend }) {
  const started = useRef(false);
  const scheme = useColorScheme();
  useEffect(() => {
    if (started.current) return;
    started.current = true;
    void backend.templates().then((t) => {
      if (t[0]) void useEditor.getState().load(null, t[0].text);
    });
    void backend.models().then(
      (m) => useEditor.setState({ firstModel: m[0]?.reference ?? null }),
      () => {},
    );
  }, [backend]);
  return (
    <Theme appearance={scheme} accentColor="indigo" grayColor="slate" radius="medium" scaling="100%" panelBackground="solid">
      <ReactFlowProvider>
        <Editor backend={backend} />
      </ReactFlowProvider>
    </Theme>
  );
}
