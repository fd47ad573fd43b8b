// Drives the platform in headless Chromium (Debian's, never a downloaded
// one) as a user would, and saves a screenshot of each step. Run by the Go
// test TestBrowser (platform/browser_test.go), which starts the platform
// and uploads a run first.
//
//   node test/browser.mjs signin BASE_URL OUT_DIR   (prints {"secret": …})
//   node test/browser.mjs browse BASE_URL RUN_ID OUT_DIR
//   node test/browser.mjs moderate BASE_URL RUN_ID OUT_DIR   (LEM_SESSION: a moderator's session cookie)
//   node test/browser.mjs shots BASE_URL RUN_ID OUT_DIR   (the leaderboard and a run's page, nothing checked: for docs/validation)
//   node test/browser.mjs jobs BASE_URL - OUT_DIR   (LEM_SESSION: a user's session cookie; LEM_JOB_YAML: the experiment)
//   node test/browser.mjs remote-job BASE_URL - OUT_DIR   (LEM_JOB_YAML; a real lem web and lem worker: cmd/lem's TestBrowserRemoteJob)
import { chromium } from 'playwright-core';

const mode = process.argv[2];
const [base, runID, out] = mode === 'signin' ? [process.argv[3], '', process.argv[4]] : process.argv.slice(3);
const fail = (msg) => { console.error('FAIL: ' + msg); process.exitCode = 1; };
const browser = await chromium.launch({
  executablePath: process.env.LEM_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--headless', '--disable-background-networking'],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const errors = [];
page.on('pageerror', (e) => errors.push(e.message));
// Failed requests to the platform (the provider's own pages are not ours).
page.on('response', async (r) => {
  if (r.url().startsWith(base) && r.status() >= 400) errors.push(`${r.status()} ${r.url()}: ${(await r.text().catch(() => '')).slice(0, 300)}`);
});
const step = async (name, f) => {
  try { await f(); } catch (e) { fail(`${name}: ${e.message}`); }
  await page.screenshot({ path: `${out}/${name}.png` });
};
// signIn goes through the OpenID Connect provider's own login page (the
// tests' provider: testenv.OIDC) as its first user.
const signIn = async () => {
  await page.goto(base + '/');
  await page.click('a.signin:has-text("Lab login")');
  await page.waitForSelector('#username');
  await page.fill('#username', 'test-user@127.0.0.1');
  await page.fill('#password', 'verysecure');
};

if (mode === 'shots') {
  await step('leaderboard', async () => {
    await page.goto(base + '/?workload=*');
    await page.waitForSelector('table.board tbody tr');
  });
  await step('run', async () => {
    await page.goto(base + '/runs/' + encodeURIComponent(runID));
    await page.waitForSelector('.timeline canvas', { timeout: 30000 });
  });
  await browser.close();
  console.log('{}');
  process.exit();
}

if (mode === 'remote-job') {
  // Sign in, build the experiment in the form, submit and confirm, watch
  // it run on a real worker, open the verified run.
  await step('remote-signin', async () => {
    await signIn();
    await page.click('button[type=submit]');
    await page.waitForSelector('.account .who');
  });
  await step('remote-builder', async () => {
    await page.click('#nav-jobs');
    await page.waitForSelector('#job-form [data-path="backend.kind"]');
    await page.selectOption('#job-profile', 'sim');
    // YAML typed in: the form follows it.
    await page.fill('#job-yaml', process.env.LEM_JOB_YAML);
    await page.waitForFunction(() => document.querySelector('[data-path="workload.requests"]')?.value === '40', null, { timeout: 10000 });
    if (await page.inputValue('[data-path="backend.model"]') !== 'tiny') throw new Error('the form did not take the model from the YAML');
    // The form changed: the YAML follows it, and the check runs again.
    await page.fill('[data-path="workload.requests"]', '24');
    await page.waitForFunction(() => document.querySelector('#job-yaml')?.value.includes('requests: 24'), null, { timeout: 5000 });
    // A host setting is not in the form (the worker chooses ports).
    if (await page.$('[data-path="backend.port"]')) throw new Error('the form offers backend.port');
    await page.waitForSelector('#job-check .estimate');
    if (await page.isDisabled('#job-submit')) throw new Error('submit disabled for a good file');
  });
  await step('remote-estimate', async () => {
    await page.click('#job-submit');
    await page.waitForSelector('#job-confirm');
  });
  await step('remote-live', async () => {
    await page.click('#job-confirm');
    await page.waitForFunction(() => /\/ 24/.test(document.querySelector('#job-live')?.textContent ?? ''), null, { timeout: 120000 });
  });
  await step('remote-done', async () => {
    await page.waitForFunction(() => document.querySelector('#job-state')?.textContent.startsWith('succeeded'), null, { timeout: 240000 });
    await page.waitForSelector('#job-runs a.runlink');
  });
  await step('remote-run', async () => {
    await page.click('#job-runs a.runlink');
    await page.waitForSelector('.badges .v-verified');
    const meta = await page.textContent('.runmeta:has(.badges)');
    if (!meta.includes('submitted by oidc:')) throw new Error(`run page: ${meta}`);
  });
  await browser.close();
  if (errors.length) fail('page errors: ' + errors.join('; '));
  console.log('{}');
  process.exit();
}

if (mode === 'jobs') {
  // The config builder checks as the user types; a broken file shows its
  // problems, a good one its estimate; submitted and confirmed, the job's
  // page shows its live progress to the end.
  await page.context().addCookies([{ name: 'lem_session', value: process.env.LEM_SESSION, url: base }]);
  await step('notifications', async () => {
    await page.goto(base + '/tokens');
    await page.waitForSelector('#hook-form');
    await page.fill('#hook-url', process.env.LEM_HOOK_URL);
    await page.click('#hook-form button[type=submit]');
    await page.waitForSelector('#hook-secret');
    if (!(await page.textContent('#hook-secret')).startsWith('whsec_')) throw new Error('no webhook secret shown');
  });
  await step('jobs-builder', async () => {
    await page.goto(base + '/');
    await page.click('#nav-jobs');
    await page.waitForSelector('#job-yaml');
    await page.selectOption('#job-profile', 'sim');
    await page.fill('#job-yaml', 'backend: {kind: vllm, model: m, command: [sh]}\nworkload: {requests: many}\n');
    // (choosing the profile checked the empty file first: wait for this file's answer)
    await page.waitForFunction(() => document.querySelector('#job-check')?.textContent.includes('workload.requests'), null, { timeout: 10000 });
    await page.fill('#job-yaml', process.env.LEM_JOB_YAML);
    await page.waitForSelector('#job-check .estimate');
    if (await page.isDisabled('#job-submit')) throw new Error('submit disabled for a good file');
    await page.click('#job-submit');
    await page.waitForSelector('#job-confirm');
  });
  await step('job-live', async () => {
    await page.click('#job-confirm');
    await page.waitForSelector('#job-live dd');
    await page.waitForFunction(() => document.querySelector('#job-state')?.textContent.startsWith('succeeded'), null, { timeout: 30000 });
    const liveText = await page.textContent('#job-live');
    if (!liveText.includes('5 / 5') || !liveText.includes('W')) throw new Error(`live progress: ${liveText}`);
    const runs = await page.textContent('#job-runs');
    if (!runs.includes('Took')) throw new Error(`job end: ${runs}`);
  });
  await step('notification-log', async () => {
    await page.goto(base + '/tokens');
    await page.waitForSelector('#hooks');
    await page.waitForFunction(async () => {
      document.querySelector('#hooks button')?.click();
      await new Promise((r) => setTimeout(r, 300));
      return document.querySelector('#hook-log td.check-pass')?.textContent.includes('delivered');
    }, null, { timeout: 20000, polling: 500 });
  });
  await browser.close();
  if (errors.filter((e) => !e.startsWith('422 ')).length) fail('page errors: ' + errors.join('; '));
  console.log('{}');
  process.exit();
}

if (mode === 'moderate') {
  // A moderator decides on a held submission in the UI; it reaches the
  // leaderboard only when approved.
  await page.context().addCookies([{ name: 'lem_session', value: process.env.LEM_SESSION, url: base }]);
  const onBoard = async () => {
    await page.goto(base + '/?workload=*');
    await page.waitForSelector('table.board');
    return (await page.$$eval('table.board tbody tr', (rs) => rs.map((r) => r.getAttribute('data-run')))).includes(runID);
  };
  await step('moderation-queue', async () => {
    if (await onBoard()) throw new Error('a held run is on the leaderboard');
    await page.click('#nav-moderation');
    await page.waitForSelector(`section.submission[data-run="${runID}"]`);
    const proposal = await page.textContent('section.proposal');
    if (!proposal.includes('NVIDIA B200') || !proposal.includes('1,000 W')) throw new Error(`proposed profile: ${proposal}`);
    const report = await page.textContent(`section.submission[data-run="${runID}"] table.report`);
    if (!report.includes('recomputed')) throw new Error(`the queue shows no verification report: ${report}`);
    // Rejecting without a reason is refused, and says why.
    await page.click(`section.submission[data-run="${runID}"] button.reject`);
    await page.waitForSelector(`section.submission[data-run="${runID}"] .error`);
    const msg = await page.textContent(`section.submission[data-run="${runID}"] .error`);
    if (!msg.includes('needs a reason')) throw new Error(`reject without a reason: ${msg}`);
    await page.fill(`section.submission[data-run="${runID}"] textarea`, 'state the server version in the run notes');
    await page.click(`section.submission[data-run="${runID}"] button.changes`);
    await page.waitForSelector(`section.submission[data-run="${runID}"] ul.decisions li`);
  });
  await step('moderation-approved', async () => {
    await page.click(`section.submission[data-run="${runID}"] button.approve`);
    await page.waitForSelector('#queue .notice');
    // The page draws the queue, then asks for the audit log.
    await page.waitForFunction(() => document.querySelectorAll('#audit tbody tr').length >= 2);
    const log = await page.$$eval('#audit tbody tr', (rs) => rs.map((r) => r.textContent));
    if (log.length !== 2 || !log[0].includes('approved') || !log[1].includes('state the server version')) throw new Error(`audit log: ${log}`);
    if (!(await onBoard())) throw new Error('the approved run is not on the leaderboard');
  });
  await step('profile-accepted', async () => {
    // The unknown board becomes a profile with its datasheet's figures.
    await page.click('#nav-moderation');
    await page.waitForSelector('section.proposal .p-mem');
    await page.fill('section.proposal .p-mem', '180');
    await page.fill('section.proposal input[id^="pr-"]', 'B200 SXM datasheet: 1000 W, 180 GB');
    await page.click('section.proposal button.approve');
    await page.waitForFunction(() => /Profile b200: NVIDIA B200, 180 GB, 1,000 W/.test(document.querySelector('section.proposal')?.textContent ?? ''), null, { timeout: 10000 });
  });
  await browser.close();
  // The refusal of a reasonless rejection is a 400 the page shows: expected.
  const unexpected = errors.filter((e) => !e.startsWith('400 ') || !e.includes('/api/moderation/'));
  if (unexpected.length) fail('page errors: ' + unexpected.join('; '));
  console.log('{}');
  process.exit();
}

if (mode === 'signin') {
  // Sign in at the OpenID Connect provider, make an API token in the UI.
  let secret = null;
  await step('signin-provider', signIn);
  await step('signed-in', async () => {
    await page.click('button[type=submit]');
    await page.waitForSelector('.account .who');
    const who = await page.textContent('.account .who');
    if (!who.includes('user')) throw new Error(`account shows ${who}`);
  });
  await step('tokens', async () => {
    await page.click('a:has-text("API tokens")');
    await page.waitForSelector('#token-form');
    await page.fill('#t-name', 'lab GPU box');
    await page.click('#token-form button[type=submit]');
    await page.waitForSelector('#token-secret');
    secret = (await page.textContent('#token-secret')).trim();
    const rows = await page.$$eval('#tokens tbody tr', (rs) => rs.length);
    if (rows !== 1) throw new Error(`${rows} tokens listed`);
  });
  await browser.close();
  if (errors.length) fail('page errors: ' + errors.join('; '));
  console.log(JSON.stringify({ secret }));
  process.exit();
}

// 1. The leaderboard, and its first contentful paint.
let fcp = null;
await step('leaderboard', async () => {
  await page.goto(base + '/');
  await page.waitForSelector('table.board tbody tr');
  fcp = await page.evaluate(() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null);
  // Two workloads: the page ranks one and says so.
  const notice = await page.textContent('.notice');
  if (!/\d other workloads? are not compared/.test(notice)) throw new Error(`notice: ${notice}`);
});

// 2. Markup in a model name is text, never executed.
await step('leaderboard-all-workloads', async () => {
  await page.selectOption('#f-workload', '*');
  await page.waitForFunction(() => location.search.includes('workload=*') || location.search.includes('workload=%2A'));
  await page.waitForSelector('table.board tbody tr');
  const xss = await page.evaluate(() => window.__xss);
  if (xss !== undefined) throw new Error('a script in a model name ran');
  const rows = await page.$$eval('table.board tbody tr', (rs) => rs.map((r) => r.getAttribute('data-run')));
  if (!rows.includes(runID)) throw new Error(`run ${runID} not on the leaderboard of all workloads: ${rows}`);
  // A legend entry hides and shows its group's points.
  const dots = () => page.$$eval('figure svg circle.dot', (cs) => cs.filter((c) => c.style.display !== 'none').length);
  const before = await dots();
  await page.click('figure:nth-of-type(2) .legend-item');
  const hidden = await dots();
  await page.click('figure:nth-of-type(2) .legend-item');
  if (!(hidden < before) || (await dots()) !== before) throw new Error(`legend toggle: ${before} → ${hidden} → ${await dots()} points`);
  const text = await page.textContent('table.board');
  if (!text.includes('<script>')) throw new Error('the hostile model name is not shown as text');
  // The efficiency scatter is sized by parameters: the run that recorded
  // them is a disc larger than the default marker, the others rings, and
  // the key says so; the table shows the count.
  const eff = await page.$$eval('figure svg', (svgs) => svgs.filter((svg) => svg.querySelector('title')?.textContent.startsWith('Efficiency against throughput')).map((svg) => ({
    key: svg.textContent,
    discs: [...svg.querySelectorAll('circle.dot')].filter((c) => c.getAttribute('fill') !== 'none').map((c) => +c.getAttribute('r')),
    rings: svg.querySelectorAll('circle.dot[fill="none"]').length,
  }))[0] ?? { key: 'no efficiency scatter', discs: [], rings: 0 });
  if (!eff.key.includes('area: parameters') || !eff.key.includes('not recorded') || eff.discs.length !== 1 || !(eff.discs[0] > 6) || eff.rings < 2) {
    throw new Error(`efficiency scatter sizes: ${JSON.stringify(eff)}`);
  }
  if (!text.includes('8.03 B')) throw new Error('the parameter count is not in the table');
});

// 3. Sorting: by J/token descending through the header button; the URL holds it.
await step('leaderboard-sorted', async () => {
  await page.click('th[aria-sort] button:has-text("J/token")');
  await page.waitForFunction(() => location.search.includes('order=desc'));
  await page.waitForSelector('th[aria-sort=descending]');
  const col = await page.$$eval('table.board thead th', (ths) => ths.findIndex((th) => th.textContent.startsWith('J/token')) + 1);
  const vals = await page.$$eval(`table.board tbody tr td:nth-child(${col})`, (tds) => tds.map((t) => parseFloat(t.textContent)));
  const known = vals.filter((v) => !Number.isNaN(v));
  if (col < 1 || known.length < 2) throw new Error(`J/token column ${col}: ${vals}`);
  for (let i = 1; i < known.length; i++) if (known[i] > known[i - 1]) throw new Error(`not descending: ${vals}`);
  // Reload: the state comes back from the URL.
  await page.reload();
  await page.waitForSelector('th[aria-sort=descending]');
});

// 3b. Two runs compared: chosen on the leaderboard, the link shareable.
await step('compare', async () => {
  await page.goto(base + '/?workload=*');
  await page.waitForSelector('table.board tbody tr');
  const picks = await page.$$('tr:not([data-run=hostile]):not([data-run=sized-example]) input.pick');
  if (picks.length < 2) throw new Error(`${picks.length} runs to choose from`);
  await picks[0].check();
  await picks[1].check();
  await page.click('#compare-link');
  await page.waitForSelector('#compare');
  const url = page.url();
  if (!url.includes('/compare?runs=') || url.split(',').length !== 2) throw new Error(`compare URL ${url}`);
  const charts = await page.$$eval('svg.chart', (s) => s.length);
  if (charts !== 4) throw new Error(`${charts} charts on the comparison`);
  // The SVG export produces a file.
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('figure:first-of-type .export button:has-text("SVG")')]);
  if (!dl.suggestedFilename().endsWith('.svg')) throw new Error(`download ${dl.suggestedFilename()}`);
});

// 4. Filtering by backend, verified only.
await step('leaderboard-filtered', async () => {
  await page.goto(base + '/?workload=*&sort=j_per_token&order=desc');
  await page.waitForSelector('table.board tbody tr');
  await page.check('#f-verified');
  await page.waitForFunction(() => location.search.includes('verified=1'));
  await page.waitForSelector('table.board tbody tr');
  const badges = await page.$$eval('table.board tbody tr', (rs) => rs.map((r) => r.querySelector('.badge')?.textContent));
  if (badges.length === 0 || badges.some((b) => b !== 'verified')) throw new Error(`verified only shows ${badges}`);
});

// 5. The run page, opened from its row.
await step('run', async () => {
  await page.click(`tr[data-run="${runID}"] a.runlink`);
  await page.waitForSelector('#timeline-plot canvas');
  await page.waitForFunction(() => document.querySelector('.tlstatus')?.textContent.includes('power samples'));
  const h = await page.textContent('h1');
  if (!h.includes('NVIDIA H200')) throw new Error(`heading ${h}`);
  const checks = await page.$$eval('section[aria-labelledby=verification] tbody tr', (rs) => rs.length);
  if (checks < 5) throw new Error(`${checks} verification checks shown`);
});

// 6. Zoom the timeline into the middle of a cycle, down to samples and tokens.
await step('run-timeline-zoomed', async () => {
  const status0 = await page.textContent('.tlstatus');
  const box = await (await page.$('#timeline-plot .u-over')).boundingBox();
  const y = box.y + box.height / 2;
  // Cycle 2 runs in the last tenth of the H200 run.
  await page.mouse.move(box.x + box.width * 0.945, y);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.965, y, { steps: 8 });
  await page.mouse.up();
  await page.waitForFunction((s0) => { const t = document.querySelector('.tlstatus').textContent; return t !== s0 && !t.startsWith('loading'); }, status0);
  const status = await page.textContent('.tlstatus');
  if (!status.includes('every sample') || !status.includes('token arrivals')) throw new Error(`zoomed status: ${status}`);
  await (await page.$('.timeline')).screenshot({ path: `${out}/run-timeline-zoomed-plot.png` });
});

await browser.close();
if (errors.length) fail('page errors: ' + errors.join('; '));
console.log(JSON.stringify({ first_contentful_paint_ms: fcp }));
