// SPDX-License-Identifier: BSD-2-Clause
'use strict';

// Loaded by index.html?wk=KEY&prefix=P&mode=standard|batching (see
// t/31-clients-browser.t and browser.js).  analytics.js fetches its
// settings from cdnURL (this origin, served by nginx in place of
// cdn.segment.com); the settings name the module's origin as apiHost.
// Sends identify, track, page, screen, group and alias, and leaves what
// the SDK said in window.__cioResult.

(async function () {
    var q = new URLSearchParams(location.search);
    var p = q.get('prefix');
    var mode = q.get('mode') || 'standard';
    var result = { mode: mode, errors: [], calls: [] };

    try {
        var integrations = {};
        if (mode === 'batching') {
            integrations['Segment.io'] = {
                deliveryStrategy: {
                    strategy: 'batching',
                    config: { size: 6, timeout: 1000 },
                },
            };
        }

        var loaded = await AnalyticsNext.AnalyticsBrowser.load(
            { writeKey: q.get('wk'), cdnURL: location.origin },
            { integrations: integrations });
        var analytics = loaded[0];

        analytics.on('error', function (e) {
            result.errors.push('error event: ' + (e && e.code) + ' '
                + String(e && e.reason));
        });

        var U = p + '-user-1';
        var calls = [
            ['identify', function () {
                return analytics.identify(U, { email: p + '@example.com',
                    plan: 'pro', createdAt: '2024-01-02T03:04:05Z' });
            }],
            ['track', function () {
                return analytics.track('Order Completed',
                    { revenue: 9.99, currency: 'EUR' },
                    { timestamp: '2026-01-02T03:04:05.500Z' });
            }],
            ['page', function () {
                return analytics.page('Docs', 'Pricing');
            }],
            ['screen', function () {
                return analytics.screen('Home', { tab: 1 });
            }],
            ['group', function () {
                return analytics.group(p + '-acme',
                    { name: 'Acme', plan: 'enterprise' });
            }],
            ['alias', function () {
                return analytics.alias(U, p + '-old-1');
            }],
        ];

        // one after the other, as a page would: each resolves when sent
        // (default mode) or queued (batching mode)
        for (var i = 0; i < calls.length; i++) {
            var ctx = await calls[i][1]();
            var failed = ctx.failedDelivery && ctx.failedDelivery();
            result.calls.push({
                call: calls[i][0],
                messageId: ctx.event.messageId,
                failed: failed ? String(failed.reason) : null,
            });
            if (failed) {
                result.errors.push(calls[i][0] + ': ' + String(failed.reason));
            }
        }

        result.anonymousId = analytics.user().anonymousId();
        result.href = location.href;
        result.title = document.title;
    } catch (e) {
        result.errors.push('exception: ' + (e && e.stack || e));
    }

    window.__cioResult = result;
})();
