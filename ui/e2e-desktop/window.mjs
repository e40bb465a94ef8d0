// The real desktop window end to end: open an example workflow from the workflows
// folder, run it on the embedded model, see every node reach "succeeded" and the output
// in the run panel; then run document-report.yaml, whose file input's default lives in
// the workflows folder (the app starts elsewhere), twice, and open the run diff of the two
// runs; then save a workflow with a `file` trigger and a desktop notification into the
// workflows folder while the app is open, drop a file into its inbox, and receive the
// run's notification on the session bus (tests/servers/notification_server.py, a
// Desktop Notifications server); save screenshots of the window to target/desktop-e2e/
// (window.png: the main screen; run-diff.png: the diff; window-end.png: the end, or
// window.png on a failure). Run by scripts/test-desktop.sh (under Xvfb and
// dbus-run-session).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { By, until } from 'selenium-webdriver';
import { launch, repo } from './driver.mjs';

const byId = (id) => By.css(`[data-testid="${id}"]`);
const shots = path.join(repo, 'target', 'desktop-e2e');
mkdirSync(shots, { recursive: true });

const started = Date.now();
const log = (what) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${what}`);
/** Captures the window from the X server (see the note at the end). */
function shot(name) {
  try {
    execFileSync('import', ['-window', 'root', path.join(shots, name)], { timeout: 30_000 });
    console.log(`screenshot: ${path.join(shots, name)}`);
  } catch (e) {
    console.error(`no screenshot ${name}: ${e}`);
  }
}
/** Waits until the title (found afresh each time) names `file`. */
async function titled(driver, file) {
  let seen = '';
  try {
    await driver.wait(async () => {
      const titles = await driver.findElements(byId('title'));
      // textContent, not getText: WebKitWebDriver's visibility atom reports the
      // toolbar's ellipsised title as not displayed, so its text reads as empty.
      seen = (await Promise.all(titles.map((t) => driver.executeScript('return arguments[0].textContent', t)))).join(' | ');
      return seen.includes(file);
    }, 10_000);
  } catch (e) {
    throw new Error(`the title does not name ${file}: it shows "${seen}" (${e})`);
  }
}
// The desktop notification server, on this session bus, before the app starts.
if (!process.env.DBUS_SESSION_BUS_ADDRESS) throw new Error('run inside a D-Bus session bus (dbus-run-session)');
const notes = path.join(shots, 'notifications.jsonl');
writeFileSync(notes, '');
const notifier = spawn('/usr/bin/python3', [path.join(repo, 'tests/servers/notification_server.py'), '--log', notes], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
await new Promise((resolve, reject) => {
  notifier.stdout.on('data', (d) => String(d).includes('ready') && resolve());
  notifier.on('exit', (code) => reject(new Error(`the notification server exited (${code})`)));
});
const { driver, home, stop } = await launch();
/** Polls `check` every 200 ms until it holds, at most `ms`. */
async function waitFor(check, ms, what) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
let windowClosed = false;
log('window open');
let failed = null;
try {
  await driver.wait(until.elementLocated(By.css('[data-testid="canvas"] .react-flow__node')), 60_000);
  // Open the example from the workflows folder (listed by the shell's command).
  await driver.findElement(byId('open')).click();
  const entry = await driver.wait(until.elementLocated(byId('open-feature-spec.yaml')), 20_000);
  await entry.click();
  await titled(driver, 'feature-spec.yaml');
  log('feature-spec.yaml open');
  const ids = ['requirements', 'architecture', 'test_plan', 'summary'];
  for (const id of ids) await driver.wait(until.elementLocated(byId(`node-${id}`)), 10_000);

  // Run it with the default input.
  await driver.findElement(byId('run')).click();
  await driver.wait(until.elementLocated(byId('run-start')), 10_000).click();
  const status = await driver.wait(until.elementLocated(byId('run-status')), 30_000);
  // Tokens stream into a node while it runs.
  await driver.wait(until.elementLocated(byId('tokens-requirements')), 120_000);
  log('tokens streaming');
  await driver.wait(until.elementTextIs(status, 'succeeded'), 600_000);
  log('run succeeded');
  // Every node in view (nodes outside it are not rendered), drawn in full detail.
  await driver.findElement(By.css('.react-flow__controls-fitview')).click();
  await driver.sleep(500);
  for (const id of ids) {
    assert.equal(await driver.findElement(byId(`status-${id}`)).getText(), 'succeeded', `node ${id}`);
    const row = await driver.findElement(byId(`run-row-${id}`)).getText();
    assert.match(row, /succeeded/, `run panel row ${id}`);
  }
  // The output is in the run panel's Outputs tab (not the one shown): read as textContent.
  const output = await driver.executeScript('return arguments[0].textContent', await driver.findElement(byId('run-output-summary')));
  assert.ok(output.trim().length > 0, 'the summary step has an output in the run panel');
  // The stored record: model and why, tokens.
  const cell = await driver.findElement(By.css('[data-testid="run-row-summary"] td'));
  await driver.executeScript('arguments[0].scrollIntoView({block: "center"})', cell);
  await cell.click();
  const model = await driver.wait(until.elementLocated(byId('detail-model')), 30_000);
  await driver.wait(until.elementTextContains(model, 'embedded:'), 30_000);
  const tokens = await driver.findElement(byId('detail-tokens')).getText();
  assert.match(tokens, /\d+ in, \d+ out/);
  // The content security policy holds: the web view cannot reach the network itself.
  const violation = await driver.executeAsyncScript(
    'const done = arguments[arguments.length - 1]; let v = null;' +
      'document.addEventListener("securitypolicyviolation", (e) => { v = e.violatedDirective; });' +
      'fetch("http://127.0.0.1:9/x").catch(() => {}).finally(() => setTimeout(() => done(v), 300));',
  );
  assert.equal(violation, 'connect-src', 'the CSP refuses a fetch from the web view');
  console.log(`desktop window: 4 steps succeeded on ${await model.getText()}; summary output: ${output.slice(0, 80)}…`);

  // A workflow with a `file` input whose default is relative to the workflows folder
  // (data/market-notes.txt, written there with the examples): the app resolves it there,
  // not in the folder the app was started from.
  await driver.findElement(byId('open')).click();
  await driver.wait(until.elementLocated(byId('open-document-report.yaml')), 20_000).click();
  await titled(driver, 'document-report.yaml');
  await driver.findElement(byId('run')).click();
  const doc = await driver.wait(until.elementLocated(byId('input-document')), 10_000);
  assert.equal(await doc.getAttribute('value'), 'data/market-notes.txt');
  await driver.findElement(byId('run-start')).click();
  await driver.wait(until.elementLocated(byId('tokens-key_points')), 120_000);
  log('document-report running');
  const report = await driver.wait(until.elementLocated(byId('run-output-report')), 600_000);
  // In the Outputs tab (not the one shown): read as textContent.
  await driver.wait(
    async () => String(await driver.executeScript('return arguments[0].textContent', report)).includes('Report for'),
    60_000,
    'the report output says "Report for"',
  );
  await driver.wait(until.elementTextIs(await driver.findElement(byId('run-status')), 'succeeded'), 60_000);
  log('document-report succeeded');
  // The main screen in the editor's design, then the run diff of two runs of one workflow:
  // document-report once more (its steps' outputs come from the cache), both ticked in
  // the history and compared.
  shot('window.png');
  const firstRun = await driver.findElement(byId('run-id')).getText();
  await driver.findElement(byId('run')).click();
  await driver.wait(until.elementLocated(byId('run-start')), 10_000).click();
  await driver.wait(async () => {
    const id = await driver.findElement(byId('run-id')).getText();
    return id !== firstRun && id !== 'starting' && (await driver.findElement(byId('run-status')).getText()) === 'succeeded';
  }, 600_000);
  await driver.findElement(byId('history')).click();
  await driver.wait(until.elementLocated(By.css('[data-testid="history-dialog"] tbody tr')), 20_000);
  const rows = [];
  for (const row of await driver.findElements(By.css('[data-testid="history-dialog"] tbody tr'))) {
    if ((await row.getText()).includes('document-report')) rows.push(row);
  }
  assert.ok(rows.length >= 2, 'two runs of document-report in the history');
  for (const row of rows.slice(0, 2)) await row.findElement(By.css('[role="checkbox"]')).click();
  await driver.findElement(byId('history-compare')).click();
  const summary = await driver.wait(until.elementLocated(byId('run-diff-summary')), 20_000);
  assert.match(await summary.getText(), /\d+ of \d+ steps changed/);
  log(`run diff: ${await summary.getText()}`);
  shot('run-diff.png');
  await driver.findElement(byId('history-dialog-close')).click();

  // A trigger while the app is open: a workflow with a `file` trigger, saved into the
  // workflows folder, is armed by the folder watcher (seen through the shell's
  // list_triggers command); a file dropped into its inbox starts a run, and the run's
  // success arrives as a desktop notification.
  const workflows = path.join(home, 'workflows');
  mkdirSync(path.join(workflows, 'inbox'), { recursive: true });
  writeFileSync(
    path.join(workflows, 'watch.yaml'),
    'id: watch\ninputs:\n  path: {type: string}\ntriggers:\n  - kind: file\n    paths: [inbox]\n    debounce_ms: 100\n' +
      'notifications:\n  - on: [succeeded]\n    desktop: true\nsteps:\n  - id: seen\n    kind: template\n    template: "saw {{ inputs.path }}"\n',
  );
  const listTriggers = () =>
    driver.executeAsyncScript(
      'const done = arguments[arguments.length - 1];' +
        'window.__TAURI_INTERNALS__.invoke("list_triggers").then((t) => done(JSON.stringify(t)), (e) => done("error: " + JSON.stringify(e)));',
    );
  let triggers = '';
  await driver.wait(async () => {
    triggers = await listTriggers();
    return triggers.includes('"file":"watch.yaml"') && /"file":"watch.yaml"[^}]*"armed":true/.test(triggers);
  }, 30_000, 'the file trigger of watch.yaml is armed').catch((e) => {
    throw new Error(`${e.message}; list_triggers: ${triggers}`);
  });
  log('file trigger armed');
  writeFileSync(path.join(workflows, 'inbox', 'report.txt'), 'quarterly numbers');
  let received = [];
  await driver.wait(() => {
    received = existsSync(notes) ? readFileSync(notes, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
    return received.some((n) => n.summary === 'watch: run succeeded');
  }, 60_000, 'the run of the file trigger is shown as a desktop notification').catch((e) => {
    throw new Error(`${e.message}; received: ${JSON.stringify(received)}`);
  });
  const note = received.find((n) => n.summary === 'watch: run succeeded');
  assert.match(note.body, /^the run succeeded after \d+\.\d s$/);
  log(`desktop notification: ${note.summary}: ${note.body}`);

  // Closing the window while a trigger is armed keeps the app in the tray: it says so in
  // a notification, and the trigger still starts runs with no window open.
  const notified = (summary) =>
    readFileSync(notes, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((n) => n.summary === summary).length;
  await driver.executeScript('window.__TAURI_INTERNALS__.invoke("plugin:window|destroy", { label: "main" }).catch(() => {});').catch(() => {});
  await waitFor(() => notified('Nexus keeps running') === 1, 30_000, 'the app says it keeps running in the tray');
  log('window closed; the app keeps running in the tray');
  writeFileSync(path.join(workflows, 'inbox', 'second.txt'), 'more numbers');
  await waitFor(() => notified('watch: run succeeded') === 2, 60_000, 'the trigger starts a run with the window closed');
  log('a run started by the trigger with no window open');
  windowClosed = true;
} catch (e) {
  failed = e;
} finally {
  // WebKitWebDriver's own screenshot command hangs under Xvfb (WebKitGTK 2.50), so the
  // window is captured from the X server with ImageMagick's `import`.
  shot(failed ? 'window.png' : 'window-end.png');
  await stop().catch((e) => console.error(`closing the session: ${e}`));
  // The app outlived its window (in the tray): end it.
  try {
    execFileSync('pkill', ['-f', process.env.NEXUS_APP]);
  } catch {
    if (windowClosed) console.error('the app was no longer running after the session');
  }
  notifier.kill();
}
if (failed) {
  console.error(failed);
  process.exit(1);
}
// tauri-driver may outlive a session whose window was closed.
process.exit(0);
