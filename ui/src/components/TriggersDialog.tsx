import { useCallback, useEffect, useState } from 'react';
import { Badge, Button, Callout, Flex, Heading, Table, Text } from '@radix-ui/themes';
import { Power, PowerOff } from 'lucide-react';
import type { Backend, ServiceStatus, TriggerView } from '../backend';
import { Modal } from '../design/Modal';

/** A time as the user's clock shows it. */
function when(rfc3339: string | null): string {
  return rfc3339 ? new Date(rfc3339).toLocaleString() : '';
}

/**
 * The workflows folder's triggers (from the workflow files' `triggers:`): which this
 * process runs now, their next and last fires, and what keeps one from being armed; and,
 * in the desktop app, the login service that runs them while the app is closed
 * (`nexus serve` at login, as `nexus service install` does).
 */
export function TriggersDialog({ backend, onClose }: { backend: Backend; onClose(): void }) {
  const [triggers, setTriggers] = useState<TriggerView[] | null>(null);
  const [service, setService] = useState<ServiceStatus | null | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const refresh = useCallback(() => {
    backend.listTriggers().then(setTriggers, (e) => setError(String(e)));
    backend.serviceStatus().then(setService, (e) => setError(String(e)));
  }, [backend]);
  useEffect(refresh, [refresh]);
  const change = async (install: boolean) => {
    setBusy(true);
    setError(null);
    try {
      setService(await (install ? backend.installService() : backend.uninstallService()));
    } catch (e) {
      setError(String(e instanceof Error ? e.message : e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Modal
      testId="triggers-dialog"
      title="Triggers"
      description="What starts the workflows of this folder besides you: schedules and watched files run while this app is open; webhooks need nexus serve."
      width={900}
      onClose={onClose}
    >
      {error && (
        <Callout.Root color="red" size="1" mb="2">
          <Callout.Text data-testid="triggers-error">{error}</Callout.Text>
        </Callout.Root>
      )}
      {!triggers && !error && <Text size="2" color="gray">Reading the workflows folder…</Text>}
      {triggers && triggers.length === 0 && (
        <Text as="p" size="2" color="gray" data-testid="triggers-empty">
          No workflow of this folder declares a trigger.
        </Text>
      )}
      {triggers && triggers.length > 0 && (
        <Table.Root size="1" variant="surface">
          <Table.Header>
            <Table.Row>
              <Table.ColumnHeaderCell>Workflow</Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell>Trigger</Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell>Reacts to</Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell>State</Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell>Next fire</Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell>Last fire</Table.ColumnHeaderCell>
            </Table.Row>
          </Table.Header>
          <Table.Body>
            {triggers.map((t, i) => (
              <Table.Row key={`${t.file}-${t.name ?? i}`} data-testid={`trigger-${t.file}-${t.name ?? 'file'}`}>
                <Table.Cell>{t.file}</Table.Cell>
                <Table.Cell>
                  {t.kind && <Badge variant="soft">{t.kind}</Badge>} {t.name}
                </Table.Cell>
                <Table.Cell>{t.detail}</Table.Cell>
                <Table.Cell>
                  {t.armed ? (
                    <Badge color="green" data-testid="trigger-state">armed</Badge>
                  ) : (
                    <Text size="1" color="red" data-testid="trigger-state">
                      {t.problem ?? 'not armed'}
                    </Text>
                  )}
                </Table.Cell>
                <Table.Cell>{when(t.next_fire)}</Table.Cell>
                <Table.Cell>{when(t.last_fire)}</Table.Cell>
              </Table.Row>
            ))}
          </Table.Body>
        </Table.Root>
      )}
      {service !== undefined && service !== null && (
        <Flex direction="column" gap="2" mt="4" data-testid="service">
          <Heading as="h3" size="3">While the app is closed</Heading>
          <Text size="2" data-testid="service-status">
            {service.installed
              ? `The login service runs nexus serve for this folder (${service.manager}: ${service.state}).`
              : 'Schedules fire only while this app is open. Install the login service to run them from login on (nexus serve, loopback only).'}
          </Text>
          <Flex gap="2">
            {service.installed ? (
              <Button variant="soft" color="red" disabled={busy} onClick={() => void change(false)} data-testid="service-uninstall">
                <PowerOff size={14} /> Remove the login service
              </Button>
            ) : (
              <Button disabled={busy} onClick={() => void change(true)} data-testid="service-install">
                <Power size={14} /> Run at login
              </Button>
            )}
          </Flex>
        </Flex>
      )}
    </Modal>
  );
}
