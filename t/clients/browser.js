#!/usr/bin/env node
// SPDX-License-Identifier: BSD-2-Clause
'use strict';

// Opens a page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) and reports what happened on the network, for
// t/31-clients-browser.t.
//
//   node browser.js PAGE_URL API_ORIGIN POSTS
//
// Waits until the page left window.__cioResult and POSTS requests to
// API_ORIGIN have been answered (or failed), then prints one JSON line:
// {page: window.__cioResult, requests: [{method, url, status, acao,
// failure}], blocked: [...], console: [...]}.  Any request that is not
// for 127.0.0.1 fails (no name resolves) and is listed in `blocked`
// (there is no internet: the SDK must need none).  Requests are not
// intercepted, so the CORS preflights are the browser's own.  Exits 0
// when it got that far, 2 on a timeout.

const { chromium } = require('playwright-core');

const [pageUrl, apiOrigin, postsArg] = process.argv.slice(2);
const posts = Number(postsArg || 0);
const CHROMIUM = process.env.CIO_CHROMIUM || '/usr/bin/chromium';

const out = { page: null, requests: [], blocked: [], console: [],
              errors: [] };
let browser;

const deadline = setTimeout(async () => {
    out.errors.push('timeout: the page did not finish in 30 s');
    await finish(2);
}, 30000);

async function finish(code) {
    clearTimeout(deadline);
    try {
        if (browser) await browser.close();
    } catch (e) { /* already gone */ }
    process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(code));
}

(async () => {
    browser = await chromium.launch({
        executablePath: CHROMIUM,
        // no request interception (page.route): with it, Playwright answers
        // CORS preflights itself and the module's would go untested.
        // Names other than 127.0.0.1 resolve nowhere instead.
        args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
               '--no-first-run', '--disable-background-networking',
               '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
    });
    const context = await browser.newContext();

    const page = await context.newPage();
    let answered = 0;
    const toApi = (req) => req.url().startsWith(apiOrigin);
    // the calls' POSTs, not analytics.js telemetry (/v1/m)
    const isPost = (req) => req.method() === 'POST'
        && !/\/v1\/m$/.test(new URL(req.url()).pathname);

    page.on('request', (req) => {
        const u = new URL(req.url());
        if (u.hostname !== '127.0.0.1' && u.protocol !== 'data:') {
            out.blocked.push(req.url());
        }
    });

    page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') {
            out.console.push(`${m.type()}: ${m.text()}`);
        }
    });
    page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message}`));

    page.on('requestfinished', async (req) => {
        if (!toApi(req)) return;
        const resp = await req.response();
        const h = resp ? await resp.allHeaders() : {};
        out.requests.push({
            method: req.method(), url: req.url(),
            status: resp ? resp.status() : 0,
            acao: h['access-control-allow-origin'] || null,
            acac: h['access-control-allow-credentials'] || null,
            auth: (await req.allHeaders()).authorization || null,
            failure: null,
        });
        if (isPost(req)) answered++;
    });
    page.on('requestfailed', (req) => {
        if (!toApi(req)) return;
        out.requests.push({ method: req.method(), url: req.url(), status: 0,
                            failure: (req.failure() || {}).errorText || 'failed' });
        if (isPost(req)) answered++;
    });

    await page.goto(pageUrl);
    await page.waitForFunction(() => window.__cioResult, null,
                               { timeout: 20000, polling: 50 });
    out.page = await page.evaluate(() => window.__cioResult);

    // the POSTs still on the wire (batching mode sends after the calls)
    const until = Date.now() + 8000;
    while (answered < posts && Date.now() < until) {
        await page.waitForTimeout(50);
    }
    if (answered < posts) {
        out.errors.push(`only ${answered} of ${posts} POSTs were answered`);
    }

    await finish(0);
})().catch(async (e) => {
    out.errors.push('exception: ' + (e && e.stack || e));
    await finish(1);
});
