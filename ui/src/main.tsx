import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { TestBackend } from './testBackend';
import { TauriBackend, inTauri } from './tauriBackend';
import { useEditor } from './store';
import type { Backend } from './backend';
import { getCurrentWindow } from '@tauri-apps/api/window';

// Inside the desktop app every call goes to the Tauri shell; in a plain browser
// (development, Playwright) the in-memory backend serves the example workflows.
const backend: Backend = inTauri() ? new TauriBackend() : new TestBackend();
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
    if (useEditor.getState().dirty && !window.confirm('The workflow has unsaved changes. Close without saving?')) {
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
