#!/usr/bin/env node
// SPDX-License-Identifier: BSD-2-Clause
'use strict';

// Drives one real, unmodified Node SDK through the module, for
// t/30-clients-node.t.
//
//   node node-sdk.js SDK BASE_URL KEY PREFIX [gzip|nogzip]
//
// SDK is segment, customerio, rudder or amplitude; BASE_URL the location,
// e.g. http://127.0.0.1:8080/segment; KEY the write key (the API key for
// Amplitude); PREFIX is put in every user id so that each run's items can
// be told apart.  The calls sent are the ones t/30-clients-node.t expects.
//
// Prints one JSON line: {sdk, ok, errors: [...], results: [...],
// requests: [{method, path, status}]}.  `requests` is every HTTP request
// the process made, seen through Node's diagnostics channels (node:http and
// the fetch of undici), so the test can compare it with nginx's access log.
// Exits 0 when the SDK reported success for every call, 1 otherwise, and
// 2 when it did not finish in 15 s.

const dc = require('node:diagnostics_channel');

const [sdk, base, key, prefix, gzipOpt] = process.argv.slice(2);

if (!sdk || !base || !key || !prefix) {
    console.error('usage: node-sdk.js SDK BASE_URL KEY PREFIX [gzip|nogzip]');
    process.exit(2);
}

const out = { sdk, ok: false, errors: [], results: [], requests: [] };
const started = Date.now();

function finish(code) {
    clearTimeout(deadline);
    out.ms = Date.now() - started;
    process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(code));
}

// every request, with its answer's status when one came
const pending = new Map();

dc.subscribe('http.client.request.start', ({ request }) => {
    const r = { method: request.method, path: request.path, status: 0 };
    out.requests.push(r);
    pending.set(request, r);
});
dc.subscribe('http.client.response.finish', ({ request, response }) => {
    const r = pending.get(request);
    if (r) r.status = response.statusCode;
});
dc.subscribe('undici:request:create', ({ request }) => {
    const r = { method: request.method, path: request.path, status: 0 };
    out.requests.push(r);
    pending.set(request, r);
});
dc.subscribe('undici:request:headers', ({ request, response }) => {
    const r = pending.get(request);
    if (r) r.status = response.statusCode;
});

// the Rudder SDK does not await the flush its first call starts: when that
// request fails, the rejection is unhandled and would end the process
process.on('unhandledRejection', (e) => {
    out.errors.push('unhandled rejection: ' + errText(e));
});

// not unref'd: an SDK that drops a callback would otherwise let the
// process end quietly with nothing printed
const deadline = setTimeout(() => {
    out.errors.push('timeout: the SDK did not finish in 15 s');
    finish(2);
}, 15000);

function errText(e) {
    if (!e) return null;
    if (e instanceof Error) return e.message || String(e);
    if (typeof e === 'object') {
        try { return JSON.stringify(e); } catch (_) { /* fall through */ }
    }
    return String(e);
}

const url = new URL(base);
const origin = url.origin;
const prefixPath = url.pathname.replace(/\/+$/, '');

// --- Segment's analytics-node and its Customer.io fork ----------------------

async function segmentLike(Analytics) {
    // the SDK drops a path given in host: the prefix goes in path
    const analytics = new Analytics({
        writeKey: key,
        host: origin,
        path: `${prefixPath}/v1/batch`,
        flushInterval: 200,
        maxRetries: 2,
    });

    analytics.on('error', (e) => out.errors.push('emitter: ' + errText(e.reason || e)));

    const U = `${prefix}-user-1`;
    const calls = [
        ['identify', { userId: U, traits: { email: `${prefix}@example.com`,
            plan: 'pro', createdAt: '2024-01-02T03:04:05Z' } }],
        ['track', { userId: U, event: 'Order Completed',
            properties: { revenue: 9.99, currency: 'EUR' },
            timestamp: new Date('2026-01-02T03:04:05.500Z') }],
        ['page', { anonymousId: `${prefix}-anon-1`, category: 'Docs',
            name: 'Pricing', properties: { url: 'https://example.com/pricing' } }],
        ['screen', { userId: U, name: 'Home', properties: { tab: 1 } }],
        ['group', { userId: U, groupId: `${prefix}-acme`,
            traits: { name: 'Acme', plan: 'enterprise' } }],
        ['alias', { userId: U, previousId: `${prefix}-anon-1` }],
    ];

    const done = calls.map(([method, params]) => new Promise((resolve) => {
        analytics[method](params, (err, ctx) => {
            out.results.push({ call: method, error: errText(err),
                messageId: ctx && ctx.event && ctx.event.messageId });
            resolve();
        });
    }));

    await analytics.closeAndFlush({ timeout: 30000 });
    await Promise.all(done);
}

// --- RudderStack's Node SDK (gzip by default) --------------------------------

async function rudder() {
    const Analytics = require('@rudderstack/rudder-sdk-node');
    const opts = {
        dataPlaneUrl: base,              // host + path: the prefix is kept
        flushInterval: 200,
        retryCount: 2,
        logLevel: 'error',
    };
    if (gzipOpt === 'nogzip') opts.gzip = false;

    const analytics = new Analytics(key, opts);

    const U = `${prefix}-user-1`;
    const calls = [
        ['identify', { userId: U, traits: { email: `${prefix}@example.com`,
            plan: 'pro', createdAt: '2024-01-02T03:04:05Z' } }],
        ['track', { userId: U, event: 'Order Completed',
            properties: { revenue: 9.99, currency: 'EUR' },
            timestamp: new Date('2026-01-02T03:04:05.500Z') }],
        ['page', { anonymousId: `${prefix}-anon-1`, category: 'Docs',
            name: 'Pricing', properties: { url: 'https://example.com/pricing' } }],
        ['screen', { userId: U, name: 'Home', properties: { tab: 1 } }],
        ['group', { userId: U, groupId: `${prefix}-acme`,
            traits: { name: 'Acme', plan: 'enterprise' } }],
        ['alias', { userId: U, previousId: `${prefix}-anon-1` }],
    ];

    const done = calls.map(([method, params]) => new Promise((resolve) => {
        analytics[method](params, (err) => {
            out.results.push({ call: method, error: errText(err) });
            resolve();
        });
    }));

    // the first call went out alone at once (§7.5); the rest on flush.  A
    // flush that fails throws and leaves the rest queued: flush again, a
    // bounded number of times, so that every call reports.
    for (let i = 0; i < 3 && out.results.length < calls.length; i++) {
        try {
            await analytics.flush();
            break;
        } catch (e) {
            out.errors.push('flush: ' + errText(e));
        }
    }
    await Promise.all(done);
}

// --- Amplitude's Node SDK -----------------------------------------------------

async function amplitude() {
    const amp = require('@amplitude/analytics-node');
    const client = amp.createInstance();

    await client.init(key, {
        serverUrl: `${base.replace(/\/+$/, '')}/2/httpapi`,
        flushIntervalMillis: 200,
        flushMaxRetries: 2,
        logLevel: 0,
    }).promise;

    const U = `${prefix}-user-1`;
    const calls = [
        ['track', () => client.track('Button Clicked', { color: 'red' },
            { user_id: U, insert_id: `${prefix}-ins-1`, time: 1704164645678 })],
        ['identify', () => client.identify(new amp.Identify()
            .set('plan', 'pro').setOnce('first_plan', 'free'), { user_id: U })],
        ['setGroup', () => client.setGroup('org', `${prefix}-acme`, { user_id: U })],
        ['groupIdentify', () => client.groupIdentify('org', `${prefix}-acme`,
            new amp.Identify().set('tier', 'gold'), { user_id: U })],
        ['revenue', () => client.revenue(new amp.Revenue()
            .setProductId('sku-1').setPrice(9.99).setQuantity(2), { user_id: U })],
        ['track anonymous', () => client.track('Anonymous Visit', { ref: 'ad' },
            { device_id: `${prefix}-device-0001` })],
    ];

    const done = calls.map(([name, f]) => f().promise.then((res) => {
        out.results.push({ call: name, code: res.code, message: res.message,
            error: res.code >= 200 && res.code < 300 ? null
                : `code ${res.code}: ${res.message}` });
    }));

    await client.flush().promise;
    await Promise.all(done);
}

// ------------------------------------------------------------------------------

(async () => {
    if (sdk === 'segment') {
        await segmentLike(require('@segment/analytics-node').Analytics);
    } else if (sdk === 'customerio') {
        await segmentLike(require('@customerio/cdp-analytics-node').Analytics);
    } else if (sdk === 'rudder') {
        await rudder();
    } else if (sdk === 'amplitude') {
        await amplitude();
    } else {
        throw new Error(`unknown SDK ${sdk}`);
    }

    for (const r of out.results) {
        if (r.error) out.errors.push(`${r.call}: ${r.error}`);
    }
    out.ok = out.errors.length === 0 && out.results.length === 6;
    finish(out.ok ? 0 : 1);
})().catch((e) => {
    out.errors.push('exception: ' + (e && e.stack || e));
    finish(1);
});
