import { useCallback, useEffect, useState } from 'react';
import { Badge, Button, Callout, Flex, Heading, Progress, Table, Text, TextField } from '@radix-ui/themes';
import { Download, KeyRound, Trash2 } from 'lucide-react';
import type { Backend, ModelsView, PullProgress } from '../backend';
import { Modal } from '../design/Modal';

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
    <Modal testId="models-dialog" title="Models" description="What can run now: Ollama, the embedded model, cloud keys and the selector's order." width={860} onClose={onClose}>
      {error && (
        <Callout.Root color="red" size="1">
          <Callout.Text data-testid="models-error">{error}</Callout.Text>
        </Callout.Root>
      )}
      {!view && !error && <Text size="2" color="gray">Looking for models…</Text>}
      {view && (
        <>
          <Heading as="h3" size="3">Ollama</Heading>
          <Text as="p" size="2" data-testid="ollama-status">
            {ollama?.reachable ? `running at ${view.ollama_url}` : `not running at ${view.ollama_url}: ${ollama?.error ?? ''}`}
          </Text>
          <Table.Root size="1" variant="surface">
            <Table.Body>
              {ollama?.models.map((m) => (
                <Table.Row key={m.name} data-testid={`ollama-model-${m.name}`}>
                  <Table.RowHeaderCell>{m.name}</Table.RowHeaderCell>
                  <Table.Cell>{size(m.size_bytes)}</Table.Cell>
                  <Table.Cell>{m.context_length ? `${m.context_length.toLocaleString()} tokens` : ''}</Table.Cell>
                  <Table.Cell data-testid={`ollama-model-where-${m.name}`}>{m.locality === 'cloud' ? 'cloud (through the daemon)' : 'local'}</Table.Cell>
                  <Table.Cell>{(m.capabilities ?? []).map((c) => <Badge key={c} mr="1" color="gray">{c}</Badge>)}</Table.Cell>
                  <Table.Cell>{m.parameter_size ?? ''} {m.quantization ?? ''}</Table.Cell>
                </Table.Row>
              ))}
            </Table.Body>
          </Table.Root>
          <Flex gap="2">
            <TextField.Root
              className="grow"
              aria-label="Model to pull"
              data-testid="pull-name"
              placeholder="model to pull, e.g. qwen2.5:7b"
              value={pullName}
              onChange={(e) => setPullName(e.target.value)}
            />
            <Button data-testid="pull" disabled={!pullName.trim() || pulling} onClick={() => void pull()}>
              <Download size={14} /> Pull
            </Button>
          </Flex>
          {progress && (
            <Flex data-testid="pull-progress" align="center" gap="3">
              <Progress value={pct ?? undefined} data-testid="pull-bar" aria-label="Pull progress" className="grow" />
              <Text size="1" data-testid="pull-status">
                {progress.status}
                {pct !== null ? ` ${pct}%` : ''}
              </Text>
            </Flex>
          )}
          <Heading as="h3" size="3">Embedded model</Heading>
          <Text as="p" size="2" data-testid="embedded-status">
            {view.embedded_present ? `ready: ${view.embedded_path}` : `missing: ${view.embedded_path} (run scripts/fetch-model.sh)`}
          </Text>
          <Heading as="h3" size="3">Cloud providers</Heading>
          {view.keys.map((k) => (
            <Flex gap="2" align="center" key={k.provider} data-testid={`key-${k.provider}`}>
              <KeyRound size={14} aria-hidden />
              <Text size="2" className="grow">
                {k.provider}: {k.in_environment ? 'key from the environment' : k.in_keychain ? 'key in the keychain' : 'no key'}
                {k.keychain_error ? ` (the keychain cannot be read: ${k.keychain_error})` : ''}
              </Text>
              <TextField.Root
                type="password"
                aria-label={`${k.provider} API key`}
                data-testid={`key-input-${k.provider}`}
                placeholder="API key"
                value={key}
                onChange={(e) => setKey(e.target.value)}
              />
              <Button
                data-testid={`key-save-${k.provider}`}
                disabled={!key.trim()}
                onClick={() => backend.setApiKey(k.provider, key).then(() => { setKey(''); refresh(); }, (e) => setError(String(e)))}
              >
                Save
              </Button>
              {k.in_keychain && (
                <Button color="red" variant="soft" data-testid={`key-delete-${k.provider}`} onClick={() => backend.deleteApiKey(k.provider).then(refresh, (e) => setError(String(e)))}>
                  <Trash2 size={14} /> Remove
                </Button>
              )}
            </Flex>
          ))}
          <Heading as="h3" size="3">Selector order</Heading>
          <ol data-testid="selector-order">
            {view.order.map((m) => (
              <li key={m.reference}>
                {m.reference} — {m.reason}
              </li>
            ))}
          </ol>
        </>
      )}
    </Modal>
  );
}
