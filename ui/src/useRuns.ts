// Starting and resuming runs from the editor. A run belongs to the tab it was started in:
// its events and its stored record go to that tab's workflow whether it is shown or not
// (tabs.ts), and each tab keeps its run's handle (for Cancel).
import { useCallback, useState } from 'react';
import { useEditor } from './store';
import { activeTab, newTab, toTab, useTabs } from './tabs';
import { withDetail, withEvent } from './runState';
import type { Backend, EngineEvent, RunHandle, RunOptions } from './backend';

function failed(what: string, e: unknown) {
  useEditor.setState({ run: null });
  useEditor.getState().setMessage({ kind: 'error', text: `${what}: ${e instanceof Error ? e.message : String(e)}` });
}

export function useRuns(backend: Backend) {
  const [handles, setHandles] = useState<Record<string, RunHandle>>({});
  const active = useTabs((s) => s.active);

  // The panel takes the run's id and handle; the stored record fills its details once the run is over.
  const follow = useCallback(
    (tab: string, h: RunHandle) => {
      toTab(tab, (s) => ({ run: s.run ? { ...s.run, runId: h.runId } : null }));
      setHandles((all) => ({ ...all, [tab]: h }));
      const drop = () => setHandles(({ [tab]: mine, ...rest }) => (mine === h ? rest : { ...rest, ...(mine ? { [tab]: mine } : {}) }));
      void h.done.finally(drop).then(() => backend.getRun(h.runId)).then(
        (detail) => toTab(tab, (s) => ({ run: withDetail(s.run, detail) ?? s.run })),
        () => {},
      );
    },
    [backend],
  );
  const onEvent = (tab: string) => (e: EngineEvent) => toTab(tab, (s) => ({ run: withEvent(s.run, e) ?? s.run }));

  const start = useCallback(
    async (inputs: Record<string, string>, options: RunOptions) => {
      const tab = activeTab();
      const text = useEditor.getState().serialize();
      // The run state exists before the first event can arrive.
      useEditor.getState().startRun('starting');
      try {
        follow(tab, await backend.run(text, inputs, onEvent(tab), { ...options, file: useEditor.getState().path }));
      } catch (e) {
        failed('Not started', e);
      }
    },
    [backend, follow],
  );

  const resume = useCallback(
    async (runId: string) => {
      try {
        const detail = await backend.getRun(runId);
        await newTab();
        await useEditor.getState().showRun(detail);
        const tab = activeTab();
        useEditor.getState().startRun('starting');
        follow(tab, await backend.resume(runId, onEvent(tab)));
      } catch (e) {
        failed('Not resumed', e);
      }
    },
    [backend, follow],
  );

  /** Cancels the run of a tab being closed, if it is still going (a handle is kept until its run ends). */
  const closed = useCallback((tab: string) => {
    setHandles((all) => {
      all[tab]?.cancel();
      const { [tab]: _gone, ...rest } = all;
      void _gone;
      return rest;
    });
  }, []);

  return { handle: handles[active] ?? null, start, resume, closed };
}
