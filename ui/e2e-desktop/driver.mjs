// Starts the real desktop app under tauri-driver (which drives WebKitWebDriver, the
// WebDriver server of WebKitGTK) and opens a Selenium session on its window, following
// Tauri's "WebDriver" guide. The app gets its own workflows folder (created by the app
// with the examples), database, settings and a closed Ollama port, so it runs on the embedded
// model whatever else runs on the machine.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Builder, Capabilities } from 'selenium-webdriver';

export const repo = path.resolve(import.meta.dirname, '../..');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

async function waitPort(port, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`tauri-driver did not listen on ${port}`);
}

/** Launches the app; returns { driver, home, stop }. */
export async function launch() {
  const application = process.env.NEXUS_APP;
  if (!application) throw new Error('set NEXUS_APP to the built nexus-desktop binary');
  // The workflows folder does not exist yet: the app creates it with the examples and
  // their data files, as on a first start.
  const home = mkdtempSync(path.join(os.tmpdir(), 'nexus-desktop-'));
  const port = await freePort();
  const nativePort = await freePort();
  const closed = await freePort();
  const env = {
    ...process.env,
    NEXUS_WORKFLOWS: path.join(home, 'workflows'),
    NEXUS_DB: path.join(home, 'nexus.db'),
    XDG_CONFIG_HOME: path.join(home, 'config'),
    OLLAMA_HOST: `127.0.0.1:${closed}`,
    // No GPU in Xvfb: software rendering, no DMA-BUF renderer.
    WEBKIT_DISABLE_DMABUF_RENDERER: '1',
    WEBKIT_DISABLE_COMPOSITING_MODE: '1',
    LIBGL_ALWAYS_SOFTWARE: '1',
  };
  const driverProcess = spawn(
    'tauri-driver',
    ['--port', String(port), '--native-port', String(nativePort)],
    { env, stdio: ['ignore', 'inherit', 'inherit'] },
  );
  await waitPort(port, 30_000);
  const caps = new Capabilities();
  caps.setBrowserName('wry');
  caps.set('tauri:options', { application });
  const driver = await new Builder().withCapabilities(caps).usingServer(`http://127.0.0.1:${port}/`).build();
  return {
    driver,
    home,
    async stop() {
      try {
        // A session whose window was closed may not answer: at most 15 s.
        await Promise.race([driver.quit(), new Promise((resolve) => setTimeout(resolve, 15_000))]);
      } finally {
        driverProcess.kill();
      }
    },
  };
}
