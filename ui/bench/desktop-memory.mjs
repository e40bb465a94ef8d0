// The desktop app's idle memory: starts the real app (as the window test does), opens
// the first example, waits 10 s, then sums the proportional set size (PSS, from
// /proc/<pid>/smaps_rollup) of the app process and its WebKit processes. Linux only.
// Run: xvfb-run -a node ui/bench/desktop-memory.mjs (NEXUS_APP = the built binary).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { By, until } from 'selenium-webdriver';
import { launch } from '../e2e-desktop/driver.mjs';

function pss(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').match(/^Pss:\s+(\d+) kB/m);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function tree(root) {
  const out = [root];
  for (let i = 0; i < out.length; i++) {
    try {
      const kids = execFileSync('pgrep', ['-P', String(out[i])], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
      out.push(...kids.map(Number));
    } catch {
      // no children
    }
  }
  return out;
}

const { driver, stop } = await launch();
try {
  await driver.wait(until.elementLocated(By.css('[data-testid="canvas"] .react-flow__node')), 60_000);
  await driver.sleep(10_000);
  const app = Number(execFileSync('pgrep', ['-n', '-f', process.env.NEXUS_APP], { encoding: 'utf8' }).trim());
  const procs = tree(app).map((pid) => {
    const name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    return { pid, name, kb: pss(pid) };
  });
  for (const p of procs) console.log(`${p.name.padEnd(24)} ${(p.kb / 1024).toFixed(1)} MB`);
  const total = procs.reduce((n, p) => n + p.kb, 0);
  console.log(`idle memory (PSS, app + WebKit processes): ${(total / 1024).toFixed(1)} MB`);
} finally {
  await stop();
}
