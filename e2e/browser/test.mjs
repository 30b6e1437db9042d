// test.mjs — the browser side of e2e/browser/run.sh (runs inside its network
// namespace, after rtcd and relay.mjs are up).
//
// Launches Debian's Chromium headless through playwright-core with a fake
// audio capture device, opens two pages from the relay, joins both to the
// same call (A first, then B), and polls getStats every second. Passes when,
// on each page, inbound-rtp audio packetsReceived keeps growing and
// audioLevel > 0. Prints the sampled stats and a final PASS/FAIL line.
//
// Page console output goes to $RUN_DIR/browser.log; run.sh sets
// DEBUG=pw:browser so Chromium's own stderr lands in chromium.log.
//
// Environment: RELAY_URL (default http://127.0.0.1:8099), RUN_DIR (logs,
// browser profile, WAV), CHROMIUM (default /usr/bin/chromium),
// E2E_STATS_SECONDS (default 20), E2E_FAKE_AUDIO=wav|default (default wav:
// a 440 Hz sine file given to the fake device; "default" uses Chromium's
// built-in beep, whose instantaneous audioLevel is often 0).

import fs from 'node:fs';
import path from 'node:path';

import {chromium} from 'playwright-core';

const relayURL = (process.env.RELAY_URL || 'http://127.0.0.1:8099').replace(/\/+$/, '');
const runDir = process.env.RUN_DIR || fs.mkdtempSync('/tmp/rtcd-browser-');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const statsSeconds = Number(process.env.E2E_STATS_SECONDS || 20);
const fakeAudio = process.env.E2E_FAKE_AUDIO || 'wav';
const browserLog = path.join(runDir, 'browser.log');

const t0 = Date.now();
const elapsed = () => ((Date.now() - t0) / 1000).toFixed(1);
const out = (...a) => console.log(`[${elapsed()}s]`, ...a);
const blog = (line) => fs.appendFileSync(browserLog, `[${elapsed()}s] ${line}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Bounded wait for an async predicate.
async function waitFor(what, timeoutMs, fn) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await fn();
        if (v) {
            return v;
        }
        if (Date.now() > deadline) {
            throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`);
        }
        await sleep(200);
    }
}

// Bounds a promise that might hang (page.evaluate on a wedged renderer).
function bounded(p, ms, what) {
    let timer;
    return Promise.race([
        p.finally(() => clearTimeout(timer)),
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms / 1000}s`)), ms);
        }),
    ]);
}

function writeSineWav(file, {seconds = 2, rate = 48000, freq = 440, amplitude = 0.3} = {}) {
    const n = seconds * rate;
    const buf = Buffer.alloc(44 + n * 2);
    buf.write('RIFF', 0);
    buf.writeUInt32LE(36 + n * 2, 4);
    buf.write('WAVE', 8);
    buf.write('fmt ', 12);
    buf.writeUInt32LE(16, 16);
    buf.writeUInt16LE(1, 20); // PCM
    buf.writeUInt16LE(1, 22); // mono
    buf.writeUInt32LE(rate, 24);
    buf.writeUInt32LE(rate * 2, 28);
    buf.writeUInt16LE(2, 32);
    buf.writeUInt16LE(16, 34);
    buf.write('data', 36);
    buf.writeUInt32LE(n * 2, 40);
    for (let i = 0; i < n; i++) {
        buf.writeInt16LE(Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * freq * i) / rate)), 44 + i * 2);
    }
    fs.writeFileSync(file, buf);
}

const args = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
];
// Audio processing is off so the sine reaches the encoder unchanged (noise
// suppression flattens a steady tone); with the built-in beep keep the
// webapp's defaults.
let audioConstraints = {autoGainControl: true, echoCancellation: true, noiseSuppression: true};
if (fakeAudio === 'wav') {
    const wav = path.join(runDir, 'sine440.wav');
    writeSineWav(wav);
    args.push(`--use-file-for-fake-audio-capture=${wav}`);
    audioConstraints = {autoGainControl: false, echoCancellation: false, noiseSuppression: false};
}

let context = null;
let verdict = {pass: false, reason: 'not run'};

async function main() {
    const status = await waitFor('relay /status ready', 10000, async () => {
        try {
            const s = await (await fetch(`${relayURL}/status`, {signal: AbortSignal.timeout(2000)})).json();
            return s.ready ? s : null;
        } catch {
            return null;
        }
    });
    out(`relay ready: call ${status.callID}, rtcd hello ${JSON.stringify(status.hello)}, page uses @mattermost/calls-common ${status.callsCommon} RTCPeer`);

    const userDataDir = fs.mkdtempSync(path.join(runDir, 'chromium-profile-'));
    const tl = Date.now();
    context = await bounded(chromium.launchPersistentContext(userDataDir, {
        executablePath,
        headless: true,
        args,
        timeout: 30000,
    }), 35000, 'chromium launch');
    out(`chromium launched in ${Date.now() - tl} ms (${executablePath}, fake audio: ${fakeAudio})`);

    const pages = [];
    for (const label of ['A', 'B']) {
        const page = pages.length === 0 && context.pages().length > 0 ? context.pages()[0] : await context.newPage();
        page.on('console', (m) => blog(`page ${label} console.${m.type()}: ${m.text()}`));
        page.on('pageerror', (e) => blog(`page ${label} pageerror: ${e.message}`));
        page.on('crash', () => blog(`page ${label} CRASHED`));
        await page.goto(`${relayURL}/page.html`, {timeout: 10000});
        pages.push({label, page});
    }

    // Join A, wait until its RTCPeer is connected, then B (the Go compat
    // harness does the same order).
    for (const p of pages) {
        const wsURL = relayURL.replace(/^http/, 'ws') + `/signal?label=${p.label}`;
        p.sessionID = await bounded(p.page.evaluate(([l, u, c]) => window.e2eJoin(l, u, c), [p.label, wsURL, audioConstraints]), 15000, `join ${p.label}`);
        out(`page ${p.label} joined as session ${p.sessionID}`);
        await waitFor(`page ${p.label} RTCPeer connected`, 15000, async () => {
            const s = await p.page.evaluate(() => window.e2eState());
            if (s.errors.length > 0 || s.closed) {
                throw new Error(`page ${p.label}: ${s.closed ? 'rtcd closed the session; ' : ''}${s.errors.join('; ')}`);
            }
            return s.connected;
        });
        out(`page ${p.label} connected`);
    }

    // Sample getStats once a second.
    const samples = {A: [], B: []};
    const ok = {A: false, B: false};
    for (let i = 1; i <= statsSeconds; i++) {
        await sleep(1000);
        for (const p of pages) {
            const st = await bounded(p.page.evaluate(() => window.e2eStats()), 5000, `getStats ${p.label}`);
            samples[p.label].push(st);
            const inb = st.inbound;
            const fmt = inb.map((s) => `pkts=${s.packetsReceived} lost=${s.packetsLost} level=${s.audioLevel?.toFixed(4)} energy=${s.totalAudioEnergy?.toFixed(4)} samples=${s.totalSamplesReceived} codec=${s.codec}`).join(' ; ');
            const sent = st.outbound.map((s) => s.packetsSent).join(',');
            out(`sample ${i} page ${p.label}: ${st.connectionState}/${st.signalingState} inbound-audio[${inb.length}] ${fmt || '-'} | sent=${sent || '-'}`);
            ok[p.label] = judge(samples[p.label]);
        }
        if (ok.A && ok.B) {
            break;
        }
        for (const p of pages) {
            const s = await p.page.evaluate(() => window.e2eState());
            if (s.closed) {
                throw new Error(`page ${p.label}: rtcd closed the session: ${JSON.stringify(s.closed)}`);
            }
        }
    }

    // Summary.
    for (const p of pages) {
        const st = samples[p.label].at(-1);
        const s = await p.page.evaluate(() => window.e2eState());
        out(`page ${p.label}: transport ${JSON.stringify(st?.transport)}`);
        out(`page ${p.label}: selected pair ${JSON.stringify(st?.pair)}`);
        out(`page ${p.label}: signals from rtcd ${JSON.stringify(s.signals)}, sent ${JSON.stringify(s.sent)}, local stream ${s.localStreamID}, remote streams ${JSON.stringify(s.remoteStreams)}, vad msgs ${s.vad.length}, errors ${JSON.stringify(s.errors)}`);
        const series = samples[p.label].map((x) => x.inbound[0]?.packetsReceived ?? '-').join(' ');
        const levels = samples[p.label].map((x) => x.inbound[0]?.audioLevel?.toFixed(3) ?? '-').join(' ');
        out(`page ${p.label}: packetsReceived per sample: ${series}`);
        out(`page ${p.label}: audioLevel per sample:      ${levels}`);
    }
    const failed = pages.filter((p) => !ok[p.label]).map((p) => p.label);
    verdict = failed.length === 0 ?
        {pass: true, reason: 'both pages receive growing inbound audio with audioLevel > 0'} :
        {pass: false, reason: `page(s) ${failed.join(',')} did not show growing inbound audio packets with audioLevel > 0 within ${statsSeconds}s`};

    for (const p of pages) {
        await p.page.evaluate(() => window.e2eLeave()).catch(() => {});
    }
}

// Each page must receive audio: one inbound-rtp audio stream whose
// packetsReceived rose over the last three samples (two increases in a row)
// and whose audioLevel in the latest sample is > 0 (decoded and rendered
// audio, not silence).
function judge(list) {
    if (list.length < 3) {
        return false;
    }
    const last3 = list.slice(-3).map((s) => s.inbound[0]);
    if (last3.some((s) => !s)) {
        return false;
    }
    const grows = last3[0].packetsReceived < last3[1].packetsReceived && last3[1].packetsReceived < last3[2].packetsReceived;
    return grows && last3[2].packetsReceived > 0 && last3[2].audioLevel > 0 && last3[2].totalSamplesReceived > 0;
}

let code = 1;
try {
    await main();
    code = verdict.pass ? 0 : 1;
} catch (e) {
    verdict = {pass: false, reason: e.message};
}
if (context) {
    await bounded(context.close(), 10000, 'chromium close').catch((e) => out(`closing chromium: ${e.message}`));
}
out(`${verdict.pass ? 'PASS' : 'FAIL'}: ${verdict.reason}`);
process.exit(code);
