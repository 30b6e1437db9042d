// firstframe.mjs — the "firstframe" scenario of test.mjs: how long a person waits, on page B,
// for what page A just turned on.
//
// Pages A, C and D join muted (the webapp's default; A with simulcast on), page B joins
// normally. Then, each timed from the moment a page acts (Date.now() in its page, just before
// its first message to the plugin) to the first getStats poll on B (every 20 ms) that shows
// the result (the pages share one clock: one machine):
//   audio-first    the first unmute of A, C and D in turn (the voice stream is added: a
//                  renegotiation) -> B's first packet of it, and when B hears it (new audio
//                  energy: the 440 Hz tone)
//   audio-unmute   A: mute, 1 s, unmute (replaceTrack back on the sender), six times
//   camera         VideoOn + A's camera (one VP8 encoding) -> B decodes a frame; then
//                  VideoOff and the track removed; three times
//   screen         ScreenOn + A's simulcast screen share (rid l/h, RTCPeer.addStream; a plain
//                  canvas, see screenSource) -> B decodes a frame; then ScreenOff and the track
//                  removed; three times
// Each round also gives the time to B's first packet, which separates the signaling from the
// wait for a decodable frame, and the time each stream first left the acting page.
// Audio is judged by B's first packet (after it, how soon B plays out is B's jitter buffer,
// the same for any server); video by B's first decoded frame (the server decides which packet
// a new viewer starts on).
//
// The verdict passes when every round produced its result within its limit. The figures go
// out as one line, "FIRSTFRAME <json>", which scripts/browser.sh compares between the
// reference rtcd and ours (firstframe-compare.mjs).

const rounds = Number(process.env.E2E_FIRST_ROUNDS || 3);
// Unmutes are cheap and their figures coarse (see firstframe-compare.mjs): twice as many.
const unmuteRounds = 2 * rounds;
const limitMs = Number(process.env.E2E_FIRST_LIMIT_MS || 8000);
// The shared "screen": a plain canvas with a few changing blocks, whose keyframes are small.
// A detailed screen's first keyframe (50-150 kB) leaves the publisher at the pace of its
// uplink estimate, which at a share's start swings between 0.1 and 6 Mbit/s from one share
// to the next on either server: it would measure the publisher's estimator, not the server.
const screenSource = {source: 'canvas', contentHint: 'detail', plain: true, blocks: 8, patch: 0.25};

export function firstFrameScenarios({out, sleep, bounded, setVerdict, serverLabel}) {
    // Arms B's watch for `kind`, runs `act` on A (it returns A's Date.now() when it acted, or
    // an object with t0) and waits for B's first packet and first decoded frame / audio.
    async function measure(A, B, kind, what, act) {
        await bounded(B.page.evaluate(([k, l]) => window.e2eFirstArm(k, l), [kind, limitMs]), 5000, `arm ${what}`);
        // Video: A's own outbound streams are watched too, for when each layer first left A.
        await bounded(A.page.evaluate(([k, l]) => window.e2eFirstArm(k, l, 'outbound'), [kind, limitMs]), 5000, `arm ${what} on ${A.label}`);
        const r = await bounded(act(), 10000, what);
        const t0 = typeof r === 'number' ? r : r.t0;
        const w = await bounded(B.page.evaluate(() => window.e2eFirstWait()), limitMs + 5000, `wait ${what}`);
        const ms = w.firstAt === null ? null : w.firstAt - t0;
        const packetMs = w.firstPacketAt === null ? null : w.firstPacketAt - t0;
        out(`${what}: B's first packet after ${packetMs ?? 'never'} ms, first ${kind === 'video' ? 'decoded frame' : 'audio energy'} after ${ms ?? 'never'} ms` +
            ` (ssrc ${w.ssrc ?? '-'}, ${w.polls} polls${kind === 'video' ? `, B sent ${w.pli} PLI` : ''})`);
        const a = await bounded(A.page.evaluate(() => window.e2eFirstWait()), limitMs + 5000, `wait ${what} on ${A.label}`);
        const rel = (t) => (t === null ? '-' : t - t0);
        const line = (m, side) => Object.entries(m).map(([ssrc, x]) => `${side} ${x.rid ? 'rid ' + x.rid : 'ssrc ' + ssrc} packet ${rel(x.packetAt)} frame ${rel(x.frameAt)} key ${rel(x.keyAt)}`).join('; ');
        out(`${what}: ms after the action: ${line(a.streams, `${A.label} sent`)}; ${line(w.streams, 'B got')}; ` +
            `${A.label}'s available outgoing bitrate (kbps, every 0.5 s): ${a.bwe.map((x) => (x === null ? '-' : Math.round(x / 1000))).join(' ')}`);
        // The part after the publisher's own first frame (video: encoded) or packet (audio:
        // sent): the way through the server to B. Before it, the publisher's browser starts its
        // capture and encoder, which on a loaded machine moves by seconds from one run to the
        // next (measured: 0.27 to 2.4 s) whatever the server.
        const src = a.firstAt === null ? null : a.firstAt - t0;
        const path = (x) => (x === null || src === null ? null : x - src);
        return {ms, packetMs, src, path: path(ms), packetPath: path(packetMs)};
    }

    async function flow(pages) {
        const [A, B] = pages;
        const ev = (fn, arg) => A.page.evaluate(fn, arg);
        // Per measure: the whole time from the action (what a person sees) and its part after
        // the publisher's first frame or packet (`...Path`, through the server); for audio also
        // when B hears it (`...Heard`).
        const res = {server: serverLabel};
        for (const k of ['audioFirst', 'audioUnmute', 'camera', 'screen']) {
            res[k] = [];
            res[`${k}Path`] = [];
        }
        res.audioFirstHeard = [];
        res.audioUnmuteHeard = [];
        const missing = [];
        const keep = (key, name, total, path) => {
            res[key].push(total);
            res[`${key}Path`].push(path);
            if (total === null || path === null) {
                missing.push(name);
            }
        };
        // Audio: B's first packet is what the server controls (compared); when B hears it is
        // B's jitter buffer starting (reported). Video: B's first decoded frame.
        const keepAudio = (key, name, r) => {
            keep(key, name, r.packetMs, r.packetPath);
            res[`${key}Heard`].push(r.ms);
        };
        const keepVideo = (key, name, r) => keep(key, name, r.ms, r.path);

        // A first unmute happens once per session: A, C and D (all joined muted) each give one.
        for (const P of [A, ...pages.slice(2)]) {
            keepAudio('audioFirst', `audio-first ${P.label}`, await measure(P, B, 'audio', `audio-first ${P.label}`, () => P.page.evaluate(() => window.e2eUnmute())));
            await sleep(300);
            await P.page.evaluate(() => window.e2eMute());
        }
        // The extra pages leave and close: the rest is A and B only (more Chromium pages
        // decoding every video stream would make the video figures about CPU, on two cores).
        const errs = [];
        for (const P of pages.slice(2)) {
            errs.push(...(await P.page.evaluate(() => window.e2eState())).errors.map((e) => `${P.label}: ${e}`));
            await P.page.evaluate(() => window.e2eLeave());
            await P.page.close();
        }
        for (let i = 1; i <= unmuteRounds; i++) {
            await sleep(500);
            await ev(() => window.e2eMute());
            await sleep(1000);
            keepAudio('audioUnmute', `audio-unmute ${i}`, await measure(A, B, 'audio', `audio-unmute ${i}`, () => ev(() => window.e2eUnmute())));
        }
        for (let i = 1; i <= rounds; i++) {
            keepVideo('camera', `camera ${i}`, await measure(A, B, 'video', `camera ${i}`, () => ev(() => window.e2eStartCamera())));
            await sleep(1500);
            await ev(() => window.e2eStopVideo('camera'));
            await sleep(1500);
        }
        for (let i = 1; i <= rounds; i++) {
            keepVideo('screen', `screen ${i}`, await measure(A, B, 'video', `screen ${i}`,
                () => ev((o) => window.e2eStartScreen(o), screenSource)));
            await sleep(1500);
            await ev(() => window.e2eStopVideo('screen'));
            await sleep(1500);
        }
        for (const P of pages.slice(0, 2)) {
            errs.push(...(await P.page.evaluate(() => window.e2eState())).errors.map((e) => `${P.label}: ${e}`));
        }
        out(`FIRSTFRAME ${JSON.stringify(res)}`);
        const problems = [];
        if (missing.length > 0) {
            problems.push(`no result within ${limitMs} ms for: ${missing.join(', ')}`);
        }
        if (errs.length > 0) {
            problems.push(`page errors: ${errs.join('; ')}`);
        }
        const med = (l) => [...l].sort((a, b) => a - b)[Math.floor(l.length / 2)];
        const fig = (k) => `${med(res[k])} ms (${med(res[`${k}Path`])} ms after the publisher's first ${k.startsWith('audio') ? 'packet' : 'frame'})`;
        setVerdict(problems.length === 0, problems.length === 0
            ? `medians: first unmute -> B's first audio packet ${fig('audioFirst')}, unmute -> ${fig('audioUnmute')}, ` +
              `VideoOn -> B's first decoded frame ${fig('camera')}, ScreenOn -> ${fig('screen')}`
            : problems.join('; '));
    }

    return {
        firstframe: {
            pages: ['A', 'B', 'C', 'D'],
            pageOptions: {},
            perPageOptions: {A: {muted: true, simulcast: true}, C: {muted: true}, D: {muted: true}},
            flow,
        },
    };
}
