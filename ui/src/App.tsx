import { useCallback, useEffect, useMemo, useRef, useState, type DragEvent } from 'react';
import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
  type Connection,
} from '@xyflow/react';
import '@xyflow/react/dist/style.css';
import './styles.css';
import { KINDS } from './registry';
import { useEditor } from './store';
import { StepNodeComponent } from './components/StepNode';
import { Inspector } from './components/Inspector';
import { SearchPalette } from './components/SearchPalette';
import { RunPanel } from './components/RunPanel';
import { HistoryDialog } from './components/HistoryDialog';
import { ModelsDialog } from './components/ModelsDialog';
import type { Backend, RunHandle, RunOptions } from './backend';

const nodeTypes = { step: StepNodeComponent };

function undo() {
  useEditor.temporal.getState().undo();
  useEditor.setState({ dirty: true });
}
function redo() {
  useEditor.temporal.getState().redo();
  useEditor.setState({ dirty: true });
}

function Palette() {
  const addStep = useEditor((s) => s.addStep);
  return (
    <nav className="palette" data-testid="palette">
      <div className="title">Steps</div>
      {KINDS.map((k) => (
        <div
          key={k.kind}
          className="palette-item"
          data-testid={`palette-${k.kind}`}
          draggable
          title={k.description}
          onDragStart={(e) => {
            e.dataTransfer.setData('application/nexus-kind', k.kind);
            e.dataTransfer.effectAllowed = 'move';
          }}
          onDoubleClick={() => addStep(k.kind, { x: 40, y: 40 })}
        >
          {k.kind}
        </div>
      ))}
    </nav>
  );
}

function Canvas() {
  const nodes = useEditor((s) => s.nodes);
  const edges = useEditor((s) => s.edges);
  const onNodesChange = useEditor((s) => s.onNodesChange);
  const onEdgesChange = useEditor((s) => s.onEdgesChange);
  const connect = useEditor((s) => s.connect);
  const addStep = useEditor((s) => s.addStep);
  const { screenToFlowPosition } = useReactFlow();
  const temporal = useEditor.temporal;

  const onDrop = useCallback(
    (e: DragEvent) => {
      e.preventDefault();
      const kind = e.dataTransfer.getData('application/nexus-kind');
      if (!kind) return;
      addStep(kind, screenToFlowPosition({ x: e.clientX, y: e.clientY }));
    },
    [addStep, screenToFlowPosition],
  );

  return (
    <div className="canvas" data-testid="canvas" onDrop={onDrop} onDragOver={(e) => e.preventDefault()}>
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        onNodesChange={onNodesChange}
        onEdgesChange={onEdgesChange}
        onConnect={(c: Connection) => c.source && c.target && connect(c.source, c.target)}
        onNodeDragStart={() => temporal.getState().pause()}
        onNodeDragStop={() => {
          temporal.getState().resume();
          // Record the final positions as one history entry.
          useEditor.setState({ nodes: [...useEditor.getState().nodes], dirty: true });
        }}
        deleteKeyCode={['Delete', 'Backspace']}
        multiSelectionKeyCode={['Shift', 'Meta', 'Control']}
        fitView
        minZoom={0.05}
        onlyRenderVisibleElements
      >
        <Background />
        <MiniMap pannable zoomable />
        <Controls />
      </ReactFlow>
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
  return (
    <div className="dialog" data-testid="run-dialog">
      <h3>
        {options.from ? `Run from ${options.from}` : options.until ? `Run up to ${options.until}` : 'Run'}: inputs
      </h3>
      {options.from && <p>Steps before {options.from} reuse the outputs of this workflow's latest run.</p>}
      {Object.entries(inputs).map(([name, spec]) => (
        <label key={name} title={spec.description}>
          {name}
          <input
            data-testid={`input-${name}`}
            value={values[name] ?? ''}
            onChange={(e) => setValues({ ...values, [name]: e.target.value })}
          />
          {spec.type === 'file' && (
            <button
              data-testid={`browse-${name}`}
              title="A file outside the workflows folder can be used only when chosen here"
              onClick={() =>
                void backend.chooseInputFile().then((path) => {
                  if (path) setValues((v) => ({ ...v, [name]: path }));
                })
              }
            >
              Browse…
            </button>
          )}
        </label>
      ))}
      <div className="row">
        <button data-testid="run-start" onClick={() => onStart(values)}>Start</button>
        <button onClick={onClose}>Close</button>
      </div>
    </div>
  );
}

function OpenDialog({ backend, onClose }: { backend: Backend; onClose(): void }) {
  const [files, setFiles] = useState<string[]>([]);
  const [templates, setTemplates] = useState<{ name: string; text: string }[]>([]);
  const [folder, setFolder] = useState('');
  const [error, setError] = useState<string | null>(null);
  const load = useEditor((s) => s.load);
  const refresh = useCallback(() => {
    backend.listWorkflows().then(setFiles, (e) => setError(String(e)));
    void backend.settings().then((s) => setFolder(s.workflows_folder));
  }, [backend]);
  useEffect(() => {
    refresh();
    void backend.templates().then(setTemplates);
  }, [backend, refresh]);
  return (
    <div className="dialog" data-testid="open-dialog">
      <h3>Open</h3>
      <div className="row">
        <label>
          Workflows folder
          <input data-testid="folder-input" value={folder} readOnly />
        </label>
        <button
          data-testid="folder-choose"
          onClick={() =>
            backend.chooseWorkflowsFolder().then(
              (s) => {
                setError(null);
                if (s) refresh();
              },
              (e) => setError(String(e)),
            )
          }
        >
          Choose folder…
        </button>
      </div>
      {error && <div className="toast error">{error}</div>}
      {files.map((f) => (
        <button
          key={f}
          data-testid={`open-${f}`}
          onClick={async () => {
            await load(f, await backend.readWorkflow(f));
            onClose();
          }}
        >
          {f}
        </button>
      ))}
      <h3>New from template</h3>
      {templates.map((t) => (
        <button
          key={t.name}
          data-testid={`template-${t.name}`}
          onClick={async () => {
            try {
              await load(null, await backend.useTemplate(t.name));
            } catch (e) {
              setError(String(e));
              return;
            }
            useEditor.setState({ dirty: true });
            onClose();
          }}
        >
          {t.name}
        </button>
      ))}
      <div className="row">
        <button onClick={onClose}>Close</button>
      </div>
    </div>
  );
}

function Editor({ backend }: { backend: Backend }) {
  const path = useEditor((s) => s.path);
  const dirty = useEditor((s) => s.dirty);
  const message = useEditor((s) => s.message);
  const workflowId = useEditor((s) => s.workflowId);
  const [dialog, setDialog] = useState<'open' | 'run' | 'search' | 'history' | 'models' | null>(null);
  const [runOptions, setRunOptions] = useState<RunOptions>({});
  const [handle, setHandle] = useState<RunHandle | null>(null);
  const nodes = useEditor((s) => s.nodes);
  const edges = useEditor((s) => s.edges);

  // Live validation from the backend as the user edits.
  useEffect(() => {
    const t = setTimeout(() => {
      void backend.validate(useEditor.getState().serialize()).then((d) => useEditor.getState().setDiagnostics(d));
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

  // A started or resumed run: the panel takes its id and handle, and the stored record
  // fills the run panel's details once the run is over.
  const follow = useCallback(
    (h: RunHandle) => {
      const run = useEditor.getState().run;
      if (run) useEditor.setState({ run: { ...run, runId: h.runId } });
      setHandle(h);
      void h.done.then(() => backend.getRun(h.runId)).then(
        (detail) => useEditor.getState().setRunDetail(detail),
        () => {},
      );
    },
    [backend],
  );
  const startRun = useCallback(
    async (inputs: Record<string, string>) => {
      setDialog(null);
      const text = useEditor.getState().serialize();
      // The run state exists before the first event can arrive.
      useEditor.getState().startRun('starting');
      try {
        const h = await backend.run(text, inputs, (e) => useEditor.getState().applyEvent(e), {
          ...runOptions,
          file: useEditor.getState().path,
        });
        follow(h);
      } catch (e) {
        useEditor.setState({ run: null });
        useEditor.getState().setMessage({ kind: 'error', text: `Not started: ${e instanceof Error ? e.message : String(e)}` });
      }
    },
    [backend, runOptions, follow],
  );
  const resumeRun = useCallback(
    async (runId: string) => {
      setDialog(null);
      try {
        await useEditor.getState().showRun(await backend.getRun(runId));
        useEditor.getState().startRun('starting');
        const h = await backend.resume(runId, (e) => useEditor.getState().applyEvent(e));
        follow(h);
      } catch (e) {
        useEditor.setState({ run: null });
        useEditor.getState().setMessage({ kind: 'error', text: `Not resumed: ${e instanceof Error ? e.message : String(e)}` });
      }
    },
    [backend, follow],
  );
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
      }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [save]);

  // Unsaved changes are never lost without a prompt.
  useEffect(() => {
    const onBeforeUnload = (e: BeforeUnloadEvent) => {
      if (useEditor.getState().dirty) e.preventDefault();
    };
    window.addEventListener('beforeunload', onBeforeUnload);
    return () => window.removeEventListener('beforeunload', onBeforeUnload);
  }, []);

  const title = useMemo(() => `${path ?? workflowId}${dirty ? ' •' : ''}`, [path, workflowId, dirty]);
  return (
    <div className="app">
      <header className="toolbar">
        <span className="title" data-testid="title">{title}</span>
        <button data-testid="open" onClick={() => setDialog('open')}>Open / New</button>
        <button data-testid="save" onClick={() => void save(false)}>Save</button>
        <button data-testid="save-as" onClick={() => void save(true)}>Save as</button>
        <button data-testid="undo" onClick={undo}>Undo</button>
        <button data-testid="redo" onClick={redo}>Redo</button>
        <button data-testid="delete" onClick={() => useEditor.getState().deleteSelected()}>Delete</button>
        <button data-testid="layout" onClick={() => void useEditor.getState().layout()}>Auto-layout</button>
        <button data-testid="search" onClick={() => setDialog('search')}>Search (Ctrl+K)</button>
        <button data-testid="run" onClick={() => askRun({})}>Run</button>
        <button data-testid="history" onClick={() => setDialog('history')}>History</button>
        <button data-testid="models" onClick={() => setDialog('models')}>Models</button>
      </header>
      {message && (
        <div className={`toast ${message.kind}`} data-testid="toast" onClick={() => useEditor.getState().setMessage(null)}>
          {message.text}
        </div>
      )}
      <main className="main">
        <Palette />
        <Canvas />
        <Inspector backend={backend} onRun={askRun} />
      </main>
      <RunPanel backend={backend} handle={handle} />
      {dialog === 'open' && <OpenDialog backend={backend} onClose={() => setDialog(null)} />}
      {dialog === 'search' && <SearchPalette onClose={() => setDialog(null)} />}
      {dialog === 'run' && <RunDialog backend={backend} options={runOptions} onStart={(i) => void startRun(i)} onClose={() => setDialog(null)} />}
      {dialog === 'history' && <HistoryDialog backend={backend} onClose={() => setDialog(null)} onResume={(id) => void resumeRun(id)} />}
      {dialog === 'models' && <ModelsDialog backend={backend} onClose={() => setDialog(null)} />}
    </div>
  );
}

export function App({ backend }: { backend: Backend }) {
  const started = useRef(false);
  useEffect(() => {
    if (started.current) return;
    started.current = true;
    void backend.templates().then((t) => {
      if (t[0]) void useEditor.getState().load(null, t[0].text);
    });
  }, [backend]);
  return (
    <ReactFlowProvider>
      <Editor backend={backend} />
    </ReactFlowProvider>
  );
}
