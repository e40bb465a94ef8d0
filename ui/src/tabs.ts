// Several workflows open at once, one tab each. The shown tab's workflow lives in the
// editor store (store.ts), which every component reads; the other tabs keep a snapshot of
// that store's document state with its undo history, put back when their tab is chosen.
// A run follows its own tab's workflow whichever tab is shown (`toTab`).
import { create } from 'zustand';
import { useEditor, type EditorState } from './store';

const DOC_KEYS = ['path', 'original', 'doc', 'workflowId', 'inputs', 'settings', 'nodes', 'edges', 'dirty', 'diagnostics', 'run', 'picked'] as const;
export type DocState = Pick<EditorState, (typeof DOC_KEYS)[number]>;

type Temporal = ReturnType<typeof useEditor.temporal.getState>;
interface Saved {
  doc: DocState;
  past: Temporal['pastStates'];
  future: Temporal['futureStates'];
}

export interface Tab {
  key: string;
  /** The tab's workflow while another tab is shown (null for the shown tab). */
  saved: Saved | null;
}

interface TabsState {
  tabs: Tab[];
  active: string;
}

export const BLANK = 'id: untitled\nsteps: []\n';

let seq = 1;
export const useTabs = create<TabsState>()(() => ({ tabs: [{ key: 'tab-1', saved: null }], active: 'tab-1' }));

function capture(): Saved {
  const s = useEditor.getState();
  const doc = Object.fromEntries(DOC_KEYS.map((k) => [k, s[k]])) as DocState;
  const t = useEditor.temporal.getState();
  return { doc, past: t.pastStates, future: t.futureStates };
}

function restore(saved: Saved) {
  const temporal = useEditor.temporal;
  temporal.getState().pause();
  useEditor.setState({ ...saved.doc, message: null });
  temporal.setState({ pastStates: saved.past, futureStates: saved.future });
  temporal.getState().resume();
}

/** The key of the tab that is shown. */
export function activeTab(): string {
  return useTabs.getState().active;
}

/** Shows tab `key` (the shown one is kept as it is). */
export function showTab(key: string) {
  const { tabs, active } = useTabs.getState();
  const target = tabs.find((t) => t.key === key);
  if (!target || key === active || !target.saved) return;
  const here = capture();
  useTabs.setState({
    active: key,
    tabs: tabs.map((t) => (t.key === active ? { ...t, saved: here } : t.key === key ? { ...t, saved: null } : t)),
  });
  restore(target.saved);
}

/** A blank, unchanged, never-saved workflow: the one a new tab opens with. */
function pristine(): boolean {
  const s = useEditor.getState();
  return s.path === null && !s.dirty && s.nodes.length === 0 && !s.run;
}

/** Opens a new, empty tab and shows it (the shown tab is kept if it is blank and unchanged). */
export async function newTab(): Promise<string> {
  if (pristine()) return activeTab();
  const { tabs, active } = useTabs.getState();
  const key = `tab-${++seq}`;
  const here = capture();
  useTabs.setState({ active: key, tabs: [...tabs.map((t) => (t.key === active ? { ...t, saved: here } : t)), { key, saved: null }] });
  await useEditor.getState().load(null, BLANK);
  return key;
}

/** Opens file `path` in a tab: the one that has it open already, else a new one. */
export async function openInTab(path: string | null, text: string) {
  if (path !== null) {
    const open = useTabs.getState().tabs.find((t) => (t.saved ? t.saved.doc.path : useEditor.getState().path) === path);
    if (open) {
      showTab(open.key);
      return;
    }
  }
  await newTab();
  await useEditor.getState().load(path, text);
}

/** Closes tab `key`; the last tab closed leaves one blank tab. */
export async function closeTab(key: string) {
  const { tabs, active } = useTabs.getState();
  const at = tabs.findIndex((t) => t.key === key);
  if (at < 0) return;
  if (tabs.length === 1) {
    await useEditor.getState().load(null, BLANK);
    return;
  }
  if (key === active) showTab(tabs[at + 1]?.key ?? tabs[at - 1].key);
  useTabs.setState({ tabs: useTabs.getState().tabs.filter((t) => t.key !== key) });
}

/** Changes tab `key`'s workflow state, whether it is shown or not (a run's events and record). */
export function toTab(key: string, change: (s: DocState) => Partial<DocState>) {
  if (key === activeTab()) {
    useEditor.setState(change(useEditor.getState()));
    return;
  }
  useTabs.setState({
    tabs: useTabs.getState().tabs.map((t) => (t.key === key && t.saved ? { ...t, saved: { ...t.saved, doc: { ...t.saved.doc, ...change(t.saved.doc) } } } : t)),
  });
}

/** Whether any open workflow has unsaved changes. */
export function anyDirty(): boolean {
  return useEditor.getState().dirty || useTabs.getState().tabs.some((t) => t.saved?.doc.dirty);
}

/** What a tab shows: its file's name (else the workflow's id) and whether it has unsaved changes. */
export function tabLabel(doc: Pick<DocState, 'path' | 'workflowId' | 'dirty'>): { title: string; dirty: boolean } {
  return { title: doc.path ?? doc.workflowId, dirty: doc.dirty };
}
