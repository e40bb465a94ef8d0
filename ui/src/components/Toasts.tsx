// The editor's messages as toasts (Radix Toast): an error stays until dismissed, anything
// else ("Saved feature-spec.yaml") goes after a few seconds; a new message replaces the
// one shown. Screen readers hear them through Radix's live region (errors assertively).
import { Toast } from 'radix-ui';
import { Callout, IconButton } from '@radix-ui/themes';
import { CircleAlert, Info, X } from 'lucide-react';
import { useEditor } from '../store';

/** How long an informational toast stays, in ms. */
const INFO_MS = 6000;

export function Toasts() {
  const message = useEditor((s) => s.message);
  const error = message?.kind === 'error';
  return (
    // A provider of its own for each message: Radix keeps the toasts paused after the
    // pointer dismissed the last one (its listeners go with the last toast), so a fresh
    // one makes the next toast time out as it should.
    <Toast.Provider swipeDirection="up" label="Message" key={message ? `${message.kind}:${message.text}` : 'none'}>
      {message && (
        <Toast.Root
          className="toast"
          data-testid="toast-root"
          data-kind={message.kind}
          type={error ? 'foreground' : 'background'}
          duration={error ? Infinity : INFO_MS}
          onOpenChange={(open) => !open && useEditor.getState().setMessage(null)}
        >
          <Callout.Root color={error ? 'red' : 'blue'} size="1" variant="surface" className="toast-body">
            <Callout.Icon>{error ? <CircleAlert size={14} /> : <Info size={14} />}</Callout.Icon>
            <Toast.Description asChild>
              <Callout.Text data-testid="toast">{message.text}</Callout.Text>
            </Toast.Description>
            <Toast.Close asChild>
              <IconButton size="1" variant="ghost" color="gray" aria-label="Dismiss" data-testid="toast-close" className="toast-close">
                <X size={12} />
              </IconButton>
            </Toast.Close>
          </Callout.Root>
        </Toast.Root>
      )}
      <Toast.Viewport className="toast-viewport" data-testid="toasts" />
    </Toast.Provider>
  );
}
