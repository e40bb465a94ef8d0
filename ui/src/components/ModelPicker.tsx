import { useEffect, useState } from 'react';
import { Select, Text } from '@radix-ui/themes';
import type { Backend, ModelEntry } from '../backend';

const AUTO = '__auto';
const CUSTOM = '__custom';

/**
 * Picks the models a step may use: "automatic" (the selector decides) or one model from
 * those available now, listed in the selector's order with its reason.
 */
export function ModelPicker({
  backend,
  value,
  onChange,
}: {
  backend: Backend;
  value: unknown;
  onChange(v: unknown): void;
}) {
  const [models, setModels] = useState<ModelEntry[]>([]);
  useEffect(() => {
    void backend.models().then(setModels);
  }, [backend]);
  const current = Array.isArray(value) && value.length === 1 ? String(value[0]) : typeof value === 'string' ? value : value ? CUSTOM : AUTO;
  const known = current === AUTO || current === CUSTOM || models.some((m) => m.reference === current);
  return (
    <Select.Root value={current} onValueChange={(v) => v !== CUSTOM && onChange(v === AUTO ? undefined : [v])}>
      <Select.Trigger id="model-picker" data-testid="model-picker" aria-label="model" className="wide-select" />
      <Select.Content position="popper">
        <Select.Item value={AUTO}>auto (the selector's order{models[0] ? `: ${models[0].reference} first` : ''})</Select.Item>
        {models.map((m, i) => (
          <Select.Item key={m.reference} value={m.reference} title={m.reason}>
            {i + 1}. {m.reference}{' '}
            <Text color="gray">
              — {m.locality}
              {m.contextLength ? `, ${m.contextLength} tokens` : ''}
            </Text>
          </Select.Item>
        ))}
        {!known && <Select.Item value={current}>{current}</Select.Item>}
        {current === CUSTOM && <Select.Item value={CUSTOM}>{JSON.stringify(value)}</Select.Item>}
      </Select.Content>
    </Select.Root>
  );
}
