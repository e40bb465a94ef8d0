import { useEffect, useState } from 'react';
import type { Backend, ModelEntry } from '../backend';

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
  const current = Array.isArray(value) && value.length === 1 ? String(value[0]) : value ? 'custom' : '';
  return (
    <label>
      model
      <select
        data-testid="model-picker"
        value={current}
        onChange={(e) => onChange(e.target.value ? [e.target.value] : undefined)}
      >
        <option value="">automatic (the selector's order)</option>
        {models.map((m, i) => (
          <option key={m.reference} value={m.reference} title={m.reason}>
            {i + 1}. {m.reference} — {m.locality}
            {m.contextLength ? `, ${m.contextLength} tokens` : ''}
          </option>
        ))}
        {current === 'custom' && <option value="custom">{JSON.stringify(value)}</option>}
      </select>
    </label>
  );
}
