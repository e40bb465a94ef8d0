// The OS colour scheme (`prefers-color-scheme`), followed live: the editor has a light
// and a dark theme and switches when the system does.
import { useSyncExternalStore } from 'react';

const query = () => window.matchMedia('(prefers-color-scheme: dark)');

function subscribe(onChange: () => void): () => void {
  const mq = query();
  mq.addEventListener('change', onChange);
  return () => mq.removeEventListener('change', onChange);
}

/** `'dark'` when the OS prefers a dark scheme, else `'light'`. */
export function useColorScheme(): 'light' | 'dark' {
  return useSyncExternalStore(subscribe, () => (query().matches ? 'dark' : 'light'), () => 'light');
}
