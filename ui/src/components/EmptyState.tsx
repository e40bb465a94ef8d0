// What an empty canvas says: how to add a step, and the templates to start from instead.
import { useEffect, useState } from 'react';
import { Text } from '@radix-ui/themes';
import { useEditor } from '../store';
import { startFromTemplate, TemplateGallery } from './OpenDialog';
import type { Backend } from '../backend';

/** Most templates shown on the empty canvas (the Open / New dialog lists them all). */
const SHOWN = 6;

export function EmptyState({ backend }: { backend: Backend }) {
  const [templates, setTemplates] = useState<{ name: string; text: string }[]>([]);
  useEffect(() => {
    let live = true;
    backend.templates().then(
      (t) => live && setTemplates(t.slice(0, SHOWN)),
      () => {},
    );
    return () => {
      live = false;
    };
  }, [backend]);
  const choose = (name: string) =>
    void startFromTemplate(backend, name).catch((e) => useEditor.getState().setMessage({ kind: 'error', text: `Not opened: ${String(e)}` }));
  return (
    <div className="empty-state" data-testid="empty-state">
      <Text size="3" weight="medium">This workflow has no steps yet</Text>
      <Text size="2" color="gray">
        Drag a step from the palette, focus one and press Enter, or press Ctrl+K. Or start from a template:
      </Text>
      {templates.length > 0 && <TemplateGallery templates={templates} onChoose={choose} testId="empty-template" />}
    </div>
  );
}
