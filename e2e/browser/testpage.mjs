// The end-user connectivity test page (/test, rtcd-rs's [api] enable_connectivity_test) in
// headless Chromium: opens http://<rtcd>/test, waits for the page's verdict, and prints the
// rows as JSON: {"udp": {"state", "result", "rtt", "candidate"}, "tcp": {…}, "verdict", "text"}.
//
//   node testpage.mjs <url>      (run inside the test's network namespace)
import {chromium} from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const url = process.argv[2];
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rtcd-testpage-'));
const args = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--allow-loopback-in-peer-connection',
    // The test's namespace has only loopback and no mDNS responder: a page that never asked
    // for the microphone offers mDNS-hidden host candidates, and with none resolvable it
    // gathers nothing at all. Real networks have both; here the plain addresses are offered.
    '--disable-features=WebRtcHideLocalIpsWithMdns'];
let context;
const timer = setTimeout(() => { console.error('testpage: no verdict within 60 s'); process.exit(2); }, 60000);
try {
    context = await chromium.launchPersistentContext(dir, {executablePath, headless: true, args, timeout: 30000});
    const page = await context.newPage();
    page.on('console', (m) => console.error(`page: ${m.text()}`));
    await page.goto(url);
    await page.waitForSelector('body[data-done="true"]', {timeout: 50000});
    const r = await page.evaluate(() => {
        const row = (id) => {
            const el = document.getElementById(id);
            return {
                state: el.dataset.state,
                result: el.querySelector('.result').textContent,
                rtt: el.querySelector('.rtt').textContent,
                candidate: el.querySelector('.candidate').textContent,
            };
        };
        const v = document.getElementById('verdict');
        return {udp: row('udp'), tcp: row('tcp'), verdict: v.dataset.verdict, text: v.textContent};
    });
    console.log(JSON.stringify(r));
} finally {
    clearTimeout(timer);
    if (context) await context.close();
    fs.rmSync(dir, {recursive: true, force: true});
}
