import { defineConfig } from '@playwright/test';
import base from './playwright.config';

// The editor as a web app: the production build served by the real `nexus serve`
// (e2e-serve/start-server.sh: a fresh workflows folder and run database, the embedded
// model), so every run goes through the real engine.
export default defineConfig({
  ...base,
  testDir: 'e2e-serve',
  timeout: 120_000,
  use: { ...base.use, baseURL: 'http://127.0.0.1:4174' },
  webServer: {
    command: 'bash e2e-serve/start-server.sh 4174',
    url: 'http://127.0.0.1:4174/api/health',
    reuseExistingServer: false,
    timeout: 120_000,
  },
});
