import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { TestBackend } from './testBackend';
import { TauriBackend, inTauri } from './tauriBackend';
import { HttpBackend, servedByNexus } from './httpBackend';
import { useEditor } from './store';
import { anyDirty } from './tabs';
import type { Backend } from './backend';
import { getCurrentWindow } from '@tauri-apps/api/window';

// Inside the desktop app every call goes to the Tauri shell; a page loaded from
// `nexus serve` calls its HTTP API (the real engine; an API token, when the server
// needs one, is given in the address as `#token=...`); in any other browser
// (development, the editor-only Playwright tests) the in-memory backend serves the
// example workflows.
async function pickBackend(): Promise<Backend> {
  if (inTauri()) return new TauriBackend();
  if (await servedByNexus()) {
    const token = new URLSearchParams(window.location.hash.slice(1)).get('token');
    return new HttpBackend('', token);
  }
  return new TestBackend();
}
const backend: Backend = await pickBackend();
declare global {
  interface Window {
    nexus?: { backend: TestBackend; editor: typeof useEditor };
  }
}
window.nexus = { backend: backend as TestBackend, editor: useEditor };

// Closing the desktop window with unsaved changes asks first (the web view's
// `beforeunload` does not fire when the native window closes).
if (inTauri()) {
  void getCurrentWindow().onCloseRequested((event) => {
    if (anyDirty() && !window.confirm('A workflow has unsaved changes. Close without saving?')) {
      event.preventDefault();
    }
  });
}

const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App backend={backend} />
    </StrictMode>,
  );
}
