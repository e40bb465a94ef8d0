import { useCallback, useEffect, useState } from 'react';
import type { Backend, ModelsView, PullProgress } from '../backend';

function size(bytes: number | null | undefined): string {
  if (!bytes) return '';
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${(bytes / 1e6).toFixed(0)} MB`;
}

/**
 * What can run now: whether Ollama answers and its installed models (size, context),
 * pulling a model with a progress bar, the embedded model, cloud keys (kept in the OS
 * keychain by the desktop app; the key itself is never shown again), and the
 * selector's order.
 */
export function ModelsDialog({ backend, onClose }: { backend: Backend; onClose(): void }) {
  const [view, setView] = useState<ModelsView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [pullName, setPullName] = useState('');
  const [progress, setProgress] = useState<PullProgress | null>(null);
  const [pulling, setPulling] = useState(false);
  const [key, setKey] = useState('');
  const refresh = useCallback(() => {
    backend.modelsView().then(setView, (e) => setError(String(e)));
  }, [backend]);
  useEffect(refresh, [refresh]);
  const pull = async () => {
    setPulling(true);
    setError(null);
    try {
      await backend.pullModel(pullName, setProgress);
      refresh();
    } catch (e) {
      setError(`Pull failed: ${String(e)}`);
    } finally {
      setPulling(false);
    }
  };
  const ollama = view?.providers.find((p) => p.id === 'ollama');
  const pct = progress?.total_bytes ? Math.round(((progress.completed_bytes ?? 0) / progress.total_bytes) * 100) : null;
  return (
    <div className="dialog wide" data-testid="models-dialog">
      <h3>Models</h3>
      {error && <div className="toast error" data-testid="models-error">{error}</div>}
      {!view && !error && <p>Looking for models…</p>}
      {view && (
        <>
          <h4>Ollama</h4>
          <p data-testid="ollama-status">
            {ollama?.reachable ? `running at ${view.ollama_url}` : `not running at ${view.ollama_url}: ${ollama?.error ?? ''}`}
          </p>
          <table>
            <tbody>
              {ollama?.models.map((m) => (
                <tr key={m.name} data-testid={`ollama-model-${m.name}`}>
                  <td>{m.name}</td>
                  <td>{size(m.size_bytes)}</td>
                  <td>{m.context_length ? `${m.context_length.toLocaleString()} tokens` : ''}</td>
                  <td data-testid={`ollama-model-where-${m.name}`}>{m.locality === 'cloud' ? 'cloud (through the daemon)' : 'local'}</td>
                  <td>{(m.capabilities ?? []).join(', ')}</td>
                  <td>{m.parameter_size ?? ''} {m.quantization ?? ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <div className="row">
            <input
              data-testid="pull-name"
              placeholder="model to pull, e.g. qwen2.5:7b"
              value={pullName}
              onChange={(e) => setPullName(e.target.value)}
            />
            <button data-testid="pull" disabled={!pullName.trim() || pulling} onClick={() => void pull()}>
              Pull
            </button>
          </div>
          {progress && (
            <div data-testid="pull-progress">
              <progress max={100} value={pct ?? undefined} data-testid="pull-bar" />
              <span data-testid="pull-status">
                {progress.status}
                {pct !== null ? ` ${pct}%` : ''}
              </span>
            </div>
          )}
          <h4>Embedded model</h4>
          <p data-testid="embedded-status">
            {view.embedded_present ? `ready: ${view.embedded_path}` : `missing: ${view.embedded_path} (run scripts/fetch-model.sh)`}
          </p>
          <h4>Cloud providers</h4>
          {view.keys.map((k) => (
            <div className="row" key={k.provider} data-testid={`key-${k.provider}`}>
              <span>
                {k.provider}: {k.in_environment ? 'key from the environment' : k.in_keychain ? 'key in the keychain' : 'no key'}
                {k.keychain_error ? ` (the keychain cannot be read: ${k.keychain_error})` : ''}
              </span>
              <input
                type="password"
                data-testid={`key-input-${k.provider}`}
                placeholder="API key"
                value={key}
                onChange={(e) => setKey(e.target.value)}
              />
              <button
                data-testid={`key-save-${k.provider}`}
                disabled={!key.trim()}
                onClick={() => backend.setApiKey(k.provider, key).then(() => { setKey(''); refresh(); }, (e) => setError(String(e)))}
              >
                Save
              </button>
              {k.in_keychain && (
                <button data-testid={`key-delete-${k.provider}`} onClick={() => backend.deleteApiKey(k.provider).then(refresh, (e) => setError(String(e)))}>
                  Remove
                </button>
              )}
            </div>
          ))}
          <h4>Selector order</h4>
          <ol data-testid="selector-order">
            {view.order.map((m) => (
              <li key={m.reference}>
                {m.reference} — {m.reason}
              </li>
            ))}
          </ol>
        </>
      )}
      <div className="row">
        <button onClick={onClose}>Close</button>
      </div>
    </div>
  );
}
