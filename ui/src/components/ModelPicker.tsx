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
  // The full form `{prefer, min_context, local_only}` keeps its other keys; its first
  // preference is the pick.
  const obj = value && typeof value === 'object' && !Array.isArray(value) ? (value as { prefer?: string[] }) : null;
  const list = obj ? obj.prefer : value;
  const current =
    Array.isArray(list) && list.length === 1
      ? String(list[0])
      : typeof list === 'string'
        ? list
        : list === undefined || list === null || (Array.isArray(list) && list.length === 0)
          ? AUTO
          : CUSTOM;
  const known = current === AUTO || current === CUSTOM || models.some((m) => m.reference === current);
  return (
    <Select.Root
      value={current}
      onValueChange={(v) => {
        if (v === CUSTOM) return;
        const prefer = v === AUTO ? undefined : [v];
        if (!obj) onChange(prefer);
        else {
          const next: Record<string, unknown> = { ...obj, prefer };
          if (!prefer) delete next.prefer;
          onChange(Object.keys(next).length ? next : undefined);
        }
      }}
    >
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
