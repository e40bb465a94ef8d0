// Open a workflow of the folder, or start one from a template (the examples in
// `workflows/`): the Open / New dialog, and the template gallery it shares with the empty
// state of a new tab. A file opens in a tab of its own (the tab that has it, if any).
import { useCallback, useEffect, useState } from 'react';
import { Button, Callout, Flex, Heading, Text, TextField } from '@radix-ui/themes';
import { FileText, FolderOpen } from 'lucide-react';
import { useEditor } from '../store';
import { openInTab } from '../tabs';
import { Field } from './fields';
import { Modal } from '../design/Modal';
import type { Backend } from '../backend';

/** A template's description or name line, for its card in the gallery. */
export function templateSummary(text: string): string {
  const m = /^description:\s*(.+)$/m.exec(text) ?? /^name:\s*(.+)$/m.exec(text);
  const steps = (text.match(/^\s*- id:/gm) ?? []).length;
  return `${m ? m[1].replace(/^["']|["']$/g, '').slice(0, 90) : ''}${m ? ' · ' : ''}${steps} steps`;
}

/** Starts an unsaved workflow from template `name` in a tab (a blank, unchanged one is reused). */
export async function startFromTemplate(backend: Backend, name: string) {
  await openInTab(null, await backend.useTemplate(name));
  useEditor.setState({ dirty: true });
}

/** The templates as cards; choosing one starts a workflow from it. */
export function TemplateGallery({
  templates,
  onChoose,
  testId = 'template-gallery',
}: {
  templates: { name: string; text: string }[];
  onChoose(name: string): void;
  testId?: string;
}) {
  return (
    <div className="template-grid" data-testid={testId}>
      {templates.map((t) => (
        <button type="button" key={t.name} className="template-card" data-testid={`${testId === 'template-gallery' ? 'template' : testId}-${t.name}`} onClick={() => onChoose(t.name)}>
          <Text size="2" weight="medium">{t.name.replace(/\.ya?ml$/, '')}</Text>
          <Text size="1" color="gray">{templateSummary(t.text)}</Text>
        </button>
      ))}
    </div>
  );
}

function FolderField({ backend, folder, onChanged, onError }: { backend: Backend; folder: string; onChanged(): void; onError(e: string | null): void }) {
  return (
    <Field label="Workflows folder" htmlFor="folder-input">
      <Flex gap="2">
        <TextField.Root className="grow" id="folder-input" data-testid="folder-input" value={folder} readOnly />
        <Button
          variant="soft"
          data-testid="folder-choose"
          onClick={() =>
            backend.chooseWorkflowsFolder().then(
              (s) => {
                onError(null);
                if (s) onChanged();
              },
              (e) => onError(String(e)),
            )
          }
        >
          <FolderOpen size={14} /> Choose folder…
        </Button>
      </Flex>
    </Field>
  );
}

export function OpenDialog({ backend, onClose }: { backend: Backend; onClose(): void }) {
  const [files, setFiles] = useState<string[]>([]);
  const [templates, setTemplates] = useState<{ name: string; text: string }[]>([]);
  const [folder, setFolder] = useState('');
  const [error, setError] = useState<string | null>(null);
  const refresh = useCallback(() => {
    backend.listWorkflows().then(setFiles, (e) => setError(String(e)));
    void backend.settings().then((s) => setFolder(s.workflows_folder));
  }, [backend]);
  useEffect(() => {
    refresh();
    void backend.templates().then(setTemplates);
  }, [backend, refresh]);
  const choose = async (name: string) => {
    try {
      await startFromTemplate(backend, name);
      onClose();
    } catch (e) {
      setError(String(e));
    }
  };
  return (
    <Modal testId="open-dialog" title="Open or start a workflow" description="A workflow opens in a tab of its own." width={720} onClose={onClose}>
      <FolderField backend={backend} folder={folder} onChanged={refresh} onError={setError} />
      {error && (
        <Callout.Root color="red" size="1">
          <Callout.Text>{error}</Callout.Text>
        </Callout.Root>
      )}
      <Heading as="h3" size="2">Workflows in the folder</Heading>
      {files.length === 0 && <Text size="2" color="gray">No workflow files here yet.</Text>}
      <div className="file-grid">
        {files.map((f) => (
          <Button
            key={f}
            variant="surface"
            color="gray"
            className="file-button"
            data-testid={`open-${f}`}
            onClick={async () => {
              try {
                await openInTab(f, await backend.readWorkflow(f));
                onClose();
              } catch (e) {
                setError(String(e));
              }
            }}
          >
            <FileText size={14} /> {f}
          </Button>
        ))}
      </div>
      <Heading as="h3" size="2">New from a template</Heading>
      <TemplateGallery templates={templates} onChoose={(n) => void choose(n)} />
    </Modal>
  );
}
