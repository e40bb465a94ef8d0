import { useEffect, useState } from 'react';
import { useEditor } from '../store';
import type { Backend, RunSummary } from '../backend';

/** Past runs from the run database (shared with the CLI); opening one shows it on the canvas. */
/** Runs that have not finished: paused, waiting, or interrupted (their process died). */
const UNFINISHED = new Set(['running', 'paused', 'waiting_for_human']);

export function HistoryDialog({
  backend,
  onClose,
  onResume,
}: {
  backend: Backend;
  onClose(): void;
  /** Continues an unfinished run in the run panel. */
  onResume(runId: string): void;
}) {
  const [runs, setRuns] = useState<RunSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    backend.listRuns(50).then(setRuns, (e) => setError(String(e)));
  }, [backend]);
  const open = async (id: string) => {
    if (useEditor.getState().dirty && !window.confirm('Discard unsaved changes to show this run?')) return;
    try {
      await useEditor.getState().showRun(await backend.getRun(id));
      onClose();
    } catch (e) {
      setError(String(e));
    }
  };
  return (
    <div className="dialog wide" data-testid="history-dialog">
      <h3>Run history</h3>
      {error && <div className="toast error">{error}</div>}
      {runs === null && !error && <p>Loading…</p>}
      {runs?.length === 0 && <p>No runs yet.</p>}
      <table>
        <tbody>
          {runs?.map((r) => (
            <tr key={r.run_id} data-testid={`history-row-${r.run_id}`} onClick={() => void open(r.run_id)}>
              <td>{r.workflow_id}</td>
              <td>{r.status}</td>
              <td>{new Date(r.started_at).toLocaleString()}</td>
              <td>{r.steps} steps</td>
              <td>{r.tokens} tokens</td>
              <td>
                {UNFINISHED.has(r.status) && (
                  <button
                    data-testid={`history-resume-${r.run_id}`}
                    onClick={(e) => {
                      e.stopPropagation();
                      onResume(r.run_id);
                    }}
                  >
                    Resume
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <div className="row">
        <button onClick={onClose}>Close</button>
      </div>
    </div>
  );
}
