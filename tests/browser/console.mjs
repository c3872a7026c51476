// Browser check of the parkhub web console, run by the Rust test harness from the repo root:
//   npm ci --prefix tests/browser && node tests/browser/console.mjs
// Environment:
//   PARKHUB_URL           base URL of a running hub, e.g. http://127.0.0.1:8080 (required)
//   PARKHUB_USER          console user with the operator (or admin) role (required)
//   PARKHUB_PASSWORD      its password (required)
//   PARKHUB_TRIGGER       URL; an HTTP POST to it raises a critical fire alarm on PARKHUB_ALARM_DEVICE (required)
//   PARKHUB_ALARM_DEVICE  the device id of that alarm (required)
//   PARKHUB_CHARGER_CONTROL  base URL driving a simulated OCPP charger: POST {url}/start/{connector}/{id_tag},
//                         {url}/stop/{connector}, {url}/fault/{connector} (optional: without it step g is skipped)
//   PARKHUB_CHARGER_DEVICE   the device id of that charger (two connectors, idle at the start)
//   PARKHUB_EBIKE_DEVICE     an e-bike station's device id, checked on the charging page when set
//   PARKHUB_VIEWER_USER, PARKHUB_VIEWER_PASSWORD  a viewer: the charging page shows it no command (optional)
//   SCREENSHOT_DIR        where the screenshots go (default: tests/browser/screenshots)
//   CHROMIUM              the browser binary (default /usr/bin/chromium)
//   STEP_TIMEOUT_MS       the default wait for one page condition (default 15000)
// Prints one line per passed step; exits 0 when all pass, 1 on the first failure (with a
// screenshot named fail-<step>.png).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

class StepError extends Error {}

function env(name, fallback) {
  const v = process.env[name];
  if (v != null && v !== '') return v;
  if (fallback !== undefined) return fallback;
  throw new StepError(`environment variable ${name} is not set`);
}
function check(cond, msg) {
  if (!cond) throw new StepError(msg);
}

async function main() {
  const base = env('PARKHUB_URL').replace(/\/+$/, '');
  const user = env('PARKHUB_USER');
  const password = env('PARKHUB_PASSWORD');
  const trigger = env('PARKHUB_TRIGGER');
  const alarmDevice = env('PARKHUB_ALARM_DEVICE');
  const chargerControl = env('PARKHUB_CHARGER_CONTROL', '').replace(/\/+$/, '');
  const chargerDevice = chargerControl ? env('PARKHUB_CHARGER_DEVICE') : '';
  const ebikeDevice = env('PARKHUB_EBIKE_DEVICE', '');
  const viewerUser = env('PARKHUB_VIEWER_USER', '');
  const viewerPassword = viewerUser ? env('PARKHUB_VIEWER_PASSWORD') : '';
  const shots = env('SCREENSHOT_DIR', path.join(here, 'screenshots'));
  const executablePath = env('CHROMIUM', '/usr/bin/chromium');
  const timeout = Number(env('STEP_TIMEOUT_MS', '15000'));
  fs.mkdirSync(shots, { recursive: true });

  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required'],
  });
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, locale: 'zh-CN' });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);

  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    // Failed loads (the 401 of /me before login, the wrong password) are expected noise.
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) console.log(`  (browser console error: ${m.text()})`);
  });

  const shot = (name) => page.screenshot({ path: path.join(shots, name), fullPage: false });
  const byTestId = (id) => page.locator(`[data-testid="${id}"]`);
  const noPageErrors = (step) => check(!pageErrors.length, `${step}: uncaught error in the page: ${pageErrors.join(' | ')}`);
  /** fetch() through the page, so the session cookie goes along. */
  const pageFetch = (url) => page.evaluate(async (u) => {
    const r = await fetch(u, { credentials: 'same-origin' });
    const text = await r.text();
    return { status: r.status, type: r.headers.get('content-type') || '', text };
  }, url);
  const pageJson = async (url, what) => {
    const r = await pageFetch(url);
    check(r.status === 200, `${what}: GET ${url} answered ${r.status}: ${r.text.slice(0, 200)}`);
    try { return JSON.parse(r.text); } catch { throw new StepError(`${what}: GET ${url} is not JSON: ${r.text.slice(0, 200)}`); }
  };

  let step = 'start';
  let passes = 0;
  const passed = (msg) => { passes += 1; console.log(`ok - ${msg}`); };
  try {
    // ---- a. login ------------------------------------------------------------------------------
    step = 'a-login';
    await page.goto(`${base}/`);
    await byTestId('login-form').waitFor({ state: 'visible' }).catch(() => {
      throw new StepError('a: the login form (data-testid=login-form) did not show at start without a session');
    });
    await byTestId('login-user').fill(user);
    await byTestId('login-password').fill(`${password}-wrong`);
    await byTestId('login-submit').click();
    await byTestId('login-error').waitFor({ state: 'visible' }).catch(() => {
      throw new StepError('a: a wrong password did not show login-error');
    });
    const errText = (await byTestId('login-error').innerText()).trim();
    check(errText.length > 0, 'a: login-error is visible but empty');
    await shot('01-login.png');
    await byTestId('login-password').fill(password);
    await byTestId('login-submit').click();
    await byTestId('nav-overview').waitFor({ state: 'visible' }).catch(async () => {
      const e = await byTestId('login-error').isVisible() ? await byTestId('login-error').innerText() : '';
      throw new StepError(`a: login with the right password failed${e ? `: "${e}"` : ''}`);
    });
    await page.waitForFunction(() => {
      const el = document.querySelector('[data-testid="overview-devices-online"]');
      return el && /^\d+$/.test(el.textContent.trim());
    }).catch(() => { throw new StepError('a: the overview shows no device count (overview-devices-online)'); });
    const online = Number(await byTestId('overview-devices-online').innerText());
    const overview = await pageJson('/api/v1/overview', 'a');
    check(overview.devices && overview.devices.total > 0, `a: /api/v1/overview reports no devices: ${JSON.stringify(overview.devices)}`);
    await page.waitForTimeout(300);
    noPageErrors('a');
    await shot('02-overview.png');
    passed(`a: wrong password refused ("${errText}"), logged in as ${user}; overview shows ${online} of ${overview.devices.total} devices online`);

    // ---- b. a live alarm -----------------------------------------------------------------------
    step = 'b-alarm-live';
    await byTestId('nav-alarms').click();
    await page.waitForFunction(() => location.hash.startsWith('#/alarms'));
    await page.locator('#view-alarms').waitFor({ state: 'visible' });
    const rowSel = `[data-testid="alarm-row"][data-device-id="${alarmDevice}"]`;
    const before = await page.$$eval(`${rowSel}[data-state="unacked"]`, (rows) => rows.map((r) => r.dataset.alarmId));
    if (before.length) console.log(`  (note: ${alarmDevice} already had unacknowledged alarm(s) ${before.join(', ')} before the trigger)`);
    await page.evaluate(() => { window.__noReload = 1; });
    const res = await fetch(trigger, { method: 'POST' }).catch((e) => {
      throw new StepError(`b: POST ${trigger} failed: ${e.message}`);
    });
    check(res.ok, `b: POST ${trigger} answered ${res.status}`);
    const alarmId = await page.waitForFunction(({ sel, before }) => {
      const rows = [...document.querySelectorAll(`${sel}[data-state="unacked"]`)];
      const fresh = rows.filter((r) => !before.includes(r.dataset.alarmId));
      const pick = (list) => list.find((r) => r.dataset.severity === 'critical') || list[0];
      const row = pick(fresh) || (before.length ? pick(rows) : null);
      return row ? row.dataset.alarmId : null;
    }, { sel: rowSel, before }, { timeout: 15000 }).then((h) => h.jsonValue()).catch(() => {
      throw new StepError(`b: no unacknowledged alarm row for ${alarmDevice} appeared within 15 s of the trigger (live SSE update)`);
    });
    const noReload = await page.evaluate(() => window.__noReload);
    check(noReload === 1, 'b: the page reloaded (window.__noReload is gone): the alarm must arrive without a reload');
    await byTestId('critical-banner').waitFor({ state: 'visible', timeout: 5000 }).catch(() => {
      throw new StepError('b: the critical alarm did not show critical-banner');
    });
    const row = page.locator(`[data-testid="alarm-row"][data-alarm-id="${alarmId}"]`);
    const severity = await row.getAttribute('data-severity');
    const sound = await byTestId('critical-banner').getAttribute('data-sound');
    noPageErrors('b');
    await shot('03-alarm-live.png');
    passed(`b: alarm ${alarmId} (${severity}) on ${alarmDevice} appeared live without a reload; critical banner shown (sound: ${sound})`);

    // ---- c. acknowledge ------------------------------------------------------------------------
    step = 'c-ack';
    const comment = `browser test ack ${Date.now()}`;
    await row.locator('[data-testid="ack-button"]').click().catch(() => {
      throw new StepError(`c: alarm ${alarmId} has no ack-button (is ${user} an operator?)`);
    });
    await byTestId('ack-comment').fill(comment);
    await byTestId('ack-confirm').click();
    await page.waitForFunction((id) => {
      const r = document.querySelector(`[data-testid="alarm-row"][data-alarm-id="${id}"]`);
      return !r || (r.dataset.state !== 'unacked' && r.dataset.state !== 'rtn_unacked');
    }, alarmId).catch(async () => {
      const state = await row.getAttribute('data-state').catch(() => '?');
      throw new StepError(`c: alarm ${alarmId} still reads data-state="${state}" after the acknowledgement`);
    });
    const stateAfter = (await row.count()) ? await row.getAttribute('data-state') : 'left the active list';
    const bannerGone = await byTestId('critical-banner').waitFor({ state: 'hidden', timeout: 10000 }).then(() => true, () => false);
    if (!bannerGone) {
      const active = await pageJson('/api/v1/alarms?state=active', 'c');
      const others = active.filter((a) => String(a.id) !== String(alarmId) && a.severity === 'critical'
        && (a.state === 'unacked' || a.state === 'rtn_unacked') && !a.suppressed);
      check(others.length > 0, 'c: critical-banner still shows although no critical alarm is left unacknowledged');
      console.log(`  (note: the banner stays for other critical alarms: ${others.map((a) => a.id).join(', ')})`);
    }
    const detail = await pageJson(`/api/v1/alarms/${alarmId}`, 'c');
    const events = Array.isArray(detail.events) ? detail.events : [];
    const ackEvent = events.find((e) => e.event === 'acknowledged');
    check(ackEvent, `c: /api/v1/alarms/${alarmId} has no "acknowledged" event: ${JSON.stringify(events)}`);
    check(ackEvent.comment === comment, `c: the acknowledged event carries comment ${JSON.stringify(ackEvent.comment)}, not ${JSON.stringify(comment)}`);
    // The detail panel shows the transitions, the comment among them.
    if (await row.count()) {
      await row.locator('td.col-message').click();
      await byTestId('alarm-detail').waitFor({ state: 'visible' });
      await page.locator('[data-testid="alarm-detail"] [data-testid="alarm-events"]', { hasText: comment }).waitFor().catch(() => {
        throw new StepError('c: the alarm-detail panel does not list the acknowledgement with its comment');
      });
    }
    noPageErrors('c');
    await shot('04-acked.png');
    if (await byTestId('alarm-detail').isVisible()) await byTestId('detail-close').click();
    passed(`c: alarm ${alarmId} acknowledged with a comment (now ${stateAfter})${bannerGone ? ', banner gone' : ''}; the API lists the acknowledged event with the comment`);

    // ---- d. energy -----------------------------------------------------------------------------
    step = 'd-energy';
    await byTestId('nav-energy').click();
    await page.locator('[data-testid="energy-chart"] canvas').first().waitFor({ state: 'attached' }).catch(() => {
      throw new StepError('d: uPlot drew no canvas into energy-chart');
    });
    const query = await page.evaluate(() => ['by', 'period', 'kind']
      .map((k) => `${k}=${encodeURIComponent(document.querySelector(`[data-testid="energy-${k}"]`).value)}`).join('&'));
    let report = null;
    let nonNull = 0;
    const deadline = Date.now() + 45000;   // a hub that just started may need a minute of meter readings
    for (;;) {
      report = await pageJson(`/api/v1/energy?${query}`, 'd');
      nonNull = (report.series || []).reduce((n, s) => n + (s.values || []).filter((v) => v != null).length, 0);
      if (nonNull > 0 || Date.now() > deadline) break;
      await page.waitForTimeout(3000);
    }
    check(Array.isArray(report.series) && report.series.length > 0, `d: /api/v1/energy?${query} has no series`);
    check(nonNull > 0, `d: /api/v1/energy?${query} has no non-null value in any series after 45 s`);
    await byTestId('energy-refresh').click();
    await page.waitForFunction((n) => {
      const el = document.querySelector('[data-testid="energy-chart"]');
      return el && Number(el.dataset.values) > 0 && el.querySelectorAll('.u-legend .u-series').length >= n + 1 && el.querySelector('canvas');
    }, report.series.length).catch(async () => {
      const info = await byTestId('energy-chart').evaluate((el) => `${el.dataset.series} series, ${el.dataset.values} values, ${el.querySelectorAll('.u-legend .u-series').length} legend entries`);
      throw new StepError(`d: the chart does not show the ${report.series.length} series with data (${info})`);
    });
    const href = await byTestId('energy-csv').getAttribute('href');
    check(href && href.includes('format=csv'), `d: energy-csv links to ${href}, without format=csv`);
    check(await byTestId('energy-csv').getAttribute('download') != null, 'd: energy-csv has no download attribute');
    const csv = await pageFetch(href);
    check(csv.status === 200 && /^ts,/.test(csv.text), `d: ${href} answered ${csv.status} ${csv.type}: ${csv.text.slice(0, 80)}`);
    noPageErrors('d');
    await shot('05-energy.png');
    passed(`d: energy chart drawn with ${report.series.length} series (${nonNull} values, ${report.unit}); CSV link ${href} works`);

    // ---- e. phone ------------------------------------------------------------------------------
    step = 'e-phone';
    await page.setViewportSize({ width: 390, height: 844 });
    await byTestId('nav-overview').click({ timeout: 2000 }).catch(async () => {
      await byTestId('nav-menu').click();
      await byTestId('nav-overview').click();
    });
    await page.waitForFunction(() => location.hash.startsWith('#/overview'));
    const menu = byTestId('nav-menu');
    check(await menu.isVisible(), 'e: at 390 px the navigation does not collapse behind the menu button (nav-menu)');
    check(!(await byTestId('nav-devices').isVisible()), 'e: at 390 px the nav links show although the menu is closed');
    await menu.click();
    await byTestId('nav-devices').waitFor({ state: 'visible' }).catch(() => {
      throw new StepError('e: opening the menu does not show the nav links');
    });
    await byTestId('nav-devices').click();
    await page.locator('[data-testid="device-row"]').first().waitFor({ state: 'visible' }).catch(() => {
      throw new StepError('e: on a phone the devices page shows no device-row');
    });
    check(!(await byTestId('nav-alarms').isVisible()), 'e: the menu does not close after choosing a page');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `e: the devices page is ${overflow} px wider than the 390 px phone screen`);
    noPageErrors('e');
    await shot('06-phone.png');
    passed('e: at 390×844 the nav collapses to a working menu and the devices page fits the screen');

    // ---- f. English ----------------------------------------------------------------------------
    step = 'f-english';
    await page.setViewportSize({ width: 1366, height: 900 });
    await byTestId('nav-alarms').click();
    const langBefore = await page.evaluate(() => document.documentElement.lang);
    if (langBefore !== 'en') await byTestId('lang-toggle').click();
    await page.waitForFunction(() => /Alarms/.test(document.querySelector('[data-testid="nav-alarms"]').textContent)).catch(async () => {
      throw new StepError(`f: after the language toggle nav-alarms reads "${await byTestId('nav-alarms').innerText()}", not "Alarms"`);
    });
    const lang = await page.evaluate(() => document.documentElement.lang);
    check(lang === 'en', `f: <html lang> is ${lang} after switching to English`);
    await page.reload();
    await page.waitForFunction(() => /Alarms/.test(document.querySelector('[data-testid="nav-alarms"]').textContent)).catch(() => {
      throw new StepError('f: the English choice is not remembered after a reload');
    });
    noPageErrors('f');
    await shot('07-english.png');
    await byTestId('lang-toggle').click();   // leave the browser profile in Chinese
    await page.waitForFunction(() => document.documentElement.lang === 'zh-CN');
    passed('f: the language toggle switches the console to English and remembers it');

    // ---- g. charging ---------------------------------------------------------------------------
    step = 'g-charging';
    if (!chargerControl) {
      console.log('  (skipped g: PARKHUB_CHARGER_CONTROL is not set)');
    } else {
      const control = async (what) => {
        const r = await fetch(`${chargerControl}/${what}`, { method: 'POST' }).catch((e) => ({ ok: false, status: String(e) }));
        check(r.ok, `g: POST ${chargerControl}/${what} answered ${r.status}`);
      };
      const cardSel = `[data-testid="charger-card"][data-device-id="${chargerDevice}"]`;
      const card = page.locator(cardSel);
      const port = (n) => card.locator(`[data-testid="charger-port"][data-port="${n}"]`);
      const portStatus = (n) => port(n).getAttribute('data-status').catch(() => '?');
      /** Waits for port n's data-status to satisfy the regexp. */
      const waitPort = (n, re, what, ms = 20000) => page.waitForFunction(([sel, n, src]) => {
        const p = document.querySelector(`${sel} [data-testid="charger-port"][data-port="${n}"]`);
        return p && new RegExp(src).test(p.dataset.status);
      }, [cardSel, n, re.source], { timeout: ms }).catch(async () => {
        throw new StepError(`g: ${what}: port ${n} of ${chargerDevice} reads data-status="${await portStatus(n)}" after ${ms / 1000} s`);
      });
      const sessionRow = (tag, running) => page.locator(
        `[data-testid="session-row"][data-device-id="${chargerDevice}"][data-running="${running}"]`, { hasText: tag });

      await byTestId('nav-chargers').click();
      await page.waitForFunction(() => location.hash.startsWith('#/chargers'));
      await card.waitFor({ state: 'visible' }).catch(() => {
        throw new StepError(`g: the charging page shows no charger-card for ${chargerDevice}`);
      });
      // The simulated charger has connected, booted and reported both connectors.
      await page.waitForFunction((sel) => {
        const c = document.querySelector(sel);
        const ps = c ? [...c.querySelectorAll('[data-testid="charger-port"]')] : [];
        return c && c.dataset.online === 'true' && ps.length === 2 && ps.every((p) => p.dataset.status === 'Available');
      }, cardSel, { timeout: 30000 }).catch(async () => {
        const info = await card.evaluate((c) => `online=${c.dataset.online}, ports ${[...c.querySelectorAll('[data-testid="charger-port"]')].map((p) => p.dataset.status).join(',')}`);
        throw new StepError(`g: ${chargerDevice} is not shown connected with two Available ports (${info})`);
      });
      const cardText = await card.innerText();
      check(/ParkSim|固件|firmware/i.test(cardText), `g: the EV charger card shows no vendor/firmware: ${cardText.slice(0, 200)}`);
      let ebikeNote = '';
      if (ebikeDevice) {
        const bike = page.locator(`[data-testid="charger-card"][data-device-id="${ebikeDevice}"]`);
        await page.waitForFunction((id) => {
          const c = document.querySelector(`[data-testid="charger-card"][data-device-id="${id}"]`);
          return c && c.querySelectorAll('[data-testid="charger-port"]').length >= 2
            && c.querySelector('[data-testid="charger-port"][data-state="fault"]')
            && c.querySelector('[data-testid="charger-port"][data-state="full"]');
        }, ebikeDevice, { timeout: 20000 }).catch(async () => {
          const n = await bike.locator('[data-testid="charger-port"]').count();
          throw new StepError(`g: the e-bike station ${ebikeDevice} does not show its ports with a full and a faulted one (${n} ports)`);
        });
        const full = await bike.locator('[data-testid="charger-port"][data-state="full"] [data-testid="port-status"]').first().innerText();
        check(full.includes('充满自停'), `g: a full e-bike port reads "${full}", not 充满自停`);
        await bike.locator('[data-testid="charger-alarm"]').first().waitFor({ timeout: 15000 }).catch(() => {
          throw new StepError(`g: the e-bike station's port fault alarm is not listed on its card`);
        });
        ebikeNote = `; e-bike station ${ebikeDevice} shows ${await bike.locator('[data-testid="charger-port"]').count()} ports (full: "${full}") and its fault alarm`;
      }

      // A driver plugs in: the port turns to charging through the live stream, no reload.
      await page.evaluate(() => { window.__noReload = 1; });
      await control('start/1/BROWSER-TAG-1');
      await waitPort(1, /^Charging$/, 'after start');
      await port(1).locator('[data-testid="port-session"]', { hasText: 'BROWSER-TAG-1' }).waitFor().catch(() => {
        throw new StepError('g: the charging port does not show its session (id tag BROWSER-TAG-1)');
      });
      check(await page.evaluate(() => window.__noReload) === 1, 'g: the page reloaded: the charging state must arrive live');
      const charging = Number(await byTestId('sum-ports-charging').innerText());
      check(charging >= 1, `g: the summary counts ${charging} ports charging while one is`);
      await sessionRow('BROWSER-TAG-1', true).waitFor().catch(() => {
        throw new StepError('g: the running session of BROWSER-TAG-1 is not in the sessions table');
      });

      // The driver stops at the charger: the session is logged with its end and reason.
      await control('stop/1');
      await sessionRow('BROWSER-TAG-1', false).waitFor({ timeout: 20000 }).catch(() => {
        throw new StepError('g: after the stop, no finished session-row of BROWSER-TAG-1');
      });
      const reason1 = await sessionRow('BROWSER-TAG-1', false).locator('.col-reason').getAttribute('data-reason');
      check(reason1 === 'Local', `g: the session stopped at the charger has reason "${reason1}", not Local`);
      await waitPort(1, /^(Available|Finishing)$/, 'after stop');

      // The operator stops a session from the console and sees the charger's answer.
      await control('start/1/BROWSER-TAG-2');
      await waitPort(1, /^Charging$/, 'after the second start');
      const stop = port(1).locator('[data-testid="cmd-stop"]');
      await stop.waitFor().catch(() => {
        throw new StepError('g: a charging port with a session has no cmd-stop button for an operator');
      });
      await stop.click();
      await byTestId('cmd-dialog').waitFor({ state: 'visible' }).catch(() => {
        throw new StepError('g: cmd-stop does not ask for a confirmation (cmd-dialog)');
      });
      await byTestId('cmd-confirm').click();
      const answer = card.locator('[data-testid="cmd-answer"]');
      await answer.waitFor({ timeout: 20000 }).catch(() => {
        throw new StepError('g: no cmd-answer on the card after the stop command');
      });
      const answerStatus = await answer.getAttribute('data-status');
      const answerText = (await answer.innerText()).trim();
      check(answerStatus === 'Accepted' && answerText.includes('充电桩回复：Accepted'),
        `g: the stop command's answer reads data-status="${answerStatus}" "${answerText}"`);
      await sessionRow('BROWSER-TAG-2', false).waitFor({ timeout: 20000 }).catch(() => {
        throw new StepError('g: the session stopped from the console is not logged as finished');
      });
      const reason2 = await sessionRow('BROWSER-TAG-2', false).locator('.col-reason').getAttribute('data-reason');
      check(reason2 === 'Remote', `g: the session stopped from the console has reason "${reason2}", not Remote`);
      await waitPort(1, /^(Available|Finishing)$/, 'after the remote stop');

      // Disable the idle connector, then enable it again: the button follows the state.
      const sendCommand = async (testid, what) => {
        const before = await answer.textContent();
        await port(1).locator(`[data-testid="${testid}"]`).click().catch(() => {
          throw new StepError(`g: port 1 has no ${testid} button ${what}`);
        });
        await byTestId('cmd-confirm').click();
        await page.waitForFunction(([sel, before]) => {
          const a = document.querySelector(`${sel} [data-testid="cmd-answer"]`);
          return a && a.textContent !== before;
        }, [cardSel, before], { timeout: 20000 }).catch(() => {
          throw new StepError(`g: no new cmd-answer after ${testid}`);
        });
        const status = await answer.getAttribute('data-status');
        check(status === 'Accepted', `g: ${testid} was answered "${(await answer.innerText()).trim()}"`);
      };
      await waitPort(1, /^Available$/, 'before disabling it');
      await sendCommand('cmd-disable', 'while Available');
      await waitPort(1, /^Unavailable$/, 'after cmd-disable');
      await sendCommand('cmd-enable', 'while Unavailable');
      await waitPort(1, /^Available$/, 'after cmd-enable');

      // The charger reports a fault: the port turns Faulted and the alarm is listed on the card.
      await control('fault/2');
      await waitPort(2, /^Faulted$/, 'after the fault');
      const alarm = card.locator('[data-testid="charger-alarm"][data-point^="connector2."]').first();
      await alarm.waitFor({ timeout: 15000 }).catch(() => {
        throw new StepError('g: the connector fault raised no charger-alarm on the charger card');
      });
      const alarmText = (await alarm.innerText()).replace(/\s+/g, ' ').trim();
      const faulted = Number(await byTestId('sum-ports-faulted').innerText());
      check(faulted >= 1, `g: the summary counts ${faulted} faulted ports`);
      check(await page.evaluate(() => window.__noReload) === 1, 'g: the page reloaded during the charging steps');
      await card.scrollIntoViewIfNeeded();
      await page.evaluate(() => window.scrollTo(0, 0));
      await page.waitForTimeout(300);
      noPageErrors('g');
      await page.screenshot({ path: path.join(shots, '08-chargers.png'), fullPage: true });

      await page.setViewportSize({ width: 390, height: 844 });
      await page.waitForTimeout(300);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      check(overflow <= 1, `g: the charging page is ${overflow} px wider than the 390 px phone screen`);
      await page.screenshot({ path: path.join(shots, '09-chargers-phone.png'), fullPage: true });
      await page.setViewportSize({ width: 1366, height: 900 });

      // In English, the states and the commands are English too.
      await byTestId('lang-toggle').click();
      await page.waitForFunction((sel) => {
        const s = document.querySelector(`${sel} [data-testid="charger-port"][data-port="2"] [data-testid="port-status"]`);
        return document.documentElement.lang === 'en' && s && s.textContent === 'Faulted';
      }, cardSel).catch(async () => {
        throw new StepError(`g: in English port 2 reads "${await port(2).locator('[data-testid="port-status"]').innerText()}", not Faulted`);
      });
      await page.evaluate(() => window.scrollTo(0, 0));
      await shot('10-chargers-en.png');
      await byTestId('lang-toggle').click();
      await page.waitForFunction(() => document.documentElement.lang === 'zh-CN');

      // A viewer sees the same page without any command.
      let viewerNote = '';
      if (viewerUser) {
        const vctx = await browser.newContext({ viewport: { width: 1366, height: 900 }, locale: 'zh-CN' });
        const vpage = await vctx.newPage();
        vpage.setDefaultTimeout(timeout);
        vpage.on('pageerror', (e) => pageErrors.push(`viewer: ${e.message}`));
        await vpage.goto(`${base}/#/chargers`);
        await vpage.locator('[data-testid="login-user"]').fill(viewerUser);
        await vpage.locator('[data-testid="login-password"]').fill(viewerPassword);
        await vpage.locator('[data-testid="login-submit"]').click();
        await vpage.locator(`${cardSel} [data-testid="charger-port"]`).first().waitFor().catch(() => {
          throw new StepError(`g: the viewer ${viewerUser} does not see the charger card`);
        });
        await vpage.waitForTimeout(500);
        const buttons = await vpage.locator('#view-chargers [data-testid^="cmd-"]').count();
        check(buttons === 0, `g: the viewer ${viewerUser} sees ${buttons} command buttons on the charging page`);
        await vctx.close();
        noPageErrors('g');
        viewerNote = `; viewer ${viewerUser} sees no command`;
      }
      passed(`g: ${chargerDevice}'s port 1 turned Charging live and its sessions were logged (reasons ${reason1}, ${reason2}); `
        + `cmd-stop answered "${answerText}"; cmd-disable/cmd-enable took port 1 out of service and back; the fault shows on the card ("${alarmText}")${ebikeNote}${viewerNote}`);
    }

    // ---- h. logout -----------------------------------------------------------------------------
    step = 'h-logout';
    await byTestId('logout').click();
    await byTestId('login-form').waitFor({ state: 'visible' }).catch(() => {
      throw new StepError('h: logout did not bring back the login form');
    });
    const me = await pageFetch('/api/v1/me');
    check(me.status === 401, `h: /api/v1/me answers ${me.status} after logout`);
    noPageErrors('h');
    passed('h: logout ends the session');

    console.log(`${passes} passed, 0 failed`);
    await browser.close();
    return 0;
  } catch (e) {
    const msg = e instanceof StepError ? e.message : `${step}: ${e && e.stack ? e.stack : e}`;
    console.error(`FAIL - ${msg}`);
    if (pageErrors.length) console.error(`  page errors: ${pageErrors.join(' | ')}`);
    try { await page.screenshot({ path: path.join(shots, `fail-${step}.png`), fullPage: true }); } catch { /* browser gone */ }
    await browser.close().catch(() => {});
    return 1;
  }
}

main().then((code) => process.exit(code), (e) => {
  console.error(`FAIL - ${e instanceof StepError ? e.message : e && e.stack ? e.stack : e}`);
  process.exit(1);
});
