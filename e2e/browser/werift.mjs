// werift.mjs — the "werift" scenario of test.mjs, and the analysis of its packet log.
//
// Page A (Chromium, RTCPeer with simulcast) shares the 1280x720 canvas screen
// with rids l (scaled to 640 wide) and h, as in "screen". The viewer is not a
// browser but werift-viewer.mjs (a werift RTCPeerConnection in Node), run in
// its own network namespace (run.sh's netns-b.sh), joining through relay.mjs
// like a page. It logs every RTP packet of the screen track (arrival time,
// SSRC, seq, timestamp, marker, VP8 PictureID/TL0PICIDX, keyframe bit and the
// keyframe's width/height) to werift-packets.tsv in the run directory.
//
// Flow: the viewer joins and connects; A starts the share; the test waits up
// to E2E_WERIFT_UP_SECONDS (45) for the viewer to be on h (a 1280-wide
// keyframe, then E2E_WERIFT_H_HOLD_SECONDS (2) without another width; if it
// never holds h, a NOTE is printed and the test goes on). Then the viewer's
// downlink (e2e-s, towards it) is degraded for E2E_WERIFT_LIMIT_SECONDS (8):
// by default nftables drops a random E2E_WERIFT_DROP_PERCENT (15) % of the UDP
// towards the viewer (E2E_WERIFT_SHAPE=drop; rtcd-rs comes down on the
// receiver reports' loss), or with E2E_WERIFT_SHAPE=tbf a tc tbf limit of
// E2E_WERIFT_RATE (800kbit; rtcd-rs's pacer then keeps the queue short, so the
// down-switch comes from the TWCC estimate, with no loss). Then it is lifted
// and the test waits up to E2E_WERIFT_BACK_SECONDS (40) for a keyframe of h
// again (the server's backoff is 10 s × 1.5 per switch), and 2 s more. A
// down-switch seen with no shaping in force is printed as a NOTE (the
// server's own decision), not judged.
//
// Pass rule (strict mode, the default for rtcd-rs: a server that forwards one
// layer on one SSRC and rewrites seq/timestamp/PictureID on a switch):
//   - every screen packet arrives on one SSRC;
//   - at least one layer switch: a keyframe whose width differs from the
//     previous keyframe's (e.g. 1280 -> 640); rtcd_rtc_layer_switches_total
//     from /metrics is printed (and counts if no keyframe width was readable);
//   - the stream is continuous: in arrival order, the sequence number never
//     goes back except to fill a gap (a retransmission) or to repeat a packet
//     (rtcd-rs probes bandwidth with RTX copies of sent packets: ignored), no
//     jump skips more than E2E_WERIFT_MAX_GAP (30) packets; RTP timestamps
//     never go back, and within ±20 packets of a switch never jump more than
//     90000 ticks (1 s) beyond the time between the two packets' arrivals
//     (rtcd-rs moves the timestamp on by the wall-clock pause of a switch;
//     elsewhere such a jump is the publisher's own, e.g. its encoder pausing after the first large
//     keyframe, and is printed, not judged);
//     consecutive packets (seq + 1) of one frame have one PictureID and the
//     first packet of a new frame has the previous PictureID + 1 (mod 2^15),
//     across a gap the PictureID advances by 0..gap+1;
//   - at each switch keyframe: its PictureID is the previous packet's + 1 when
//     that packet (seq - 1) arrived, and when the switch happened with no
//     shaping in force (the limit lifted more than 1 s before) the packets
//     around it (E2E_WERIFT_SWITCH_WINDOW = 20 each side) have no gap at all.
// Log mode (labels containing "ref", the reference rtcd, which removes the
// track and adds a new one, on a new SSRC, on a switch; or E2E_WERIFT_MODE=log):
// the same analysis per SSRC is printed, SSRC changes are listed, and it passes
// when screen media arrived.
//
// Standalone re-analysis of a kept log:
//   node werift.mjs <run-dir>/werift-packets.tsv [limitOnEpochMs limitOffEpochMs]

import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import {fileURLToPath} from 'node:url';

import {shaping, screenOpts} from './video.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const num = (name, dflt) => Number(process.env[name] || dflt);

// --- packet log analysis ---------------------------------------------------------------

export function readPackets(file) {
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
    const cols = lines.shift().split('\t');
    return lines.map((l, idx) => {
        const v = l.split('\t');
        const r = {idx};
        cols.forEach((c, i) => {
            r[c] = Number(v[i]);
        });
        r.mid = v[cols.indexOf('mid')];
        return r;
    });
}

const s16 = (d) => ((d + 0x8000) & 0xffff) - 0x8000;
const s32 = (d) => {
    const x = ((d % 2 ** 32) + 2 ** 32) % 2 ** 32;
    return x >= 2 ** 31 ? x - 2 ** 32 : x;
};
const pidDelta = (a, b) => (b - a + 0x8000) & 0x7fff; // forward distance a -> b, 15-bit
const fmtRow = (r, t0, ext) => `${(r.t_ms - t0).toFixed(1).padStart(9)} ssrc=${r.ssrc} seq=${String(r.seq).padStart(5)}${ext !== undefined ? ` (ext ${ext})` : ''} ts=${r.ts} m=${r.marker} ` +
    `pid=${r.pid} tl0=${r.tl0} tid=${r.tid}${r.s ? ' S' : ''}${r.key ? ` KEY ${r.w}x${r.h}` : ''} len=${r.len}${r.rtx ? ' (RTX)' : ''}`;

// Analyses one SSRC's packets (arrival order).
function analyseStream(rows, {maxGap, limitOn, limitOff, window: win, t0}) {
    const st = {
        packets: rows.length, gaps: [], lateFills: 0, dups: 0, violations: [], keyframes: [], switches: [],
        maxTsJump: 0, maxSeqJump: 0, firstT: rows[0]?.t_ms, lastT: rows.at(-1)?.t_ms, tsJumps: [], tsJumpsNoted: [],
    };
    let highest = null;
    let prev = null; // last in-order packet
    const received = new Map(); // ext -> row
    const missing = new Set();
    const extOf = new Map(); // row idx -> ext
    const dupIdx = new Set(); // rows that repeat a packet already received (RTX probes, spurious retransmissions)
    const viol = (kind, r, detail) => {
        if (st.violations.length < 50) {
            st.violations.push({kind, t: r.t_ms, detail});
        } else {
            st.violationsOmitted = (st.violationsOmitted || 0) + 1;
        }
    };
    for (const r of rows) {
        let ext;
        if (highest === null) {
            ext = r.seq;
            highest = ext;
            prev = r;
            received.set(ext, r);
            extOf.set(r.idx, ext);
            continue;
        }
        const d = s16(r.seq - (highest & 0xffff));
        ext = highest + d;
        extOf.set(r.idx, ext);
        if (d > 0) {
            const gap = d - 1;
            st.maxSeqJump = Math.max(st.maxSeqJump, d);
            if (gap > 0) {
                st.gaps.push({t: r.t_ms, ext, size: gap});
                for (let k = 1; k <= gap; k++) {
                    missing.add(highest + k);
                }
                if (gap > maxGap) {
                    viol('seq-jump', r, `seq ${prev.seq} -> ${r.seq}: ${gap} missing (max ${maxGap})`);
                }
            }
            const tsd = s32(r.ts - prev.ts);
            st.maxTsJump = Math.max(st.maxTsJump, tsd);
            if (tsd < 0) {
                viol('ts-back', r, `ts ${prev.ts} -> ${r.ts} (${tsd}) at seq ${prev.seq} -> ${r.seq}`);
            } else if (tsd > 90000 + 90 * Math.max(0, r.t_ms - prev.t_ms)) {
                // More than 1 s beyond the time between the two packets' arrivals (the server
                // moves the timestamp on by the wall-clock time of a switch's pause). Judged
                // after the switches are known (see below).
                st.tsJumps.push({r, ext, detail: `ts ${prev.ts} -> ${r.ts} (+${tsd}) at seq ${prev.seq} -> ${r.seq}, ${(r.t_ms - prev.t_ms).toFixed(0)} ms after the previous packet`});
            }
            if (prev.pid >= 0 && r.pid >= 0) {
                const pd = pidDelta(prev.pid, r.pid);
                if (d === 1) {
                    const want = tsd === 0 ? 0 : 1;
                    if (pd !== want) {
                        viol('pid', r, `PictureID ${prev.pid} -> ${r.pid} at seq ${prev.seq} -> ${r.seq} (ts +${tsd}), want +${want}`);
                    }
                } else if (pd > gap + 1) {
                    viol('pid-jump', r, `PictureID ${prev.pid} -> ${r.pid} across ${gap} missing packets`);
                }
            }
            highest = ext;
            prev = r;
        } else if (received.has(ext)) {
            st.dups++;
            dupIdx.add(r.idx);
            continue; // keep the first copy
        } else if (missing.has(ext)) {
            st.lateFills++;
            missing.delete(ext);
        } else {
            viol('seq-back', r, `seq ${r.seq} arrived after ${highest & 0xffff} (${d}) and fills no gap`);
        }
        received.set(ext, r);
    }
    st.missingAtEnd = missing.size;
    // Frame rate and bit rate (distinct timestamps and payload bytes over the SSRC's time span).
    const span = ((rows.at(-1)?.t_ms ?? 0) - (rows[0]?.t_ms ?? 0)) / 1000;
    const firsts = rows.filter((r) => !dupIdx.has(r.idx));
    st.fps = span > 0 ? new Set(firsts.map((r) => r.ts)).size / span : 0;
    st.kbps = span > 0 ? firsts.reduce((a, r) => a + r.len, 0) * 8 / span / 1000 : 0;
    const firstExt = rows.length ? extOf.get(rows[0].idx) : 0;
    st.maxGap = st.gaps.reduce((a, g) => Math.max(a, g.size), 0);
    // Keyframes (a frame's first packet with the P bit clear) and width changes.
    let lastW = 0;
    for (const r of rows) {
        if (!r.key || dupIdx.has(r.idx)) {
            continue;
        }
        const ext = extOf.get(r.idx);
        st.keyframes.push({t: r.t_ms, ext, pid: r.pid, w: r.w, h: r.h});
        if (r.w > 0 && lastW > 0 && r.w !== lastW) {
            // The in-order predecessor: the packet with the highest ext below it.
            let pred = null;
            for (let e = ext - 1; e >= ext - 2000; e--) {
                if (received.has(e)) {
                    pred = {ext: e, row: received.get(e)};
                    break;
                }
            }
            const contiguous = pred?.ext === ext - 1;
            let gapsNear = 0;
            for (let e = Math.max(ext - win, firstExt); e <= Math.min(ext + win, highest); e++) {
                if (!received.has(e)) {
                    gapsNear++;
                }
            }
            const gapsNearFirst = st.gaps.filter((g) => g.ext - g.size <= ext + win && g.ext > ext - win).reduce((a, g) => a + g.size, 0);
            const shaped = limitOn !== undefined && r.t_ms >= limitOn && r.t_ms <= (limitOff ?? Infinity) + 1000;
            const i = rows.indexOf(r);
            const excerpt = rows.slice(Math.max(0, i - 6), i + 5).map((x) => fmtRow(x, t0, extOf.get(x.idx)) + (x === r ? '   <== switch keyframe' : ''));
            st.switches.push({
                t: r.t_ms, from: lastW, to: r.w, ext, pid: r.pid, tl0: r.tl0, contiguous, shaped, gapsNear, gapsNearFirst,
                pred: pred ? {ext: pred.ext, seq: pred.row.seq, pid: pred.row.pid, tl0: pred.row.tl0, ts: pred.row.ts, t: pred.row.t_ms, marker: pred.row.marker} : null,
                seqDelta: pred ? ext - pred.ext : null,
                tsDelta: pred ? s32(r.ts - pred.row.ts) : null,
                pidDelta: pred && pred.row.pid >= 0 && r.pid >= 0 ? pidDelta(pred.row.pid, r.pid) : null,
                tl0Delta: pred && pred.row.tl0 >= 0 && r.tl0 >= 0 ? (r.tl0 - pred.row.tl0 + 256) % 256 : null,
                pauseMs: pred ? r.t_ms - pred.row.t_ms : null,
                excerpt,
            });
        }
        if (r.w > 0) {
            lastW = r.w;
        }
    }
    // A timestamp step over 1 s next to a switch is the server's; elsewhere it is
    // the publisher's own (its encoder skipped frames, e.g. after a large keyframe
    // at start-up: the source timestamps jump the same way), noted, not judged.
    for (const j of st.tsJumps) {
        if (st.switches.some((sw) => Math.abs(j.ext - sw.ext) <= win)) {
            viol('ts-jump', j.r, j.detail);
        } else {
            st.tsJumpsNoted.push(j);
        }
    }
    return st;
}

// Analyses a packet log; returns {problems, lines, summary}.
export function analysePackets(file, {strict = true, limitOn, limitOff, maxGap = num('E2E_WERIFT_MAX_GAP', 30), window: win = num('E2E_WERIFT_SWITCH_WINDOW', 20), metricSwitches = null} = {}) {
    const rows = readPackets(file);
    const lines = [];
    const problems = [];
    if (rows.length === 0) {
        return {problems: ['no screen RTP packet arrived at the werift viewer'], lines, summary: {packets: 0}};
    }
    const t0 = rows[0].t_ms;
    const rel = (t) => `${((t - t0) / 1000).toFixed(2)}s`;
    lines.push(`packet log: ${rows.length} screen packets from ${rel(rows[0].t_ms)} to ${rel(rows.at(-1).t_ms)} (times relative to the first packet)` +
        (limitOn ? `; shaping on at ${rel(limitOn)}, off at ${rel(limitOff)}` : ''));
    // SSRCs, in order of first appearance, and every change of SSRC in arrival order.
    const bySSRC = new Map();
    const changes = [];
    let last = null;
    for (const r of rows) {
        if (!bySSRC.has(r.ssrc)) {
            bySSRC.set(r.ssrc, []);
        }
        bySSRC.get(r.ssrc).push(r);
        if (last && r.ssrc !== last.ssrc) {
            changes.push({t: r.t_ms, from: last.ssrc, to: r.ssrc, pauseMs: r.t_ms - last.t_ms, fromSeq: last.seq, toSeq: r.seq, routed: r.routed, mid: r.mid, key: r.key, w: r.w});
        }
        last = r;
    }
    lines.push(`SSRCs: ${[...bySSRC.entries()].map(([s, rs]) => `${s} (mid ${rs[0].mid}, ${rs.length} packets${rs.some((x) => !x.routed) ? `, ${rs.filter((x) => !x.routed).length} not routed by werift` : ''}, ${rs.filter((x) => x.rtx).length} via RTX, ${rel(rs[0].t_ms)}-${rel(rs.at(-1).t_ms)})`).join('; ')}`);
    for (const c of changes.slice(0, 20)) {
        lines.push(`SSRC change at ${rel(c.t)}: ${c.from} seq ${c.fromSeq} -> ${c.to} seq ${c.toSeq} (mid ${c.mid}${c.routed ? '' : ', not routed by werift'}${c.key ? `, keyframe ${c.w} wide` : ''}), ${c.pauseMs.toFixed(0)} ms without screen packets`);
    }
    const summary = {packets: rows.length, ssrcs: bySSRC.size, ssrcChanges: changes.length, switches: [], violations: 0};
    for (const [ssrc, rs] of bySSRC) {
        const st = analyseStream(rs, {maxGap, limitOn, limitOff, window: win, t0});
        const kw = st.keyframes.map((k) => `${rel(k.t)}:${k.w || '?'}`).join(' ');
        lines.push(`ssrc ${ssrc}: ${st.packets} packets; gaps ${st.gaps.length} (largest ${st.maxGap} missing, ${st.missingAtEnd} never filled), ${st.lateFills} late fills (retransmissions), ${st.dups} duplicates; ` +
            `largest forward timestamp step ${st.maxTsJump} ticks; ${st.violations.length + (st.violationsOmitted || 0)} continuity violations`);
        lines.push(`ssrc ${ssrc}: keyframes (time:width) ${kw || 'none'}; ${st.fps.toFixed(1)} frames/s, ${Math.round(st.kbps)} kbit/s over its ${((st.lastT - st.firstT) / 1000).toFixed(1)} s`);
        for (const j of st.tsJumpsNoted.slice(0, 5)) {
            lines.push(`ssrc ${ssrc}: timestamp step over 1 s away from any switch (publisher-side, not judged) at ${rel(j.r.t_ms)}: ${j.detail}`);
        }
        for (const v of st.violations.slice(0, 10)) {
            lines.push(`ssrc ${ssrc}: ${strict ? 'VIOLATION' : 'observed'} ${v.kind} at ${rel(v.t)}: ${v.detail}`);
        }
        for (const sw of st.switches) {
            lines.push(`ssrc ${ssrc}: layer switch ${sw.from} -> ${sw.to} at ${rel(sw.t)} (${sw.shaped ? 'shaping in force' : 'no shaping'}): ` +
                (sw.pred
                    ? `previous packet seq ${sw.pred.seq} (marker ${sw.pred.marker}, ${sw.pauseMs.toFixed(0)} ms earlier) -> keyframe seq +${sw.seqDelta}${sw.contiguous ? ' (contiguous)' : ''}, ts +${sw.tsDelta}, PictureID ${sw.pred.pid} -> ${sw.pid} (+${sw.pidDelta}), TL0PICIDX ${sw.pred.tl0} -> ${sw.tl0}${sw.tl0Delta !== null ? ` (+${sw.tl0Delta})` : ''}; ` +
                        `${sw.gapsNearFirst} packets missing within ±${win} on arrival, ${sw.gapsNear} never filled`
                    : 'no earlier packet'));
            for (const e of sw.excerpt) {
                lines.push(`    ${e}`);
            }
            summary.switches.push({ssrc, from: sw.from, to: sw.to, t: rel(sw.t), shaped: sw.shaped, seqDelta: sw.seqDelta, pidDelta: sw.pidDelta, tsDelta: sw.tsDelta});
        }
        summary.violations += st.violations.length + (st.violationsOmitted || 0);
        if (strict) {
            for (const v of st.violations.slice(0, 3)) {
                problems.push(`${v.kind} at ${rel(v.t)}: ${v.detail}`);
            }
            if (st.violations.length > 3) {
                problems.push(`… ${st.violations.length - 3 + (st.violationsOmitted || 0)} more continuity violations`);
            }
            for (const sw of st.switches) {
                const where = `switch ${sw.from} -> ${sw.to} at ${rel(sw.t)}`;
                if (!sw.pred) {
                    problems.push(`${where}: no packet before the switch keyframe`);
                    continue;
                }
                if (sw.contiguous && sw.pidDelta !== 1) {
                    problems.push(`${where}: PictureID ${sw.pred.pid} -> ${sw.pid}, want +1`);
                }
                if (!sw.shaped && (!sw.contiguous || sw.gapsNearFirst > 0)) {
                    problems.push(`${where}: with no shaping in force the stream has gaps around the switch (seq +${sw.seqDelta}, ${sw.gapsNearFirst} missing within ±${win})`);
                }
            }
        }
        summary.switchCount = (summary.switchCount || 0) + st.switches.length;
    }
    if (strict) {
        if (bySSRC.size !== 1) {
            problems.unshift(`the screen track arrived on ${bySSRC.size} SSRCs (${[...bySSRC.keys()].join(', ')}), want one`);
        }
        if (!summary.switchCount) {
            if (metricSwitches > 0) {
                lines.push(`no width change seen in the keyframes, but rtcd_rtc_layer_switches_total is ${metricSwitches}`);
            } else {
                problems.push(`no layer switch: the keyframe widths never changed${metricSwitches !== null ? ` and rtcd_rtc_layer_switches_total is ${metricSwitches}` : ''}`);
            }
        }
    }
    return {problems, lines, summary};
}

// --- the scenario ----------------------------------------------------------------------

export function weriftScenarios({out, sleep, bounded, setVerdict, shapeDev, rtcdURL, serverLabel, runDir, netnsExec, bRelayURL}) {
    const upSeconds = num('E2E_WERIFT_UP_SECONDS', 45);
    const holdSeconds = num('E2E_WERIFT_H_HOLD_SECONDS', 2);
    const limitSeconds = num('E2E_WERIFT_LIMIT_SECONDS', 8);
    const backSeconds = num('E2E_WERIFT_BACK_SECONDS', 40);
    const shape = process.env.E2E_WERIFT_SHAPE || 'drop';
    const dropPercent = num('E2E_WERIFT_DROP_PERCENT', 15);
    const rate = process.env.E2E_WERIFT_RATE || '800kbit';

    async function metricSwitches() {
        const text = await (await fetch(`${rtcdURL}/metrics`, {signal: AbortSignal.timeout(5000)})).text();
        const lines = text.split('\n').filter((l) => l.startsWith('rtcd_rtc_layer_switches_total'));
        return {lines, sum: lines.reduce((a, l) => a + Number(l.trim().split(/\s+/).pop()), 0), present: lines.length > 0};
    }

    function startViewer() {
        if (!netnsExec || !bRelayURL) {
            throw new Error('scenario werift needs E2E_B_NETNS_EXEC and E2E_B_RELAY_URL (run.sh sets up the viewer namespace)');
        }
        const file = path.join(runDir, 'werift-packets.tsv');
        const env = {...process.env, RELAY_WS: bRelayURL.replace(/^http/, 'ws') + '/signal?label=W', OUT: file, VIEWER_LABEL: 'W'};
        const child = spawn(netnsExec, [process.execPath, path.join(here, 'werift-viewer.mjs')], {env, stdio: ['pipe', 'pipe', 'pipe']});
        const v = {child, file, connected: false, joined: null, keyframes: [], stats: null, errors: [], exitCode: null, tracks: []};
        const vlog = fs.createWriteStream(path.join(runDir, 'werift.log'));
        const stamp = () => new Date().toISOString().slice(11, 23);
        readline.createInterface({input: child.stdout}).on('line', (line) => {
            vlog.write(`${stamp()} ${line}\n`);
            let m;
            try {
                m = JSON.parse(line);
            } catch {
                return;
            }
            switch (m.ev) {
            case 'joined':
                v.joined = m.sessionID;
                break;
            case 'connected':
                v.connected = true;
                break;
            case 'keyframe':
                v.keyframes.push({...m, at: Date.now()});
                break;
            case 'stats':
                v.stats = m;
                break;
            case 'track':
                v.tracks.push(m);
                out(`werift viewer: track ${m.n} ${m.kind} mid ${m.mid}`);
                break;
            case 'ssrc':
                out(`werift viewer: screen packets on SSRC ${m.ssrc} (mid ${m.mid}, first seq ${m.seq}${m.routed ? '' : ', an SSRC werift has no receiver for'})`);
                break;
            case 'error':
                v.errors.push(`${m.what}: ${m.error}`);
                out(`werift viewer error: ${m.what}: ${m.error.split('\n')[0]}`);
                break;
            default:
                break;
            }
        });
        readline.createInterface({input: child.stderr}).on('line', (l) => vlog.write(`${stamp()} stderr: ${l}\n`));
        v.exited = new Promise((resolve) => {
            child.on('exit', (code, sig) => {
                v.exitCode = code === null ? `signal ${sig}` : code;
                vlog.write(`${stamp()} exited ${v.exitCode}\n`);
                resolve(v.exitCode);
            });
            child.on('error', (e) => {
                v.exitCode = `spawn error: ${e.message}`;
                resolve(v.exitCode);
            });
        });
        return v;
    }

    async function stopViewer(v) {
        if (v.exitCode !== null) {
            return;
        }
        v.child.stdin.end();
        await bounded(v.exited, 8000, 'werift viewer exit').catch(() => {
            v.child.kill('SIGKILL');
        });
    }

    async function werift(pages) {
        const [A] = pages;
        const strict = process.env.E2E_WERIFT_MODE ? process.env.E2E_WERIFT_MODE !== 'log' : !/ref/i.test(serverLabel);
        out(`werift scenario, ${strict ? 'strict mode (one SSRC, continuous seq/timestamp/PictureID across switches)' : 'LOG-ONLY mode (reference server: a switch re-adds the track on a new SSRC; only what arrived is reported, and media arriving passes)'}`);
        if (!shapeDev) {
            throw new Error('E2E_SHAPE_DEV is not set (run.sh sets up the veth to the viewer)');
        }
        const v = startViewer();
        try {
            await flow(A, v, strict);
        } finally {
            await stopViewer(v);
        }
    }

    async function flow(A, v, strict) {
        const tStart = Date.now();
        for (;;) {
            if (v.connected) {
                break;
            }
            if (v.exitCode !== null) {
                throw new Error(`werift viewer exited (${v.exitCode}) before connecting; see werift.log`);
            }
            if (Date.now() - tStart > 20000) {
                throw new Error(`werift viewer not connected within 20 s (${v.errors.join('; ') || 'no error'}); see werift.log`);
            }
            await sleep(200);
        }
        out(`werift viewer joined as session ${v.joined} and connected in ${Date.now() - tStart} ms`);

        const scr = await A.page.evaluate((o) => window.e2eStartScreen(o), screenOpts());
        out(`page A: screen share on, ScreenOn screenStreamID ${scr.streamID}, capture ${scr.settings.width}x${scr.settings.height}@${scr.settings.frameRate}`);

        const layers = {};
        let lastPk = 0;
        let lastBytes = 0;
        let i = 0;
        const step = async (phase) => {
            i++;
            await sleep(1000);
            const stA = await bounded(A.page.evaluate(() => window.e2eStats()), 5000, 'getStats A');
            for (const o of stA.outboundVideo) {
                if (o.rid && o.frameWidth) {
                    layers[o.rid] = {w: o.frameWidth, h: o.frameHeight, fps: o.framesPerSecond};
                }
            }
            const s = v.stats || {packets: 0, bytes: 0, keyframes: 0, ssrcs: []};
            const kf = v.keyframes.at(-1);
            out(`${String(i).padStart(3)} ${phase.padEnd(12)} werift: ${s.packets - lastPk} pkts ${Math.round(((s.bytes - lastBytes) * 8) / 1000)} kbit/s, ` +
                `keyframes ${s.keyframes} (last ${kf ? `${kf.w}x${kf.h} pid ${kf.pid} ssrc ${kf.ssrc}` : '-'}), SSRCs ${s.ssrcs.join(',') || '-'}, ${s.conn}` +
                `${i % 3 === 1 ? ` | A: ${stA.outboundVideo.map((o) => `${o.rid}:${o.frameWidth ?? '-'}w/${o.framesPerSecond ?? '-'}fps`).join(' ')}` : ''}`);
            lastPk = s.packets;
            lastBytes = s.bytes;
            if (v.exitCode !== null) {
                throw new Error(`werift viewer exited (${v.exitCode}); see werift.log`);
            }
        };
        const hW = () => layers.h?.w || 1280;
        // Keyframes with a readable width, not RTX copies (rtcd-rs probes with RTX resends of old packets).
        const kfs = () => v.keyframes.filter((k) => k.w > 0 && !k.rtx);
        const onH = (since) => kfs().filter((k) => k.at >= since).at(-1)?.w === hW();

        // Phase 1: the viewer reaches h.
        let tH = null;
        for (let k = 0; k < upSeconds; k++) {
            await step('no limit');
            if (!tH && onH(0)) {
                tH = Date.now();
            }
            if (tH && !onH(0)) {
                tH = null;
            }
            if (tH && Date.now() - tH >= holdSeconds * 1000) {
                break;
            }
        }
        out(`A's layers: ${JSON.stringify(layers)}`);
        const reachedH = Boolean(tH);
        if (!reachedH) {
            // The switches so far (the server's own, e.g. up and straight down
            // again) are still judged; the limit goes on anyway.
            const w = kfs().at(-1)?.w;
            out(`NOTE: the viewer did not stay on h (${holdSeconds}s after a ${hW()}-wide keyframe) within ${upSeconds}s (last keyframe width ${w ?? 'none'}); applying the limit anyway`);
        }

        // Phase 2: degrade the viewer's downlink.
        let desc;
        if (shape === 'tbf') {
            desc = `tbf ${rate}: ${await shaping.rateLimit(shapeDev, rate)}`;
        } else {
            await shaping.udpLoss(shapeDev, dropPercent);
            desc = `nftables drops a random ${dropPercent}% of the UDP leaving ${shapeDev} (towards the viewer)`;
        }
        const limitOn = Date.now();
        out(`limit on: ${desc}`);
        for (let k = 0; k < limitSeconds; k++) {
            await step(shape === 'tbf' ? `tbf ${rate}` : `drop ${dropPercent}%`);
        }
        if (shape === 'tbf') {
            out(`limit: ${await shaping.tcStats(shapeDev)}`);
            await shaping.lift(shapeDev);
        } else {
            out(`drop rule: ${await shaping.lossCounter()}`);
            await shaping.clear();
        }
        const limitOff = Date.now();
        out(`limit lifted after ${((limitOff - limitOn) / 1000).toFixed(1)}s (epoch ms ${limitOn} ${limitOff}, for node werift.mjs <log> ${limitOn} ${limitOff})`);
        const downKf = kfs().find((k) => k.at >= limitOn && k.w !== hW());
        out(`down-switch keyframe under the limit: ${downKf ? `${downKf.w}x${downKf.h} ${((downKf.at - limitOn) / 1000).toFixed(1)}s after the limit (ssrc ${downKf.ssrc}, pid ${downKf.pid})` : 'none seen'}`);

        // Phase 3: back to h.
        let back = null;
        for (let k = 0; k < backSeconds; k++) {
            await step('lifted');
            const kf = kfs().find((x) => x.at > (downKf?.at ?? limitOn) && x.w === hW());
            if (kf) {
                back = ((kf.at - limitOff) / 1000).toFixed(1);
                break;
            }
        }
        out(`up-switch keyframe after lifting: ${back ? `${back}s after the lift` : `none within ${backSeconds}s`}`);
        for (let k = 0; k < 2; k++) {
            await step('after');
        }
        await finish(v, strict, limitOn, limitOff, {downKf, back, reachedH});
    }

    async function finish(v, strict, limitOn, limitOff, extra = {}) {
        await stopViewer(v);
        const m = await metricSwitches().catch((e) => ({error: e.message}));
        out(`GET /metrics: ${m.error ? m.error : m.present ? m.lines.join(' | ') : 'no rtcd_rtc_layer_switches_total'}`);
        const a = analysePackets(v.file, {strict, limitOn, limitOff, metricSwitches: m.present ? m.sum : null});
        for (const l of a.lines) {
            out(l);
        }
        out(`werift summary: ${JSON.stringify(a.summary)}`);
        const unshaped = a.summary.switches.filter((x) => x.to !== x.from && x.to < x.from && !x.shaped);
        if (unshaped.length > 0) {
            out(`NOTE: down-switch(es) with no shaping in force (the server's own decision): ${unshaped.map((x) => `${x.from}->${x.to} at ${x.t}`).join(', ')}`);
        }
        if (!strict) {
            const ok = a.summary.packets > 0;
            setVerdict(ok, ok
                ? `LOG-ONLY (reference server): ${a.summary.packets} screen packets arrived at the werift viewer on ${a.summary.ssrcs} SSRC(s) with ${a.summary.ssrcChanges} SSRC change(s) and ${a.summary.switchCount || 0} in-SSRC width change(s); continuity not asserted`
                : 'LOG-ONLY (reference server): no screen media arrived at the werift viewer');
            return;
        }
        if (a.problems.length > 0) {
            setVerdict(false, a.problems.join('; '));
            return;
        }
        const sw = a.summary.switches.map((s) => `${s.from}->${s.to} at ${s.t} (seq +${s.seqDelta}, PictureID +${s.pidDelta}, ts +${s.tsDelta}${s.shaped ? ', under the limit' : ''})`).join(', ');
        setVerdict(true, `werift viewer got ${a.summary.packets} screen packets on one SSRC; layer switches ${sw || `(metric only: ${m.sum})`}; seq, timestamps and PictureIDs continuous` +
            `${extra.reachedH ? '' : '; (h not held before the limit)'}${extra.downKf ? '' : '; (no down-switch keyframe under the limit)'}${extra.back ? `; back on h ${extra.back}s after lifting` : '; not back on h after lifting'}`);
    }

    return {
        werift: {
            pages: ['A'],
            pageOptions: {},
            perPageOptions: {A: {simulcast: true}},
            flow: werift,
        },
    };
}

// Standalone: re-analyse a kept packet log.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
    const [file, on, off] = process.argv.slice(2);
    const a = analysePackets(file, {strict: process.env.E2E_WERIFT_MODE !== 'log', limitOn: on ? Number(on) : undefined, limitOff: off ? Number(off) : undefined});
    for (const l of a.lines) {
        console.log(l);
    }
    console.log(a.problems.length ? `problems: ${a.problems.join('; ')}` : 'no problems');
}
