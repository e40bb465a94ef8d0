import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { TestBackend } from './testBackend';
import { TauriBackend, inTauri } from './tauriBackend';
import { useEditor } from './store';
import type { Backend } from './backend';

// Inside the desktop app every call goes to the Tauri shell; in a plain browser
// (development, Playwright) the in-memory backend serves the example workflows.
const backend: Backend = inTauri() ? new TauriBackend() : new TestBackend();
declare global {
  interface Window {
    nexus?: { backend: TestBackend; editor: typeof useEditor };
  }
}
window.nexus = { backend: backend as TestBackend, editor: useEditor };

const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App backend={backend} />
    </StrictMode>,
  );
}
