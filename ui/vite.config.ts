import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The editor is served by Vite in development and bundled into `dist/` for the Tauri
// shell and the Playwright tests.
export default defineConfig({
  plugins: [react()],
  server: { port: 1420, strictPort: true },
  build: { target: 'es2022', chunkSizeWarningLimit: 2000 },
});
