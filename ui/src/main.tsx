import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { TestBackend } from './testBackend';
import { useEditor } from './store';

// The Tauri backend joins with the desktop shell; in a browser (development, tests) the
// in-memory backend serves the example workflows.
const backend = new TestBackend();
declare global {
  interface Window {
    nexus?: { backend: TestBackend; editor: typeof useEditor };
  }
}
window.nexus = { backend, editor: useEditor };

const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App backend={backend} />
    </StrictMode>,
  );
}
