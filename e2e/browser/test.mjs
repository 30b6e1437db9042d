// test.mjs — the browser side of e2e/browser/run.sh (runs inside its network
// namespace, after rtcd and relay.mjs are up).
//
// Launches Debian's Chromium headless through playwright-core with a fake
// audio capture device, opens the scenario's pages from the relay, joins them
// to the same call (A first, then B), and polls getStats every second. The
// default scenario, "audio", passes when, on each page, inbound-rtp audio
// packetsReceived keeps growing and audioLevel > 0. Prints the sampled stats
// and a final PASS/FAIL line.
//
// E2E_SCENARIO picks an entry of SCENARIOS below (run.sh sets up the network
// side of each: the UDP block, coturn):
//   audio    two pages, audio both ways (any candidate pair)
//   ice-tcp  as audio, and each page's selected pair must be tcp -> tcp
//            (run.sh drops all UDP in the namespace with nftables)
//   turn     as audio with iceTransportPolicy "relay" and the relay's TURN
//            REST credentials; each page's selected local candidate must be
//            of type relay (coturn runs in the namespace)
//   mixed    one page and one pion peer (TestMixedPeer of e2e/compat, the
//            binary in COMPAT_TEST_BIN) in one call: the page's inbound audio
//            packets must grow, and the pion peer must count growing Opus
//            packets from the page
//   camera, camera-av1, screen, loss
//            video scenarios (video.mjs): each has its own flow and pass rule
//            after the pages have joined; screen and loss run page B in a
//            second Chromium inside B's own network namespace (E2E_B_CHROMIUM,
//            E2E_B_RELAY_URL) and shape its downlink (E2E_SHAPE_DEV)
//   firstframe  (firstframe.mjs) A unmutes, turns its camera and screen share on;
//            B's first audio and first decoded frame are timed ("FIRSTFRAME {..}")
//   werift   (werift.mjs) page A's simulcast screen share viewed by a werift
//            peer (werift-viewer.mjs) started in B's namespace through
//            E2E_B_NETNS_EXEC; its packet log is checked for one SSRC and
//            continuous seq/timestamp/PictureID across layer switches
// A new scenario is one more entry: the pages to open, the options handed to
// the page's e2eJoin (pageOptions, perPageOptions), and either a judge over
// the e2eStats samples or a flow(pages) that sets the verdict.
//
// Page console output goes to $RUN_DIR/browser.log; run.sh sets
// DEBUG=pw:browser so Chromium's own stderr lands in chromium.log.
//
// Environment: RELAY_URL (default http://127.0.0.1:8099), RUN_DIR (logs,
// browser profile, WAV), CHROMIUM (default /usr/bin/chromium),
// E2E_STATS_SECONDS (default 20), E2E_FAKE_AUDIO=wav|default (default wav:
// a 440 Hz sine file given to the fake device; "default" uses Chromium's
// built-in beep, whose instantaneous audioLevel is often 0), E2E_SCENARIO
// (default audio). For "mixed" also RTCD_URL, COMPAT_TEST_BIN,
// RELAY_CLIENT_ID and RELAY_AUTH_KEY (the relay's client, shared by the pion
// peer's own WS connection).

import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

import {chromium} from 'playwright-core';

import {firstFrameScenarios} from './firstframe.mjs';
import {shaping, videoScenarios, videoSummary} from './video.mjs';
import {weriftScenarios} from './werift.mjs';

const relayURL = (process.env.RELAY_URL || 'http://127.0.0.1:8099').replace(/\/+$/, '');
const runDir = process.env.RUN_DIR || fs.mkdtempSync('/tmp/rtcd-browser-');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const statsSeconds = Number(process.env.E2E_STATS_SECONDS || 20);
const fakeAudio = process.env.E2E_FAKE_AUDIO || 'wav';
const scenarioName = process.env.E2E_SCENARIO || 'audio';
const browserLog = path.join(runDir, 'browser.log');
// Video scenarios with B in its own namespace (screen, loss): run.sh sets these.
const bChromium = process.env.E2E_B_CHROMIUM || '';
const bRelayURL = (process.env.E2E_B_RELAY_URL || '').replace(/\/+$/, '');
const shapeDev = process.env.E2E_SHAPE_DEV || '';
// werift: runs a command inside the viewer's namespace (run.sh's netns-b.sh).
const netnsExec = process.env.E2E_B_NETNS_EXEC || '';
const rtcdURL = (process.env.RTCD_URL || 'http://127.0.0.1:8045').replace(/\/+$/, '');
const serverLabel = process.env.E2E_LABEL || '';

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
    // getDisplayMedia without a picker (the fake 1280x720 screen), for E2E_SCREEN_SOURCE=display.
    '--auto-select-desktop-capture-source=Entire screen',
    // Extra switches for a run by hand, e.g. WebRTC's logs:
    // E2E_CHROMIUM_ARGS='--enable-logging=stderr --vmodule=*/webrtc/*=2'
    ...(process.env.E2E_CHROMIUM_ARGS || '').split(' ').filter(Boolean),
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

// --- scenarios -------------------------------------------------------------------

// Pair checks get e2eStats().pairInfo of the latest sample and return null
// when it is fine, or what is wrong.
const pairText = (pi) => (pi ? `${pi.local?.protocol} ${pi.local?.candidateType}${pi.local?.tcpType ? ' ' + pi.local.tcpType : ''}` +
    `${pi.local?.relayProtocol ? ' (relay over ' + pi.local.relayProtocol + ')' : ''} -> ${pi.remote?.protocol} ${pi.remote?.candidateType}` : 'no selected pair');

const SCENARIOS = {
    audio: {
        pages: ['A', 'B'],
        pageOptions: {},
        judge: judge,
        passReason: 'both pages receive growing inbound audio with audioLevel > 0',
    },
    'ice-tcp': {
        pages: ['A', 'B'],
        pageOptions: {},
        judge: judge,
        pairCheck: (pi) => (pi?.local?.protocol === 'tcp' && pi?.remote?.protocol === 'tcp' ? null : `selected pair is ${pairText(pi)}, want tcp -> tcp`),
        passReason: 'both pages receive growing inbound audio with audioLevel > 0 over an ICE-TCP pair (UDP dropped)',
    },
    turn: {
        pages: ['A', 'B'],
        pageOptions: {iceTransportPolicy: 'relay'},
        needsIceServers: true,
        judge: judge,
        pairCheck: (pi) => (pi?.local?.candidateType === 'relay' ? null : `selected pair is ${pairText(pi)}, want a relay local candidate`),
        passReason: 'both pages receive growing inbound audio with audioLevel > 0 through TURN relay candidates',
    },
    mixed: {
        pages: ['A'],
        pageOptions: {},
        pion: true,
        judge: judgePackets,
        passReason: 'the page receives growing inbound audio packets from the pion peer, and the pion peer growing Opus packets from the page',
    },
    // camera, camera-av1, screen, loss (video.mjs): each has a flow that sets the verdict.
    ...videoScenarios({
        out, sleep, bounded, statsSeconds, shapeDev, rtcdURL, serverLabel,
        setVerdict: (pass, reason) => {
            verdict = {pass, reason};
        },
    }),
    // firstframe (firstframe.mjs): action on A -> first audio / decoded frame on B, timed.
    ...firstFrameScenarios({
        out, sleep, bounded, serverLabel,
        setVerdict: (pass, reason) => {
            verdict = {pass, reason};
        },
    }),
    // werift (werift.mjs): page A's simulcast screen share to a werift viewer in its own namespace.
    ...weriftScenarios({
        out, sleep, bounded, shapeDev, rtcdURL, serverLabel, runDir, netnsExec, bRelayURL,
        setVerdict: (pass, reason) => {
            verdict = {pass, reason};
        },
    }),
};

// --- the pion peer (scenario mixed) ---------------------------------------------------

function startPion(status) {
    const bin = process.env.COMPAT_TEST_BIN;
    if (!bin) {
        throw new Error('COMPAT_TEST_BIN is not set (e2e/compat/build-test.sh)');
    }
    const env = {
        ...process.env,
        RTCD_URL: process.env.RTCD_URL || 'http://127.0.0.1:8045',
        MIXED_CLIENT_ID: process.env.RELAY_CLIENT_ID || '',
        MIXED_AUTH_KEY: process.env.RELAY_AUTH_KEY || '',
        MIXED_CALL_ID: status.callID,
        MIXED_CHANNEL_ID: status.channelID || '',
        MIXED_SECONDS: String(statsSeconds + 40),
    };
    const child = spawn(bin, ['-test.run', '^TestMixedPeer$', '-test.v', '-test.count=1', '-test.timeout=150s'], {
        env, stdio: ['pipe', 'pipe', 'pipe'],
    });
    const pion = {child, connected: null, recvOk: false, done: null, exitCode: null, lines: 0};
    const plog = fs.createWriteStream(path.join(runDir, 'pion.log'));
    const onLine = (line) => {
        plog.write(`[${elapsed()}s] ${line}\n`);
        // Only the peer's own MIXED lines reach the test output (never go
        // test's "--- PASS" lines, which the Makefile's summary would count).
        const m = line.match(/^MIXED (\S+) ?(.*)$/);
        if (!m) {
            return;
        }
        out(`pion ${m[1]} ${m[2]}`);
        if (m[1] === 'connected') {
            pion.connected = m[2];
        } else if (m[1] === 'recv-ok') {
            pion.recvOk = true;
        } else if (m[1] === 'done') {
            pion.done = m[2];
        }
    };
    readline.createInterface({input: child.stdout}).on('line', onLine);
    readline.createInterface({input: child.stderr}).on('line', (l) => plog.write(`[${elapsed()}s] stderr: ${l}\n`));
    pion.exited = new Promise((resolve) => {
        child.on('exit', (code, signal) => {
            pion.exitCode = code === null ? `signal ${signal}` : code;
            plog.write(`[${elapsed()}s] exited: ${pion.exitCode}\n`);
            resolve(pion.exitCode);
        });
        child.on('error', (e) => {
            pion.exitCode = `spawn error: ${e.message}`;
            resolve(pion.exitCode);
        });
    });
    return pion;
}

let context = null;
let contextB = null;
let pion = null;
let verdict = {pass: false, reason: 'not run'};

async function main() {
    const sc = SCENARIOS[scenarioName];
    if (!sc) {
        throw new Error(`unknown E2E_SCENARIO ${scenarioName} (known: ${Object.keys(SCENARIOS).join(', ')})`);
    }
    const status = await waitFor('relay /status ready', 10000, async () => {
        try {
            const s = await (await fetch(`${relayURL}/status`, {signal: AbortSignal.timeout(2000)})).json();
            return s.ready ? s : null;
        } catch {
            return null;
        }
    });
    out(`relay ready: call ${status.callID}, rtcd hello ${JSON.stringify(status.hello)}, page uses @mattermost/calls-common ${status.callsCommon} RTCPeer`);
    if (scenarioName !== 'audio') {
        out(`scenario ${scenarioName}: pages ${sc.pages.join(',')}${sc.pion ? ' + pion peer' : ''}, page options ${JSON.stringify(sc.pageOptions)}`);
    }

    const userDataDir = fs.mkdtempSync(path.join(runDir, 'chromium-profile-'));
    const tl = Date.now();
    context = await bounded(chromium.launchPersistentContext(userDataDir, {
        executablePath,
        headless: true,
        args,
        timeout: 30000,
    }), 35000, 'chromium launch');
    out(`chromium launched in ${Date.now() - tl} ms (${executablePath}, fake audio: ${fakeAudio})`);

    // Pages listed in sc.netnsPages run in a second Chromium inside B's own
    // network namespace (run.sh: E2E_B_CHROMIUM wraps chromium in nsenter),
    // reaching the relay and rtcd over the veth at E2E_B_RELAY_URL.
    if (sc.netnsPages) {
        if (!bChromium || !bRelayURL) {
            throw new Error('scenario needs E2E_B_CHROMIUM and E2E_B_RELAY_URL (run.sh sets them up)');
        }
        const udd = fs.mkdtempSync(path.join(runDir, 'chromium-profile-b-'));
        const tb = Date.now();
        contextB = await bounded(chromium.launchPersistentContext(udd, {
            executablePath: bChromium,
            headless: true,
            args: [...args, `--unsafely-treat-insecure-origin-as-secure=${bRelayURL}`],
            timeout: 30000,
        }), 35000, 'chromium (namespace B) launch');
        out(`chromium for page(s) ${sc.netnsPages.join(',')} launched in B's namespace in ${Date.now() - tb} ms (${bChromium}), relay ${bRelayURL}`);
    }
    const pages = [];
    for (const label of sc.pages) {
        const inB = sc.netnsPages?.includes(label);
        const ctx = inB ? contextB : context;
        const fresh = ctx.pages().length > 0 && !ctx.e2eUsed ? ctx.pages()[0] : null;
        ctx.e2eUsed = true;
        const page = fresh || await ctx.newPage();
        page.on('console', (m) => blog(`page ${label} console.${m.type()}: ${m.text()}`));
        page.on('pageerror', (e) => blog(`page ${label} pageerror: ${e.message}`));
        page.on('crash', () => blog(`page ${label} CRASHED`));
        const base = inB ? bRelayURL : relayURL;
        await page.goto(`${base}/page.html`, {timeout: 10000});
        pages.push({label, page, base});
    }

    // Join A, wait until its RTCPeer is connected, then B (the Go compat
    // harness does the same order).
    for (const p of pages) {
        const wsURL = p.base.replace(/^http/, 'ws') + `/signal?label=${p.label}`;
        const opts = {...sc.pageOptions, ...(sc.perPageOptions?.[p.label] || {})};
        p.sessionID = await bounded(p.page.evaluate(([l, u, c, o]) => window.e2eJoin(l, u, c, o), [p.label, wsURL, audioConstraints, opts]), 15000, `join ${p.label}`);
        out(`page ${p.label} joined as session ${p.sessionID}${Object.keys(opts).length ? ' with options ' + JSON.stringify(opts) : ''}`);
        if (sc.needsIceServers) {
            const s = await p.page.evaluate(() => window.e2eState());
            if (!s.rtcConfig || s.rtcConfig.iceServers.length === 0) {
                throw new Error(`page ${p.label}: the relay handed out no ICE servers (TURN_URL/TURN_SECRET not set?)`);
            }
            out(`page ${p.label} RTCPeer config ${JSON.stringify(s.rtcConfig)}`);
        }
        await waitFor(`page ${p.label} RTCPeer connected`, 15000, async () => {
            const s = await p.page.evaluate(() => window.e2eState());
            if (s.errors.length > 0 || s.closed) {
                throw new Error(`page ${p.label}: ${s.closed ? 'rtcd closed the session; ' : ''}${s.errors.join('; ')}`);
            }
            return s.connected;
        });
        out(`page ${p.label} connected`);
    }

    if (sc.pion) {
        pion = startPion(status);
        await waitFor('pion peer connected', 25000, async () => {
            if (pion.exitCode !== null) {
                throw new Error(`pion peer exited (${pion.exitCode}) before connecting; see pion.log`);
            }
            return pion.connected;
        });
    }

    if (sc.flow) {
        // Video scenarios: their own steps and pass rule.
        try {
            await sc.flow(pages);
        } finally {
            await videoSummary(pages, {out, bounded});
        }
        for (const p of pages) {
            await p.page.evaluate(() => window.e2eLeave()).catch(() => {});
        }
        return;
    }

    // Sample getStats once a second.
    const samples = Object.fromEntries(pages.map((p) => [p.label, []]));
    const ok = Object.fromEntries(pages.map((p) => [p.label, false]));
    const pairProblem = {};
    for (let i = 1; i <= statsSeconds; i++) {
        await sleep(1000);
        for (const p of pages) {
            const st = await bounded(p.page.evaluate(() => window.e2eStats()), 5000, `getStats ${p.label}`);
            samples[p.label].push(st);
            const inb = st.inbound;
            const fmt = inb.map((s) => `pkts=${s.packetsReceived} lost=${s.packetsLost} level=${s.audioLevel?.toFixed(4)} energy=${s.totalAudioEnergy?.toFixed(4)} samples=${s.totalSamplesReceived} codec=${s.codec}`).join(' ; ');
            const sent = st.outbound.map((s) => s.packetsSent).join(',');
            out(`sample ${i} page ${p.label}: ${st.connectionState}/${st.signalingState} inbound-audio[${inb.length}] ${fmt || '-'} | sent=${sent || '-'}`);
            pairProblem[p.label] = sc.pairCheck ? sc.pairCheck(st.pairInfo) : null;
            ok[p.label] = sc.judge(samples[p.label]) && !pairProblem[p.label];
        }
        if (pages.every((p) => ok[p.label]) && (!pion || pion.recvOk)) {
            break;
        }
        for (const p of pages) {
            const s = await p.page.evaluate(() => window.e2eState());
            if (s.closed) {
                throw new Error(`page ${p.label}: rtcd closed the session: ${JSON.stringify(s.closed)}`);
            }
        }
        if (pion && pion.exitCode !== null) {
            throw new Error(`pion peer exited (${pion.exitCode}) during the sampling; see pion.log`);
        }
    }

    // Summary.
    for (const p of pages) {
        const st = samples[p.label].at(-1);
        const s = await p.page.evaluate(() => window.e2eState());
        out(`page ${p.label}: transport ${JSON.stringify(st?.transport)}`);
        out(`page ${p.label}: selected pair ${JSON.stringify(st?.pair)}`);
        if (sc.pairCheck) {
            out(`page ${p.label}: selected pair details ${JSON.stringify(st?.pairInfo)}: ${pairProblem[p.label] || 'ok'}`);
        }
        out(`page ${p.label}: signals from rtcd ${JSON.stringify(s.signals)}, sent ${JSON.stringify(s.sent)}, local stream ${s.localStreamID}, remote streams ${JSON.stringify(s.remoteStreams)}, vad msgs ${s.vad.length}, errors ${JSON.stringify(s.errors)}`);
        const series = samples[p.label].map((x) => x.inbound[0]?.packetsReceived ?? '-').join(' ');
        const levels = samples[p.label].map((x) => x.inbound[0]?.audioLevel?.toFixed(3) ?? '-').join(' ');
        out(`page ${p.label}: packetsReceived per sample: ${series}`);
        out(`page ${p.label}: audioLevel per sample:      ${levels}`);
    }
    const failed = pages.filter((p) => !ok[p.label]).map((p) => p.label);
    for (const p of pages) {
        await p.page.evaluate(() => window.e2eLeave()).catch(() => {});
    }
    let pionProblem = null;
    if (pion) {
        // Stop the pion peer (it sends until its stdin closes) and collect its verdict.
        pion.child.stdin.end();
        const code = await bounded(pion.exited, 15000, 'pion peer exit').catch((e) => e.message);
        out(`pion peer: ${pion.done || 'no final report'}; exit ${code}`);
        if (!pion.recvOk) {
            pionProblem = 'the pion peer did not receive growing Opus packets from the page';
        } else if (code !== 0) {
            pionProblem = `the pion peer's TestMixedPeer failed (exit ${code}; see pion.log)`;
        }
    }
    const problems = [];
    if (failed.length > 0) {
        const what = sc.judge === judge ? 'growing inbound audio packets with audioLevel > 0' : 'growing inbound audio packets';
        const pairs = failed.map((l) => pairProblem[l]).filter(Boolean);
        problems.push(`page(s) ${failed.join(',')} did not show ${what}${sc.pairCheck ? ' on the required candidate pair' : ''} within ${statsSeconds}s${pairs.length ? ' (' + pairs.join('; ') + ')' : ''}`);
    }
    if (pionProblem) {
        problems.push(pionProblem);
    }
    verdict = problems.length === 0 ? {pass: true, reason: sc.passReason} : {pass: false, reason: problems.join('; ')};
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

// Packets only (scenario mixed: the pion peer sends Opus-shaped RTP with
// dummy payloads, which Chromium counts but cannot decode into a level).
function judgePackets(list) {
    if (list.length < 3) {
        return false;
    }
    const last3 = list.slice(-3).map((s) => s.inbound[0]);
    if (last3.some((s) => !s)) {
        return false;
    }
    return last3[0].packetsReceived < last3[1].packetsReceived && last3[1].packetsReceived < last3[2].packetsReceived;
}

let code = 1;
try {
    await main();
    code = verdict.pass ? 0 : 1;
} catch (e) {
    verdict = {pass: false, reason: e.message};
}
if (pion && pion.exitCode === null) {
    pion.child.kill('SIGTERM');
}
if (context) {
    await bounded(context.close(), 10000, 'chromium close').catch((e) => out(`closing chromium: ${e.message}`));
}
if (contextB) {
    await bounded(contextB.close(), 10000, 'chromium (B) close').catch((e) => out(`closing chromium (B): ${e.message}`));
}
await shaping.clear().catch((e) => out(`clearing the network shaping: ${e.message}`));
out(`${verdict.pass ? 'PASS' : 'FAIL'}: ${verdict.reason}`);
process.exit(code);
