// Canvas benchmark: opens a 1,000-step workflow in the editor (production build served by
// `vite preview`, Debian's Chromium), then pans and zooms while recording the interval
// between animation frames. Prints frame-time percentiles (ms) and the JS heap. Not a
// test: run it with `node bench/canvas.mjs` after `npx vite build`.
import { spawn } from 'node:child_process';
import { chromium } from '@playwright/test';

const N = Number(process.env.NODES ?? 1000);
const port = 4174;
const server = spawn('npx', ['vite', 'preview', '--host', '127.0.0.1', '--port', String(port), '--strictPort'], {
  stdio: 'ignore',
  // Its own process group, so that the preview server npx starts is stopped with it.
  detached: true,
});
await new Promise((r) => setTimeout(r, 2500));

function workflow(n) {
  let y = 'id: big\nsteps:\n';
  const cols = 25;
  for (let i = 0; i < n; i++) {
    const x = (i % cols) * 260;
    const row = Math.floor(i / cols);
    y += `  - id: s${i}\n    kind: template\n    template: "step ${i}"\n    position: {x: ${x}, y: ${row * 160}}\n`;
    if (i >= cols) y += `    needs: [s${i - cols}]\n`;
  }
  return y;
}

const browser = await chromium.launch({
  executablePath: process.env.NEXUS_CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.getByTestId('canvas').locator('.react-flow__node').first().waitFor();
  const t0 = Date.now();
  await page.evaluate(async (text) => window.nexus.editor.getState().load(null, text), workflow(N));
  await page.getByTestId('node-s0').waitFor({ state: 'attached' });
  const openMs = Date.now() - t0;

  const measure = async (label, action) => {
    await page.evaluate(() => {
      window.__frames = [];
      let last = performance.now();
      const tick = (t) => {
        window.__frames.push(t - last);
        last = t;
        if (window.__recording) requestAnimationFrame(tick);
      };
      window.__recording = true;
      requestAnimationFrame(tick);
    });
    await action();
    const frames = await page.evaluate(() => {
      window.__recording = false;
      return window.__frames.slice(1);
    });
    frames.sort((a, b) => a - b);
    const p = (q) => frames[Math.min(frames.length - 1, Math.floor(q * frames.length))].toFixed(1);
    console.log(JSON.stringify({ bench: 'canvas', nodes: N, action: label, frames: frames.length, p50_ms: Number(p(0.5)), p95_ms: Number(p(0.95)), max_ms: Number(p(1)) }));
  };

  const box = await page.getByTestId('canvas').boundingBox();
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  // Zoom out as far as the editor allows (the heaviest view: the most nodes rendered).
  await page.getByTestId('canvas').locator('.react-flow__controls-fitview').click();
  await page.waitForTimeout(300);
  const rendered = await page.getByTestId('canvas').locator('.react-flow__node').count();
  console.log(JSON.stringify({ bench: 'canvas', nodes: N, rendered_after_fit_view: rendered }));
  await measure('pan', async () => {
    await page.mouse.move(cx, cy);
    await page.mouse.down();
    for (let i = 0; i < 60; i++) await page.mouse.move(cx + i * 5, cy + i * 3);
    await page.mouse.up();
  });
  await measure('zoom (wheel in and out)', async () => {
    await page.mouse.move(cx, cy);
    for (let i = 0; i < 20; i++) await page.mouse.wheel(0, -120);
    for (let i = 0; i < 20; i++) await page.mouse.wheel(0, 120);
  });
  const heap = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? 0);
  console.log(JSON.stringify({ bench: 'canvas', nodes: N, open_ms: openMs, js_heap_mb: Math.round(heap / 1e6) }));
} finally {
  await browser.close();
  process.kill(-server.pid);
}
