// video.mjs — the video scenarios of test.mjs: camera, camera-av1, screen, loss.
//
// Each scenario's flow(pages) runs after every page has joined and connected
// (pages in test.mjs order, A first). The publisher A starts its camera or
// screen share the way the Calls webapp does (page.html e2eStartCamera /
// e2eStartScreen: VideoOn/ScreenOn first, then the transceivers), the
// receivers' getStats are sampled once a second, and a page-side monitor
// (e2eMonitorStart) polls framesDecoded every 200 ms to find the longest time
// without a newly decoded frame across all of a page's inbound video streams.
//
// screen and loss shape B's downlink: B's Chromium runs in its own network
// namespace, joined to the server's by the veth pair e2e-s (server side,
// 198.18.0.1) / e2e-b (B, 198.18.0.2), and this module applies, on e2e-s
// (E2E_SHAPE_DEV), a tc tbf rate limit (screen) or an nftables rule that drops
// a random 5% of the UDP leaving through it (loss; this kernel has no netem).

import {execFile} from 'node:child_process';

// tbf bucket and queue (latency: the longest a packet may wait, which sizes the queue).
const tbfBurst = process.env.E2E_TBF_BURST || '10kb';
const tbfLatency = process.env.E2E_TBF_LATENCY || '500ms';
const sbin = `${process.env.PATH || '/usr/bin:/bin'}:/usr/sbin:/sbin`;

function run(cmd, argv, input) {
    return new Promise((resolve, reject) => {
        const child = execFile(cmd, argv, {env: {...process.env, PATH: sbin}, timeout: 10000}, (err, stdout, stderr) => {
            if (err) {
                reject(new Error(`${cmd} ${argv.join(' ')}: ${err.message.trim()} ${stderr.trim()}`));
            } else {
                resolve(stdout);
            }
        });
        if (input !== undefined) {
            child.stdin.end(input);
        }
    });
}

// Network shaping on B's path (the server side of the veth), undone by clear().
export const shaping = {
    undo: [],
    async rateLimit(dev, rate) {
        // tbf: rate, bucket E2E_TBF_BURST, queue E2E_TBF_LATENCY (then tail drop).
        await run('tc', ['qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', rate, 'burst', tbfBurst, 'latency', tbfLatency]);
        this.undo.push(['tc', ['qdisc', 'del', 'dev', dev, 'root']]);
        return (await run('tc', ['qdisc', 'show', 'dev', dev])).trim();
    },
    // Lifts the limit by raising the tbf rate to 1 Gbit/s in place: deleting
    // the qdisc would also drop the packets still queued in it.
    async lift(dev) {
        await run('tc', ['qdisc', 'change', 'dev', dev, 'root', 'tbf', 'rate', '1gbit', 'burst', '1mb', 'latency', tbfLatency]);
        return (await run('tc', ['qdisc', 'show', 'dev', dev])).trim();
    },
    async udpLoss(dev, percent) {
        await run('nft', ['-f', '-'], `table inet e2e_loss {
	chain output {
		type filter hook output priority 0; policy accept;
		oifname "${dev}" meta l4proto udp numgen random mod 100 < ${percent} counter drop
	}
}
`);
        this.undo.push(['nft', ['delete', 'table', 'inet', 'e2e_loss']]);
    },
    async lossCounter() {
        const t = await run('nft', ['list', 'table', 'inet', 'e2e_loss']);
        return (t.match(/counter packets \d+ bytes \d+/) || ['?'])[0];
    },
    async tcStats(dev) {
        return (await run('tc', ['-s', 'qdisc', 'show', 'dev', dev])).replace(/\s+/g, ' ').trim();
    },
    async clear() {
        while (this.undo.length > 0) {
            const [cmd, argv] = this.undo.pop();
            await run(cmd, argv).catch(() => {});
        }
    },
};

// The "screen": a canvas (default; E2E_SCREEN_SOURCE=display for the fake
// getDisplayMedia screen, whose content is too simple for h to exceed the
// limit, or camera), contentHint "detail" like a screen capture, and rid l
// scaled down by E2E_SCREEN_LOW_SCALE (2) so the layers differ in width.
export function screenOpts() {
    const o = {
        source: process.env.E2E_SCREEN_SOURCE || 'canvas',
        contentHint: process.env.E2E_SCREEN_CONTENT_HINT ?? 'detail',
        lowScale: Number(process.env.E2E_SCREEN_LOW_SCALE || 2),
    };
    if (process.env.E2E_SCREEN_ENCODINGS) {
        o.encodings = JSON.parse(process.env.E2E_SCREEN_ENCODINGS);
    }
    o.blocks = Number(process.env.E2E_SCREEN_BLOCKS || 80);
    if (process.env.E2E_SCREEN_PATCH) {
        o.patch = Number(process.env.E2E_SCREEN_PATCH);
    }
    return o;
}

export function videoScenarios({out, sleep, bounded, setVerdict, statsSeconds, shapeDev, rtcdURL, serverLabel}) {
    const stats = (p) => bounded(p.page.evaluate(() => window.e2eStats()), 5000, `getStats ${p.label}`);
    const monitor = (p) => bounded(p.page.evaluate(() => window.e2eMonitor()), 5000, `monitor ${p.label}`);
    const byLabel = (pages, l) => pages.find((p) => p.label === l);
    const codecName = (c) => (c || '').split('/').slice(0, 2).join('/'); // "video/VP8/90000 pt=96" -> "video/VP8"
    const inLine = (v) => `${codecName(v.codec)} pt=${(v.codec || '').split('pt=')[1] || '?'} ssrc=${v.ssrc} mid=${v.mid} ${v.frameWidth ?? '-'}x${v.frameHeight ?? '-'} ` +
        `fps=${v.framesPerSecond ?? '-'} decoded=${v.framesDecoded ?? 0} key=${v.keyFramesDecoded ?? 0} pkts=${v.packetsReceived} lost=${v.packetsLost} ` +
        `nack=${v.nackCount} pli=${v.pliCount} freezes=${v.freezeCount ?? '-'}/${(v.totalFreezesDuration ?? 0).toFixed(2)}s`;
    // kbps of an outbound stream since the last time it was printed.
    const lastSent = new Map();
    const kbps = (v) => {
        const prev = lastSent.get(v.ssrc);
        const now = Date.now();
        lastSent.set(v.ssrc, {t: now, b: v.bytesSent});
        return prev && now > prev.t ? Math.round(((v.bytesSent - prev.b) * 8) / (now - prev.t)) : '-';
    };
    const outLine = (v) => `${v.rid ? 'rid=' + v.rid + ' ' : ''}${codecName(v.codec) || '(no codec)'} ${v.frameWidth ?? '-'}x${v.frameHeight ?? '-'} fps=${v.framesPerSecond ?? '-'} kbps=${kbps(v)} ` +
        `enc=${v.framesEncoded ?? 0} sent=${v.packetsSent} target=${v.targetBitrate ?? '-'} ql=${v.qualityLimitationReason ?? '-'} nack=${v.nackCount} pli=${v.pliCount}${v.active === false ? ' INACTIVE' : ''}`;
    const printIn = (i, p, st, extra = '') => out(`sample ${i} page ${p.label}: ${st.connectionState}/${st.signalingState} inbound-video[${st.inboundVideo.length}] ` +
        `${st.inboundVideo.map(inLine).join(' ; ') || '-'}${extra}`);
    const printOut = (i, p, st) => out(`sample ${i} page ${p.label}: outbound-video[${st.outboundVideo.length}] ${st.outboundVideo.map(outLine).join(' ; ') || '-'}`);
    // The inbound video stream of a codec that has decoded the most frames.
    const best = (st, codec) => st.inboundVideo.filter((v) => codecName(v.codec) === codec)
        .sort((a, b) => (b.framesDecoded || 0) - (a.framesDecoded || 0))[0] || null;
    const rising = (vals) => vals.length >= 3 && vals.slice(-3).every((v, k, a) => typeof v === 'number' && (k === 0 || v > a[k - 1]));

    // Publisher side: a sample of A's outbound video, printed every few seconds.
    const sampleA = async (i, A, every = 3) => {
        if (i % every === 1 || every === 1) {
            printOut(i, A, await stats(A));
        }
    };

    // Waits (once a second, at most `seconds`) until each label in `want`
    // decodes a growing stream of its codec (three rising samples).
    async function untilDecoding(pages, want, seconds, tag, minSeconds = videoMinSeconds) {
        const A = pages[0];
        const hist = Object.fromEntries(Object.keys(want).map((l) => [l, []]));
        const widths = Object.fromEntries(Object.keys(want).map((l) => [l, []]));
        const last = {};
        for (let i = 1; i <= seconds; i++) {
            await sleep(1000);
            for (const l of Object.keys(want)) {
                const p = byLabel(pages, l);
                const st = await stats(p);
                last[l] = st;
                const mon = await monitor(p);
                printIn(`${tag}${i}`, p, st, ` | monitor decoded=${mon.total} maxGap=${mon.windowMaxGapMs}ms`);
                hist[l].push(best(st, want[l])?.framesDecoded ?? null);
                widths[l].push(best(st, want[l])?.frameWidth ?? null);
            }
            await sampleA(i, A);
            if (i >= minSeconds && Object.keys(want).every((l) => rising(hist[l]))) {
                return {ok: true, hist, widths, last, seconds: i};
            }
        }
        return {ok: false, hist, widths, last, seconds};
    }

    // At least this many samples, for a frame width/rate timeline (the encoder ramps up).
    const videoMinSeconds = Number(process.env.E2E_VIDEO_MIN_SECONDS || 6);

    // --- camera: A's fake camera (VP8) decoded by B ---------------------------
    async function camera(pages) {
        const [A, B] = pages;
        const cam = await A.page.evaluate(() => window.e2eStartCamera());
        out(`page A: camera on, VideoOn videoStreamID ${cam.streamID}, capture ${cam.settings.width}x${cam.settings.height}@${cam.settings.frameRate}`);
        await B.page.evaluate(() => window.e2eMonitorStart());
        const r = await untilDecoding(pages, {B: 'video/VP8'}, statsSeconds, '');
        const v = best(r.last.B, 'video/VP8');
        out(`page B: VP8 framesDecoded per sample: ${r.hist.B.map((x) => x ?? '-').join(' ')}`);
        out(`page B: VP8 frameWidth per sample:    ${r.widths.B.map((x) => x ?? '-').join(' ')}`);
        out(`page B: VP8 keyFramesDecoded ${v?.keyFramesDecoded ?? '-'}, frame ${v?.frameWidth ?? '-'}x${v?.frameHeight ?? '-'}, codec ${v?.codec ?? '-'}`);
        const other = r.last.B.inboundVideo.filter((x) => codecName(x.codec) !== 'video/VP8');
        if (!r.ok) {
            setVerdict(false, `page B did not decode a growing VP8 stream from A's camera within ${statsSeconds}s (inbound video: ${r.last.B.inboundVideo.map(inLine).join(' ; ') || 'none'})`);
        } else if (other.length > 0) {
            setVerdict(false, `page B also has non-VP8 inbound video: ${other.map(inLine).join(' ; ')}`);
        } else {
            setVerdict(true, `page B decodes A's camera: VP8, framesDecoded ${r.hist.B.slice(-3).join(' -> ')}, ${v.frameWidth}x${v.frameHeight}, keyFramesDecoded ${v.keyFramesDecoded}`);
        }
    }

    // --- camera-av1: AV1 to an av1Support receiver, VP8 to one without -------
    async function cameraAV1(pages) {
        const [A, B, C] = pages;
        const states = {};
        for (const p of pages) {
            states[p.label] = await p.page.evaluate(() => window.e2eState());
        }
        out(`av1Support in the joins: ${pages.map((p) => `${p.label}=${states[p.label].av1Support}`).join(' ')}`);
        if (!states.A.av1Support || !states.B.av1Support) {
            setVerdict(false, 'this Chromium does not list video/AV1 in RTCRtpReceiver.getCapabilities, so A/B cannot join with av1Support');
            return;
        }
        const cam = await A.page.evaluate(() => window.e2eStartCamera());
        out(`page A: camera on, VideoOn videoStreamID ${cam.streamID}, capture ${cam.settings.width}x${cam.settings.height}@${cam.settings.frameRate}; transceivers: VP8 (default order) + AV1 (setCodecPreferences)`);
        await B.page.evaluate(() => window.e2eMonitorStart());
        await C.page.evaluate(() => window.e2eMonitorStart());
        const r = await untilDecoding(pages, {B: 'video/AV1', C: 'video/VP8'}, statsSeconds, '');
        const stA = await stats(A);
        printOut('end', A, stA);
        const av1Out = stA.outboundVideo.find((v) => codecName(v.codec) === 'video/AV1');
        const vp8Out = stA.outboundVideo.find((v) => codecName(v.codec) === 'video/VP8');
        out(`page A: AV1 encoder ${av1Out ? `${av1Out.encoderImplementation} framesEncoded=${av1Out.framesEncoded}` : 'not negotiated'}; VP8 encoder ${vp8Out ? `${vp8Out.encoderImplementation} framesEncoded=${vp8Out.framesEncoded}` : 'not negotiated'}`);
        const b = best(r.last.B, 'video/AV1');
        const c = best(r.last.C, 'video/VP8');
        out(`page B: AV1 frameWidth per sample: ${r.widths.B.map((x) => x ?? '-').join(' ')}; page C: VP8 frameWidth per sample: ${r.widths.C.map((x) => x ?? '-').join(' ')}`);
        out(`page B: AV1 framesDecoded per sample: ${r.hist.B.map((x) => x ?? '-').join(' ')}; ${b ? `key=${b.keyFramesDecoded} ${b.frameWidth}x${b.frameHeight} decoder ${b.decoderImplementation}` : 'no AV1 stream'}`);
        out(`page C: VP8 framesDecoded per sample: ${r.hist.C.map((x) => x ?? '-').join(' ')}; ${c ? `key=${c.keyFramesDecoded} ${c.frameWidth}x${c.frameHeight} decoder ${c.decoderImplementation}` : 'no VP8 stream'}`);
        const problems = [];
        if (!av1Out || !(av1Out.framesEncoded > 0)) {
            // Headless Chromium that cannot encode AV1: only the negotiation can be checked.
            out('page A: no AV1 frames encoded: falling back to checking the negotiation only (B has an AV1 inbound stream)');
            if (!r.last.B.inboundVideo.some((v) => codecName(v.codec) === 'video/AV1')) {
                problems.push('B has no inbound AV1 stream (negotiation)');
            }
        } else if (!rising(r.hist.B)) {
            problems.push(`B did not decode a growing AV1 stream (inbound video: ${r.last.B.inboundVideo.map(inLine).join(' ; ') || 'none'})`);
        }
        if (!rising(r.hist.C)) {
            problems.push(`C (no av1Support) did not decode a growing VP8 stream (inbound video: ${r.last.C.inboundVideo.map(inLine).join(' ; ') || 'none'})`);
        }
        // rtcd gives an av1Support receiver only the AV1 track of an
        // av1Support sender, and a receiver without it only the VP8 one.
        const bVP8 = r.last.B.inboundVideo.filter((v) => codecName(v.codec) === 'video/VP8' && v.packetsReceived > 0);
        const cAV1 = r.last.C.inboundVideo.filter((v) => codecName(v.codec) === 'video/AV1' && v.packetsReceived > 0);
        if (bVP8.length > 0) {
            problems.push(`B (av1Support) also receives VP8: ${bVP8.map(inLine).join(' ; ')}`);
        }
        if (cAV1.length > 0) {
            problems.push(`C (no av1Support) receives AV1: ${cAV1.map(inLine).join(' ; ')}`);
        }
        setVerdict(problems.length === 0, problems.length === 0
            ? `B decodes A's camera as AV1 (framesDecoded ${r.hist.B.slice(-3).join(' -> ')}), C as VP8 (${r.hist.C.slice(-3).join(' -> ')})`
            : problems.join('; '));
    }

    // --- screen: simulcast l/h, B's downlink limited and lifted ----------------
    // The layer B is on is read from the stream that decoded the most frames in
    // the last second: its width, or when both of A's layers have the same width
    // (the webapp scales neither), its decoded frame rate (l 5 fps, h 20 fps).
    const upSeconds = Number(process.env.E2E_SCREEN_UP_SECONDS || 30);
    const downSeconds = Number(process.env.E2E_SCREEN_DOWN_SECONDS || 20);
    const backSeconds = Number(process.env.E2E_SCREEN_BACK_SECONDS || 30);
    const limitRate = process.env.E2E_SCREEN_RATE || '800kbit';
    const maxFreezeMs = Number(process.env.E2E_SCREEN_MAX_FREEZE_MS || 1500);

    async function screen(pages) {
        const [A, B] = pages;
        if (!shapeDev) {
            throw new Error('E2E_SHAPE_DEV is not set (run.sh sets up the veth to B)');
        }
        const scr = await A.page.evaluate((o) => window.e2eStartScreen(o), screenOpts());
        out(`page A: screen share on, ScreenOn screenStreamID ${scr.streamID}, capture ${scr.settings.width}x${scr.settings.height}@${scr.settings.frameRate}`);
        await B.page.evaluate(() => window.e2eMonitorStart());

        const layers = {}; // rid -> {w, fps} from A's outbound-rtp
        const timeline = [];
        let prev = null; // B's per-ssrc framesDecoded at the previous sample
        const t0 = Date.now();
        let i = 0;
        const step = async (phase) => {
            i++;
            await sleep(1000);
            const stA = await stats(A);
            for (const v of stA.outboundVideo) {
                if (v.rid && v.frameWidth) {
                    layers[v.rid] = {w: v.frameWidth, h: v.frameHeight, fps: v.framesPerSecond, target: v.targetBitrate};
                }
            }
            const st = await stats(B);
            const mon = await monitor(B);
            const now = Date.now();
            // The stream that decoded the most frames since the last sample.
            let cur = null;
            let curDelta = 0;
            for (const v of st.inboundVideo) {
                const d = (v.framesDecoded || 0) - (prev?.[v.ssrc] ?? 0);
                if (d > curDelta) {
                    cur = v;
                    curDelta = d;
                }
            }
            const dt = prev ? (now - prev.t) / 1000 : 1;
            prev = {t: now};
            for (const v of st.inboundVideo) {
                prev[v.ssrc] = v.framesDecoded || 0;
            }
            const rate = curDelta / dt;
            const layer = classify(cur, rate);
            const row = {t: ((now - t0) / 1000).toFixed(1), phase, layer, w: cur?.frameWidth ?? null, fps: Math.round(rate * 10) / 10, gapMs: mon.windowMaxGapMs, ssrc: cur?.ssrc ?? null};
            timeline.push(row);
            printIn(i, B, st, ` | ${phase}: layer ${layer} (decoding ${row.w ?? '-'} wide at ${row.fps} fps), longest gap ${mon.windowMaxGapMs} ms`);
            if (i % 3 === 1) {
                printOut(i, A, stA);
            }
            return row;
        };
        const classify = (cur, rate) => {
            if (!cur || rate <= 0) {
                return 'none';
            }
            const {l, h} = layers;
            if (l && h && l.w !== h.w) {
                return cur.frameWidth === h.w ? 'h' : cur.frameWidth === l.w ? 'l' : `?(${cur.frameWidth})`;
            }
            const lf = l?.fps || 5;
            const hf = h?.fps || 20;
            return rate >= (lf + hf) / 2 ? 'h' : 'l';
        };

        // Phase 1: no limit; B must decode the share and reach the h layer.
        let row;
        let reached = false;
        for (let k = 0; k < upSeconds; k++) {
            row = await step('no limit');
            if (row.layer === 'h' && timeline.filter((x) => x.layer === 'h').length >= 2) {
                reached = true;
                break;
            }
        }
        out(`A's layers: ${JSON.stringify(layers)}`);
        if (!reached) {
            report(timeline);
            setVerdict(false, `page B did not reach the h layer within ${upSeconds}s without a limit (last: layer ${row?.layer}, ${row?.w ?? '-'} wide at ${row?.fps} fps)`);
            return;
        }
        const tUp = row.t;

        // Phase 2: rate-limit B's downlink; B must drop to l without a long freeze.
        const q = await shaping.rateLimit(shapeDev, limitRate);
        const tLimit = Date.now();
        out(`limit on at ${new Date(tLimit).toISOString()}: ${q}`);
        await monitor(B); // restart the window
        let down = null;
        let worstGap = 0;
        for (let k = 0; k < downSeconds; k++) {
            row = await step(`limit ${limitRate}`);
            worstGap = Math.max(worstGap, row.gapMs);
            if (row.layer === 'l' && timeline.slice(-2).every((x) => x.layer === 'l')) {
                down = ((Date.now() - tLimit) / 1000).toFixed(1);
                break;
            }
        }
        out(`limit: ${await shaping.tcStats(shapeDev)}`);
        await switchTrace(B, tLimit);
        if (!down) {
            report(timeline);
            setVerdict(false, `page B did not move to the l layer within ${downSeconds}s of the ${limitRate} limit (last: layer ${row.layer}, ${row.w ?? '-'} wide at ${row.fps} fps; longest decode gap ${worstGap} ms)`);
            return;
        }

        const isRef = /ref/i.test(serverLabel);
        const metricProblems = [];
        // The server's own account of the layer B receives (rtcd-rs; the reference has no such
        // metric).
        const checkLayerMetric = async (want) => {
            if (isRef) {
                return;
            }
            const v = await layerViewers();
            out(`rtcd_rtc_simulcast_viewers: h ${v.h}, l ${v.l} (B decodes ${want})`);
            if (v[want] !== 1 || v[want === 'h' ? 'l' : 'h'] !== 0) {
                metricProblems.push(`rtcd_rtc_simulcast_viewers shows h ${v.h}, l ${v.l} while B decodes ${want}`);
            }
        };
        await checkLayerMetric('l');

        // Phase 3: lift the limit; B must return to h.
        const lifted = await shaping.lift(shapeDev);
        const tLift = Date.now();
        out(`limit lifted after ${((tLift - tLimit) / 1000).toFixed(1)}s: ${lifted}`);
        // The first sample decoding h counts (rtcd may switch back down soon
        // after: the following samples are printed, not judged).
        let back = null;
        let worstGapBack = 0;
        for (let k = 0; k < backSeconds; k++) {
            row = await step('lifted');
            worstGapBack = Math.max(worstGapBack, row.gapMs);
            if (row.layer === 'h') {
                back = ((Date.now() - tLift) / 1000).toFixed(1);
                break;
            }
        }
        if (back) {
            await checkLayerMetric('h');
            for (let k = 0; k < 2; k++) {
                await step('back on h?');
            }
        }
        const fin = await stats(B);
        report(timeline);
        const freezes = fin.inboundVideo.map((v) => `ssrc ${v.ssrc}: ${v.freezeCount ?? '-'} freezes, ${(v.totalFreezesDuration ?? 0).toFixed(2)} s`).join('; ');
        out(`page B: freezes per inbound stream (Chromium getStats): ${freezes}`);
        out(`page B: on h after ${tUp}s; l ${down}s after the limit (longest decode gap ${worstGap} ms); h ${back ?? 'never'}${back ? 's' : ''} after lifting (longest gap ${worstGapBack} ms)`);
        const problems = [];
        if (worstGap > maxFreezeMs) {
            problems.push(`B froze for ${worstGap} ms (more than ${maxFreezeMs}) while moving to l under the limit`);
        }
        if (!back && isRef) {
            // The reference's way back up is pion's bandwidth estimate recovering, which on a
            // loaded 2-core machine has taken more than 30 s (CI, 2026-12-07): reported, not
            // judged. rtcd-rs's return is judged.
            out(`reference server: B did not return to h within ${backSeconds}s of lifting the limit (LOG-ONLY)`);
        } else if (!back) {
            problems.push(`B did not return to h within ${backSeconds}s of lifting the limit`);
        }
        problems.push(...metricProblems);
        setVerdict(problems.length === 0, problems.length === 0
            ? `B decodes the share on h, moves to l ${down}s after a ${limitRate} limit (longest decode gap ${worstGap} ms) and ${back ? `back to h ${back}s after it is lifted` : 'stays on l after it is lifted (reference, LOG-ONLY)'}`
            : problems.join('; '));
    }
    // B's busiest inbound video stream every 200 ms from 1 s before `t0` on (the page
    // monitor's trace): what arrived and what was decoded, as deltas per poll, and the jitter
    // buffer's mean delay and target over the frames it emitted in the poll.
    async function switchTrace(p, t0) {
        const trace = await bounded(p.page.evaluate((since) => window.e2eMonitorTrace(since), t0 - 1000), 5000, `trace ${p.label}`);
        out(`page ${p.label} every poll from 1 s before the limit (ms after it: width, packets +received/+lost/+rtx, frames +received/+decoded/+key/+dropped, +nack/+pli, jitter buffer delay/target ms):`);
        for (let k = 1; k < trace.length; k++) {
            const [a, b] = [trace[k - 1], trace[k]];
            const d = (f) => (b[f] ?? 0) - (a[f] ?? 0);
            const emitted = d('jbe');
            const jb = emitted > 0 ? `${Math.round(1000 * d('jbd') / emitted)}/${Math.round(1000 * d('jbt') / emitted)}` : '-';
            out(`  ${String(b.t - t0).padStart(6)} ${String(b.w ?? '-').padStart(5)} pkts +${d('pkts')}/+${d('lost')}/+${d('rtx')} frames +${d('recv')}/+${d('dec')}/+${d('key')}/+${d('drop')} nack +${d('nack')} pli +${d('pli')} jb ${jb}${b.ssrc !== a.ssrc ? ` ssrc ${b.ssrc}` : ''}`);
        }
    }
    const report = (timeline) => {
        out(`page B timeline (t s: phase layer width fps gap):`);
        for (const r of timeline) {
            out(`  ${r.t.padStart(5)} ${r.phase.padEnd(14)} ${r.layer.padEnd(4)} ${String(r.w ?? '-').padStart(5)} ${String(r.fps).padStart(5)} fps  gap ${r.gapMs} ms  ssrc ${r.ssrc ?? '-'}`);
        }
    };
    // --- loss: camera with 5% of B's downlink UDP dropped -----------------------
    const lossPercent = Number(process.env.E2E_LOSS_PERCENT || 5);
    const lossSeconds = Number(process.env.E2E_LOSS_SECONDS || 10);

    // The sample lines of one metric family from the server's /metrics, and their sum.
    async function metricLines(family) {
        const res = await fetch(`${rtcdURL}/metrics`, {signal: AbortSignal.timeout(5000)});
        return (await res.text()).split('\n').filter((l) => l.startsWith(family));
    }
    const sumOf = (lines) => lines.reduce((a, l) => a + Number(l.trim().split(/\s+/).pop()), 0);

    // rtcd_rtc_simulcast_viewers (rtcd-rs only): viewers per layer, summed over groups.
    async function layerViewers() {
        const lines = await metricLines('rtcd_rtc_simulcast_viewers{');
        const on = (layer) => sumOf(lines.filter((l) => l.includes(`layer="${layer}"`)));
        return {h: on('h'), l: on('l')};
    }

    async function nackMetric() {
        const lines = await metricLines('rtcd_rtc_nacks_total');
        const inSum = sumOf(lines.filter((l) => /direction="in"/.test(l)));
        return {lines, inSum, present: lines.length > 0};
    }

    async function loss(pages) {
        const [A, B] = pages;
        if (!shapeDev) {
            throw new Error('E2E_SHAPE_DEV is not set (run.sh sets up the veth to B)');
        }
        const cam = await A.page.evaluate(() => window.e2eStartCamera());
        out(`page A: camera on, VideoOn videoStreamID ${cam.streamID}, capture ${cam.settings.width}x${cam.settings.height}@${cam.settings.frameRate}`);
        await B.page.evaluate(() => window.e2eMonitorStart());
        const r = await untilDecoding(pages, {B: 'video/VP8'}, 15, 'pre-', 3);
        if (!r.ok) {
            setVerdict(false, `page B did not decode A's camera (VP8) within 15s, before any loss (inbound video: ${r.last.B.inboundVideo.map(inLine).join(' ; ') || 'none'})`);
            return;
        }
        const v0 = best(r.last.B, 'video/VP8');
        await shaping.udpLoss(shapeDev, lossPercent);
        out(`loss on: nftables drops a random ${lossPercent}% of the UDP leaving ${shapeDev} (B's downlink); B before: decoded=${v0.framesDecoded} nack=${v0.nackCount} lost=${v0.packetsLost}`);
        await monitor(B);
        const hist = [];
        let v = v0;
        let worstGap = 0;
        for (let i = 1; i <= lossSeconds; i++) {
            await sleep(1000);
            const st = await stats(B);
            const mon = await monitor(B);
            worstGap = Math.max(worstGap, mon.windowMaxGapMs);
            printIn(`loss-${i}`, B, st, ` | longest gap ${mon.windowMaxGapMs} ms`);
            v = best(st, 'video/VP8') || v;
            hist.push(v.framesDecoded);
            await sampleA(i, A, 5);
        }
        const dropped = await shaping.lossCounter();
        out(`loss rule: ${dropped}`);
        out(`page B: VP8 framesDecoded under loss: ${v0.framesDecoded} -> ${hist.join(' ')}; nackCount ${v0.nackCount} -> ${v.nackCount}; packetsLost ${v0.packetsLost} -> ${v.packetsLost}; ` +
            `retransmitted received ${v.retransmittedPacketsReceived ?? '-'}; pli ${v.pliCount}; freezes ${v.freezeCount}/${(v.totalFreezesDuration ?? 0).toFixed(2)}s; longest decode gap ${worstGap} ms; ${v.frameWidth}x${v.frameHeight}`);
        const problems = [];
        // Keeps decoding: framesDecoded grew over the whole window and over its
        // second half (stalls waiting for retransmissions are allowed).
        const half = hist[Math.floor(hist.length / 2) - 1];
        if (!(v.framesDecoded > v0.framesDecoded) || !(hist.at(-1) > half)) {
            problems.push(`B stopped decoding under ${lossPercent}% loss (framesDecoded ${v0.framesDecoded} -> ${hist.join(' ')})`);
        }
        if (!(v.nackCount > 0)) {
            problems.push(`B sent no NACKs (nackCount ${v.nackCount})`);
        }
        // rtcd_rtc_nacks_total is ours (the reference has no such family);
        // labels containing "ref" are the reference and skip it.
        const m = await nackMetric().catch((e) => ({error: e.message}));
        if (m.error) {
            out(`GET /metrics: ${m.error}`);
        } else {
            out(`GET /metrics: ${m.present ? m.lines.join(' | ') : 'no rtcd_rtc_nacks_total'}`);
        }
        const isRef = /ref/i.test(serverLabel);
        if (!isRef) {
            if (m.error || !(m.inSum > 0)) {
                problems.push(`server metric rtcd_rtc_nacks_total{direction="in"} is ${m.error ? 'unreadable: ' + m.error : m.present ? m.inSum : 'missing'} (want > 0)`);
            }
        } else {
            out(`label ${serverLabel}: reference server, rtcd_rtc_nacks_total not checked`);
        }
        setVerdict(problems.length === 0, problems.length === 0
            ? `B keeps decoding under ${lossPercent}% downlink loss (framesDecoded ${v0.framesDecoded} -> ${v.framesDecoded} in ${lossSeconds}s), nackCount ${v.nackCount}${isRef ? '' : `, rtcd_rtc_nacks_total{direction="in"} ${m.inSum}`}`
            : problems.join('; '));
    }

    // The scenarios (entries for test.mjs's SCENARIOS).
    return {
        camera: {
            pages: ['A', 'B'],
            pageOptions: {},
            flow: camera,
        },
        'camera-av1': {
            pages: ['A', 'B', 'C'],
            pageOptions: {},
            perPageOptions: {A: {av1Support: true}, B: {av1Support: true}, C: {av1Support: false}},
            flow: cameraAV1,
        },
        screen: {
            pages: ['A', 'B'],
            netnsPages: ['B'],
            pageOptions: {},
            perPageOptions: {A: {simulcast: true}},
            flow: screen,
        },
        loss: {
            pages: ['A', 'B'],
            netnsPages: ['B'],
            pageOptions: {},
            flow: loss,
        },
    };
}

// Per page: the SRTP profile, the selected pair and the video streams, after a video scenario.
export async function videoSummary(pages, {out, bounded}) {
    for (const p of pages) {
        const st = await bounded(p.page.evaluate(() => window.e2eStats()), 5000, `getStats ${p.label}`).catch(() => null);
        const s = await bounded(p.page.evaluate(() => window.e2eState()), 5000, `state ${p.label}`).catch(() => null);
        if (!st || !s) {
            out(`page ${p.label}: no final stats`);
            continue;
        }
        out(`page ${p.label}: SRTP ${st.transport?.srtpCipher ?? '-'}, DTLS ${st.transport?.dtlsCipher ?? '-'} ${st.transport?.tlsVersion ?? '-'} (${st.transport?.dtlsRole ?? '-'}); selected pair ${JSON.stringify(st.pair)}`);
        out(`page ${p.label}: signals from rtcd ${JSON.stringify(s.signals)}, sent ${JSON.stringify(s.sent)}, remote streams ${s.remoteStreams.length} (${s.remoteStreams.map((r) => r.kinds).join(',')}), errors ${JSON.stringify(s.errors)}`);
    }
}
