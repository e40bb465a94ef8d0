// The open workflows, one tab each (tabs.ts keeps the ones not shown): the file's name or
// the workflow's id, a dot for unsaved changes, a button for a new tab and one that closes
// the shown tab (asking first when it has unsaved changes). The arrow keys move between
// tabs (Radix Tabs); the shown tab's panel holds the editor.
import { useState, type ReactNode } from 'react';
import { Tabs } from 'radix-ui';
import { AlertDialog, Button, Flex, IconButton, Tooltip } from '@radix-ui/themes';
import { Plus, X } from 'lucide-react';
import { useEditor } from '../store';
import { closeTab, newTab, showTab, tabLabel, useTabs } from '../tabs';

function TabTitle({ title, dirty, testId }: { title: string; dirty: boolean; testId: string }) {
  return (
    <>
      <span className="ellipsis">{title}</span>
      {dirty && (
        <span className="unsaved" data-testid={`${testId}-unsaved`} aria-label="unsaved changes">
          {' •'}
        </span>
      )}
    </>
  );
}

function ConfirmClose({ title, onClose, onConfirm }: { title: string; onClose(): void; onConfirm(): void }) {
  return (
    <AlertDialog.Root open onOpenChange={(open) => !open && onClose()}>
      <AlertDialog.Content maxWidth="420px" data-testid="close-tab-dialog">
        <AlertDialog.Title size="4">Close {title}?</AlertDialog.Title>
        <AlertDialog.Description size="2">Its unsaved changes will be lost.</AlertDialog.Description>
        <Flex gap="2" justify="end" mt="4">
          <AlertDialog.Cancel>
            <Button variant="soft" color="gray">Keep it open</Button>
          </AlertDialog.Cancel>
          <AlertDialog.Action>
            <Button color="red" data-testid="close-tab-confirm" onClick={onConfirm}>Close without saving</Button>
          </AlertDialog.Action>
        </Flex>
      </AlertDialog.Content>
    </AlertDialog.Root>
  );
}

export function DocTabs({ children, onClosed }: { children: ReactNode; onClosed?(key: string): void }) {
  const { tabs, active } = useTabs();
  const path = useEditor((s) => s.path);
  const workflowId = useEditor((s) => s.workflowId);
  const dirty = useEditor((s) => s.dirty);
  const [asking, setAsking] = useState(false);
  const shown = tabLabel({ path, workflowId, dirty });
  const close = () => {
    void closeTab(active);
    onClosed?.(active);
  };
  return (
    <Tabs.Root value={active} onValueChange={showTab} className="doc-tabs-root">
      <div className="doc-tabs">
        <Tabs.List className="doc-tab-list" aria-label="Open workflows" data-testid="doc-tabs">
          {tabs.map((t, i) => {
            const label = t.saved ? tabLabel(t.saved.doc) : shown;
            return (
              <Tabs.Trigger key={t.key} value={t.key} className="doc-tab" data-testid={`doc-tab-${i}`} title={label.title}>
                <TabTitle title={label.title} dirty={label.dirty} testId={`doc-tab-${i}`} />
              </Tabs.Trigger>
            );
          })}
        </Tabs.List>
        <Tooltip content="A new workflow in a tab of its own">
          <IconButton size="1" variant="ghost" color="gray" aria-label="New tab" data-testid="tab-new" onClick={() => void newTab()}>
            <Plus size={14} />
          </IconButton>
        </Tooltip>
        <Tooltip content={`Close ${shown.title}`}>
          <IconButton size="1" variant="ghost" color="gray" aria-label="Close this tab" data-testid="tab-close" onClick={() => (dirty ? setAsking(true) : close())}>
            <X size={14} />
          </IconButton>
        </Tooltip>
      </div>
      {tabs.map((t) => (
        <Tabs.Content key={t.key} value={t.key} forceMount className="doc-panel" tabIndex={-1}>
          {t.key === active ? children : null}
        </Tabs.Content>
      ))}
      {asking && <ConfirmClose title={shown.title} onClose={() => setAsking(false)} onConfirm={close} />}
    </Tabs.Root>
  );
}
