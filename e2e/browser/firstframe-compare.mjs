// firstframe-compare.mjs — compares the "FIRSTFRAME {json}" lines of the firstframe scenario
// (firstframe.mjs) from the reference rtcd and from ours, and passes when, for every measure,
// our median is no later than the reference's.
//
//   node firstframe-compare.mjs <reference test output> <our test output>
//
// Each file is the output of one `run.sh <server> <label> firstframe` (a round without a result
// within the scenario's limit counts as later than any other). Judged is each measure's part
// after the publisher's own first frame (video: encoded) or packet (audio: sent), the way
// through the server to the viewer; the whole time from the action is printed beside it. The
// part before (the publisher's browser starting its capture and encoder) is the same code for
// both servers, and on a loaded machine it moves by seconds between runs.
// "No later" allows TOLERANCE_MS, the granularity of the measurement itself: the pages poll
// getStats every 20 ms, but Chromium answers getStats from a cache for 50 ms, and a publisher's
// audio goes out in 20 ms frames, so two equal servers differ by up to that much.
// Prints a table and a "PASS [rtcd-rs-vs-ref] firstframe ..." or "FAIL [..] ..." line; exits 1
// on a failure, 2 when a file has no FIRSTFRAME line.

import fs from 'node:fs';

const TOLERANCE_MS = 50;

const MEASURES = [
    ['audioFirst', 'first unmute -> first audio packet'],
    ['audioUnmute', 'unmute -> first audio packet'],
    ['camera', 'VideoOn -> first camera frame decoded'],
    ['screen', 'ScreenOn -> first screen frame decoded'],
];

// The median, a missing result (none within the scenario's limit) counting as later than any.
export function median(values) {
    if (values.length === 0) {
        return null;
    }
    const v = values.map((x) => (typeof x === 'number' ? x : Infinity)).sort((a, b) => a - b);
    const m = Math.floor(v.length / 2);
    return v.length % 2 === 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

const show = (x) => (x === null ? '-' : x === Infinity ? 'never' : String(Math.round(x)));

export function parse(text) {
    const line = text.split('\n').find((l) => l.includes('FIRSTFRAME {'));
    if (!line) {
        return null;
    }
    return JSON.parse(line.slice(line.indexOf('{')));
}

// The verdict per measure: our median way through the server no later than the reference's
// plus the tolerance.
export function compare(ref, ours, tolerance = TOLERANCE_MS) {
    return MEASURES.map(([key, what]) => {
        const path = `${key}Path`;
        const r = median(ref[path] || []);
        const o = median(ours[path] || []);
        const ok = r !== null && o !== null && o !== Infinity && o <= r + tolerance;
        return {
            key, what, ref: ref[path], ours: ours[path], refMedian: r, oursMedian: o, ok,
            refTotal: median(ref[key] || []), oursTotal: median(ours[key] || []),
        };
    });
}

function main() {
    const [refFile, oursFile] = process.argv.slice(2);
    if (!refFile || !oursFile) {
        console.error('usage: firstframe-compare.mjs <reference output> <our output>');
        process.exit(2);
    }
    const ref = parse(fs.readFileSync(refFile, 'utf8'));
    const ours = parse(fs.readFileSync(oursFile, 'utf8'));
    if (!ref || !ours) {
        console.error(`firstframe-compare: no FIRSTFRAME line in ${!ref ? refFile : oursFile}`);
        process.exit(2);
    }
    const rows = compare(ref, ours);
    console.log(`first media, ms: median over the rounds of the way from the publisher's first frame/packet to the viewer (judged: ours <= reference + ${TOLERANCE_MS} ms), and of the whole time from the action:`);
    for (const r of rows) {
        console.log(`  ${r.what.padEnd(40)} reference ${show(r.refMedian).padStart(5)} [${(r.ref || []).map(show).join(', ')}] whole ${show(r.refTotal)}` +
            `   ours ${show(r.oursMedian).padStart(5)} [${(r.ours || []).map(show).join(', ')}] whole ${show(r.oursTotal)}   ${r.ok ? 'ok' : 'LATER'}`);
    }
    for (const key of ['audioFirstHeard', 'audioUnmuteHeard']) {
        console.log(`  ${key.padEnd(40)} reference ${show(median(ref[key] || [])).padStart(5)} [${(ref[key] || []).map(show).join(', ')}]` +
            `   ours ${show(median(ours[key] || [])).padStart(5)} [${(ours[key] || []).map(show).join(', ')}]   (from the action; B's jitter buffer: reported, not judged)`);
    }
    const bad = rows.filter((r) => !r.ok);
    const summary = rows.map((r) => `${r.key} ${show(r.oursMedian)} vs ${show(r.refMedian)} (whole ${show(r.oursTotal)} vs ${show(r.refTotal)})`).join(', ');
    if (bad.length === 0) {
        console.log(`PASS [rtcd-rs-vs-ref] firstframe: ours no later than rtcd (${summary} ms)`);
    } else {
        console.log(`FAIL [rtcd-rs-vs-ref] firstframe: ours later than rtcd on ${bad.map((r) => r.key).join(', ')} (${summary} ms)`);
        process.exit(1);
    }
}

if (import.meta.url === `file://${process.argv[1]}`) {
    main();
}
