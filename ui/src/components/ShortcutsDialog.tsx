// The keyboard-shortcut sheet (? or the toolbar's keyboard button).
import { Kbd } from '@radix-ui/themes';
import { Modal } from '../design/Modal';

const SHORTCUTS: [string[], string][] = [
  [['Ctrl', 'K'], 'Add a step or find one'],
  [['Ctrl', 'S'], 'Save'],
  [['Ctrl', 'Shift', 'S'], 'Save as'],
  [['Ctrl', 'Z'], 'Undo'],
  [['Ctrl', 'Shift', 'Z'], 'Redo'],
  [['Ctrl', 'C'], 'Copy the selected steps'],
  [['Ctrl', 'V'], 'Paste'],
  [['Delete'], 'Delete the selection'],
  [['Enter'], 'On a palette item: add that step'],
  [['Tab'], 'Move between steps on the canvas'],
  [['←', '→'], 'On the tabs: show another open workflow'],
  [['Alt', 'N'], 'A new workflow in a tab of its own'],
  [['?'], 'This sheet'],
];

export function ShortcutsDialog({ onClose }: { onClose(): void }) {
  return (
    <Modal testId="shortcuts-dialog" title="Keyboard shortcuts" onClose={onClose}>
      <dl className="shortcuts">
        {SHORTCUTS.map(([keys, what]) => (
          <div key={what} className="shortcut">
            <dt>
              {keys.map((k) => (
                <Kbd key={k}>{k}</Kbd>
              ))}
            </dt>
            <dd>{what}</dd>
          </div>
        ))}
      </dl>
    </Modal>
  );
}

