// Every dialog of the editor: a Radix dialog (focus trapped, Escape and the close button
// close it, titled for screen readers) with one look.
import type { ReactNode } from 'react';
import { Dialog, Flex, IconButton } from '@radix-ui/themes';
import { X } from 'lucide-react';

export function Modal({
  title,
  description,
  testId,
  width = 480,
  onClose,
  children,
  footer,
}: {
  title: ReactNode;
  description?: ReactNode;
  testId: string;
  width?: number;
  onClose(): void;
  children: ReactNode;
  footer?: ReactNode;
}) {
  return (
    <Dialog.Root open onOpenChange={(open) => !open && onClose()}>
      {/* Without a description the dialog says so (aria-describedby undefined), as Radix asks. */}
      <Dialog.Content data-testid={testId} maxWidth={`${width}px`} {...(description ? {} : { 'aria-describedby': undefined })}>
        <Flex justify="between" align="start" gap="3">
          <Dialog.Title size="4" mb="1">
            {title}
          </Dialog.Title>
          <Dialog.Close>
            <IconButton variant="ghost" color="gray" aria-label="Close" data-testid={`${testId}-close`}>
              <X size={16} />
            </IconButton>
          </Dialog.Close>
        </Flex>
        {description ? (
          <Dialog.Description size="2" color="gray" mb="3">
            {description}
          </Dialog.Description>
        ) : null}
        <Flex direction="column" gap="3">
          {children}
        </Flex>
        {footer && (
          <Flex gap="2" justify="end" mt="4">
            {footer}
          </Flex>
        )}
      </Dialog.Content>
    </Dialog.Root>
  );
}
