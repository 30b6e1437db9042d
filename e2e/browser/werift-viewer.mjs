// werift-viewer.mjs — a scripted WebRTC viewer (werift, pure TypeScript) for the
// "werift" scenario of the browser e2e test. test.mjs starts it inside the
// viewer's own network namespace (run.sh's netns-b.sh wrapper), so everything
// it receives crosses the veth that the test shapes.
//
// It joins the call through relay.mjs's /signal WebSocket exactly as a page
// does, so the relay plays the plugin for it with rtcd's real WebSocket
// protocol (join, rtc SDP/ICE messages, leave):
//   -> {type: "join", av1Support: false}             <- {type: "join", sessionID, …}
//   -> {type: "sdp", data: base64(zlib(JSON {type, sdp}))}   (the webapp deflates its SDP)
//   -> {type: "ice", data: JSON RTCIceCandidateInit}
//   <- {type: "signal", data: rtcd's JSON (offer / answer / candidate)}
// Like calls-common's RTCPeer it creates the DataChannel "calls-dc" first and
// offers (a muted join: no local tracks), answers every offer from rtcd,
// trickles its candidates, and sends "ping" on the DataChannel once a second.
// Like a browser it sends a PLI once a second for a video SSRC that has not
// brought a keyframe yet.
// It offers VP8 with nack, pli and transport-cc (and rtx), and the mid, abs-send-time and
// transport-wide-cc header extensions, so the server gets receiver reports
// (werift sends them every 0.5–1.5 s), NACKs and TWCC feedback.
//
// TWCC feedback is this file's own, not werift's: werift 0.24.4's ReceiverTWCC
// runs per receiver (so the other m-lines' transport-wide sequence numbers look
// lost), reports missing packets as received, ignores sequence wrap, drops the
// padding-only probes before counting them, and its deltas start from the
// previous report's last arrival instead of the reference time, so a
// sender-side estimator (rtcd's GCC, rtcd-rs's str0m) gets no usable estimate
// and never moves the viewer up to h. Here every RTP packet the transport
// routes (media, RTX, padding) is timestamped by its transport-wide sequence
// number, and every 50 ms one RTCP transport-cc feedback (RTPFB FMT 15,
// draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1) covers everything
// since the last one: run-length chunks, received packets with 250 µs deltas
// from the 64 ms reference time, missing ones as not received.
//
// Every video RTP packet the transport routes (hooked in werift's RtpRouter, so
// packets of an SSRC werift has no track for are seen too; RTX unwrapped to
// the media SSRC and original seq; padding-only probes skipped) is appended to
// $OUT (TSV, one line a packet, header line first):
//   t_ms  (arrival, epoch ms: performance.timeOrigin + performance.now())
//   ssrc seq ts marker pt mid (from rtcd's a=ssrc lines, else the sdes:mid extension)
//   routed (1: werift has a receiver for the SSRC) rtx (1: came as an RTX retransmission)
//   s pid tl0 tid key (VP8 descriptor: start of partition 0, 15/7-bit PictureID
//                      or -1, TL0PICIDX or -1, TID or -1; key 1 when the VP8
//                      payload header's P bit is 0, only on a frame's first packet)
//   w h (from a keyframe's header: bytes 6–9 after the 3-byte frame tag, 14 bits each)
//   len (payload bytes)
// Stdout carries JSON lines for test.mjs: {"ev": "joined" | "connected" |
// "track" | "keyframe" | "stats" | "signal" | "error" | "closed", …}. It stops on SIGTERM or
// when stdin closes ("leave" to the relay, then exit).
//
// Environment: RELAY_WS (ws://198.18.0.1:8099/signal?label=W), OUT (packet log),
// VIEWER_LABEL (W).

import fs from 'node:fs';
import zlib from 'node:zlib';
import {performance} from 'node:perf_hooks';

import WebSocket from 'ws';
import {
    RTCPeerConnection, RTCRtpCodecParameters, RTCRtpReceiver, RTP_EXTENSION_URI, useNACK, usePLI, useTWCC, useOPUS, useVP8,
    useSdesMid, useAbsSendTime, useTransportWideCC,
} from 'werift';

const relayWS = process.env.RELAY_WS || 'ws://198.18.0.1:8099/signal?label=W';
const outFile = process.env.OUT || '/tmp/werift-packets.tsv';
const label = process.env.VIEWER_LABEL || 'W';

const emit = (ev, o = {}) => process.stdout.write(JSON.stringify({ev, t: Math.round(performance.now()), ...o}) + '\n');
const out = fs.createWriteStream(outFile);
out.write('t_ms\tssrc\tseq\tts\tmarker\tpt\tmid\trouted\trtx\ts\tpid\ttl0\ttid\tkey\tw\th\tlen\n');

// VP8 RTP payload descriptor (RFC 7741 §4.2) and, on a frame's first packet,
// the payload header (§4.3) and a keyframe's size (RFC 6386 §9.1).
function parseVP8(p) {
    const r = {s: 0, pid: -1, tl0: -1, tid: -1, key: 0, w: 0, h: 0};
    if (p.length < 1) {
        return r;
    }
    let i = 0;
    const b0 = p[i++];
    const x = b0 & 0x80;
    r.s = (b0 & 0x10) && (b0 & 0x07) === 0 ? 1 : 0; // S, partition 0
    if (x) {
        const b1 = p[i++];
        if (b1 & 0x80) { // I
            const m = p[i] & 0x80;
            if (m) {
                r.pid = ((p[i] & 0x7f) << 8) | p[i + 1];
                i += 2;
            } else {
                r.pid = p[i] & 0x7f;
                i += 1;
            }
        }
        if (b1 & 0x40) { // L
            r.tl0 = p[i++];
        }
        if (b1 & 0x30) { // T or K
            if (b1 & 0x20) {
                r.tid = p[i] >> 6;
            }
            i++;
        }
    }
    if (r.s && i < p.length) {
        const h0 = p[i];
        if ((h0 & 0x01) === 0) { // P = 0: keyframe
            r.key = 1;
            // 3-byte frame tag, start code 9d 01 2a, then width/height (14 bits + 2 scale bits, LE).
            if (i + 10 <= p.length && p[i + 3] === 0x9d && p[i + 4] === 0x01 && p[i + 5] === 0x2a) {
                r.w = (p[i + 6] | (p[i + 7] << 8)) & 0x3fff;
                r.h = (p[i + 8] | (p[i + 9] << 8)) & 0x3fff;
            }
        }
    }
    return r;
}

// werift's own TWCC feedback off (see above): never set up a ReceiverTWCC.
RTCRtpReceiver.prototype.setupTWCC = function setupTWCC() {};

const pc = new RTCPeerConnection({
    iceServers: [], // no STUN: the namespace has no route out
    iceUseIpv6: false,
    codecs: {
        audio: [useOPUS()],
        video: [
            useVP8({rtcpFeedback: [useNACK(), usePLI(), useTWCC()]}),
            new RTCRtpCodecParameters({mimeType: 'video/rtx', clockRate: 90000}),
        ],
    },
    headerExtensions: {
        audio: [useSdesMid(), useTransportWideCC()],
        video: [useSdesMid(), useAbsSendTime(), useTransportWideCC()],
    },
});

let ws = null;
let tracks = 0;
const counts = {packets: 0, bytes: 0, keyframes: 0, audio: 0, rtx: 0, padding: 0};
const ssrcs = new Set();
let closing = false;

function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify(msg));
    }
}
const sdpDetail = (sdp) => sdp.split(/\r?\n/).filter((l) => /^(m=|a=(mid|extmap|rtpmap|fmtp|rtcp-fb|ssrc-group|sendonly|recvonly|sendrecv|inactive))/.test(l)).join(' | ');
function sendSDP(desc) {
    const json = JSON.stringify({type: desc.type, sdp: desc.sdp});
    send({type: 'sdp', data: zlib.deflateSync(Buffer.from(json)).toString('base64')});
    emit('sdp-out', {type: desc.type, detail: sdpDetail(desc.sdp)});
}

pc.onIceCandidate.subscribe((c) => {
    if (!c) {
        return;
    }
    const j = typeof c.toJSON === 'function' ? c.toJSON() : c;
    send({type: 'ice', data: JSON.stringify({candidate: j.candidate, sdpMid: j.sdpMid, sdpMLineIndex: j.sdpMLineIndex})});
});
pc.connectionStateChange.subscribe((s) => {
    emit('state', {state: s});
    if (s === 'connected') {
        emit('connected');
    }
});
// The tracks werift reports (printed; audio packets are counted). Video packets
// are recorded below, where the transport routes them, not here: werift only
// delivers a track's first SSRC, so a track that the server removes and adds
// again on a new SSRC in the same m-section (the reference rtcd's layer switch)
// would go unseen.
pc.onTrack.subscribe((track) => {
    const n = ++tracks;
    const trx = pc.getTransceivers().find((t) => t.receiver.tracks.includes(track));
    emit('track', {n, kind: track.kind, id: track.id, mid: trx?.mid ?? '?', ssrc: track.ssrc});
    if (track.kind !== 'video') {
        track.onReceiveRtp.subscribe(() => counts.audio++);
    }
});

// From rtcd's offers: payload types (VP8, and RTX with its apt), which m-section
// (mid) each SSRC belongs to, and RTX SSRC -> media SSRC (ssrc-group FID).
const remote = {vp8: new Set(), rtxApt: new Map(), ssrcMid: new Map(), rtxMedia: new Map()};
function learnRemoteSDP(sdp) {
    let mid = null;
    let video = false;
    for (const l of sdp.split(/\r?\n/)) {
        let m;
        if (l.startsWith('m=')) {
            video = l.startsWith('m=video');
            mid = null;
        } else if ((m = l.match(/^a=mid:(\S+)/))) {
            mid = m[1];
        } else if (!video) {
            continue;
        } else if ((m = l.match(/^a=rtpmap:(\d+) VP8\/90000/i))) {
            remote.vp8.add(Number(m[1]));
        } else if ((m = l.match(/^a=fmtp:(\d+) apt=(\d+)/))) {
            remote.rtxApt.set(Number(m[1]), Number(m[2]));
        } else if ((m = l.match(/^a=ssrc:(\d+) /))) {
            if (mid !== null) {
                remote.ssrcMid.set(Number(m[1]), mid);
            }
        } else if ((m = l.match(/^a=ssrc-group:FID (\d+) (\d+)/))) {
            remote.rtxMedia.set(Number(m[2]), Number(m[1]));
        }
    }
}

// Records one video RTP packet (VP8, or VP8 inside RTX: unwrapped to its media
// SSRC and original sequence number; padding-only probes are skipped).
let lastVideoSSRC = 0;
// Per media SSRC: last packet time and whether a keyframe came (for PLI, below).
const videoSSRCs = new Map();
function recordVideo(packet, extensions) {
    const hd = packet.header;
    let ssrc = hd.ssrc;
    let seq = hd.sequenceNumber;
    let payload = packet.payload;
    let rtx = 0;
    const apt = remote.rtxApt.get(hd.payloadType);
    if (apt !== undefined && remote.vp8.has(apt)) {
        if (payload.length <= 2) {
            counts.padding++;
            return;
        }
        rtx = 1;
        seq = payload.readUInt16BE(0);
        payload = payload.subarray(2);
        ssrc = remote.rtxMedia.get(ssrc) ?? lastVideoSSRC;
        counts.rtx++;
    } else if (!remote.vp8.has(hd.payloadType)) {
        return;
    } else if (payload.length === 0) {
        counts.padding++;
        return;
    }
    lastVideoSSRC = ssrc;
    const t = performance.timeOrigin + performance.now();
    const v = parseVP8(payload);
    const vs = videoSSRCs.get(ssrc) || {key: false, last: 0, plis: 0};
    vs.last = t;
    vs.key ||= Boolean(v.key);
    videoSSRCs.set(ssrc, vs);
    const midExt = extensions?.find((e) => e.id === extId(RTP_EXTENSION_URI.sdesMid));
    const mid = remote.ssrcMid.get(ssrc) ?? (midExt ? midExt.payload.toString() : '?');
    const routed = pc.router.ssrcTable?.[hd.ssrc] ? 1 : 0;
    counts.packets++;
    counts.bytes += payload.length;
    if (!ssrcs.has(ssrc)) {
        ssrcs.add(ssrc);
        emit('ssrc', {ssrc, mid, seq, routed});
    }
    out.write(`${t.toFixed(1)}\t${ssrc}\t${seq}\t${hd.timestamp}\t${hd.marker ? 1 : 0}\t${hd.payloadType}\t${mid}\t${routed}\t${rtx}\t` +
        `${v.s}\t${v.pid}\t${v.tl0}\t${v.tid}\t${v.key}\t${v.w}\t${v.h}\t${payload.length}\n`);
    if (v.key) {
        counts.keyframes++;
        emit('keyframe', {ssrc, seq, pid: v.pid, w: v.w, h: v.h, rtx});
    }
}

// --- transport-wide congestion control feedback -------------------------------------
const twcc = {
    arrivals: new Map(), // extended transport seq -> arrival µs
    highest: null, // highest extended seq seen
    next: null, // first extended seq not yet reported
    fbCount: 0,
    sent: 0,
    mediaSsrc: 0,
    senderSsrc: 0x7e57_0001,
};
function extId(want) {
    for (const [id, uri] of Object.entries(pc.router.extIdUriMap || {})) {
        if (uri === want) {
            return Number(id);
        }
    }
    return null;
}
const routeRtp = pc.router.routeRtp;
pc.router.routeRtp = (packet) => {
    const id = extId(RTP_EXTENSION_URI.transportWideCC);
    const ext = id !== null ? packet.header.extensions?.find((e) => e.id === id) : null;
    if (ext && ext.payload.length >= 2) {
        const seq = ext.payload.readUInt16BE(0);
        const now = Math.round((performance.timeOrigin + performance.now()) * 1000);
        let x = seq;
        if (twcc.highest !== null) {
            x = twcc.highest + (((seq - (twcc.highest & 0xffff) + 0x8000) & 0xffff) - 0x8000);
        }
        if (twcc.next === null) {
            twcc.next = x;
        }
        if (x >= twcc.next && !twcc.arrivals.has(x)) {
            twcc.arrivals.set(x, now);
        }
        if (twcc.highest === null || x > twcc.highest) {
            twcc.highest = x;
        }
        if (!twcc.mediaSsrc) {
            twcc.mediaSsrc = packet.header.ssrc;
        }
    }
    try {
        recordVideo(packet, packet.header.extensions);
    } catch (e) {
        emit('error', {what: 'record', error: String(e?.stack || e)});
    }
    routeRtp(packet);
};
function twccFeedback() {
    if (twcc.highest === null || twcc.highest < twcc.next) {
        return null;
    }
    // From the first packet not yet reported (lost ones too) to the highest seen.
    const base = twcc.next;
    const end = Math.min(twcc.highest, base + 8000);
    let firstArrival;
    for (let x = base; x <= end && firstArrival === undefined; x++) {
        firstArrival = twcc.arrivals.get(x);
    }
    if (firstArrival === undefined) {
        return null; // nothing received yet in the range: wait
    }
    const refTime = Math.floor(firstArrival / 64000);
    let prevQ = refTime * 64000;
    const statuses = [];
    const deltas = [];
    for (let x = base; x <= end; x++) {
        const a = twcc.arrivals.get(x);
        if (a === undefined) {
            statuses.push(0);
            continue;
        }
        let d = Math.round((a - prevQ) / 250);
        d = Math.max(-32768, Math.min(32767, d));
        prevQ += d * 250;
        if (d >= 0 && d <= 255) {
            statuses.push(1);
            const b = Buffer.alloc(1);
            b.writeUInt8(d);
            deltas.push(b);
        } else {
            statuses.push(2);
            const b = Buffer.alloc(2);
            b.writeInt16BE(d);
            deltas.push(b);
        }
        twcc.arrivals.delete(x);
    }
    for (const k of twcc.arrivals.keys()) {
        if (k < end + 1) {
            twcc.arrivals.delete(k);
        }
    }
    twcc.next = end + 1;
    // Run-length chunks: T=0, S (2 bits), run length (13 bits).
    const chunks = [];
    for (let i = 0; i < statuses.length;) {
        let j = i;
        while (j < statuses.length && statuses[j] === statuses[i] && j - i < 8191) {
            j++;
        }
        const c = Buffer.alloc(2);
        c.writeUInt16BE((statuses[i] << 13) | (j - i));
        chunks.push(c);
        i = j;
    }
    const fixed = Buffer.alloc(20);
    const body = Buffer.concat([fixed, ...chunks, ...deltas]);
    const pad = (4 - (body.length % 4)) % 4;
    const pkt = Buffer.concat([body, Buffer.alloc(pad)]);
    if (pad > 0) {
        pkt[pkt.length - 1] = pad;
    }
    pkt[0] = 0x80 | (pad > 0 ? 0x20 : 0) | 15; // V=2, P, FMT=15
    pkt[1] = 205; // RTPFB
    pkt.writeUInt16BE(pkt.length / 4 - 1, 2);
    pkt.writeUInt32BE(twcc.senderSsrc, 4);
    pkt.writeUInt32BE(twcc.mediaSsrc >>> 0, 8);
    pkt.writeUInt16BE(base & 0xffff, 12);
    pkt.writeUInt16BE(statuses.length, 14);
    pkt.writeUIntBE(refTime & 0xffffff, 16, 3);
    pkt.writeUInt8(twcc.fbCount, 19);
    twcc.fbCount = (twcc.fbCount + 1) & 0xff;
    return pkt;
}
setInterval(() => {
    const dtls = pc.dtlsTransports?.find((t) => t.state === 'connected');
    if (!dtls) {
        return;
    }
    const pkt = twccFeedback();
    if (pkt) {
        twcc.sent++;
        dtls.sendRtcp([{serialize: () => pkt}]).catch((e) => emit('error', {what: 'twcc', error: String(e)}));
    }
}, 50).unref();

// A browser asks for a keyframe when a stream starts without one (it cannot
// decode): so does this viewer, once a second, by RTCP PLI (PSFB FMT 1, RFC 4585
// §6.3.1) for every video SSRC that is still arriving and has not brought a
// keyframe yet (werift does not, and has no receiver at all for an SSRC that
// replaced its track's first one, as the reference rtcd's layer switch does).
setInterval(() => {
    const dtls = pc.dtlsTransports?.find((t) => t.state === 'connected');
    if (!dtls) {
        return;
    }
    const now = performance.timeOrigin + performance.now();
    for (const [ssrc, vs] of videoSSRCs) {
        if (vs.key || now - vs.last > 2000) {
            continue;
        }
        const pkt = Buffer.alloc(12);
        pkt[0] = 0x80 | 1; // V=2, FMT=1 (PLI)
        pkt[1] = 206; // PSFB
        pkt.writeUInt16BE(2, 2);
        pkt.writeUInt32BE(twcc.senderSsrc, 4);
        pkt.writeUInt32BE(ssrc >>> 0, 8);
        vs.plis++;
        emit('pli', {ssrc, n: vs.plis});
        dtls.sendRtcp([{serialize: () => pkt}]).catch((e) => emit('error', {what: 'pli', error: String(e)}));
    }
}, 1000).unref();

// calls-common's RTCPeer: the DataChannel first, then the offer.
const dc = pc.createDataChannel('calls-dc');
dc.stateChanged?.subscribe?.((s) => emit('dc', {state: s}));
setInterval(() => {
    if (dc.readyState === 'open') {
        dc.send('ping');
    }
}, 1000).unref();

// rtcd's signals, one at a time (an offer must be answered before the next is applied).
let chain = Promise.resolve();
const pendingCandidates = [];
function onSignal(text) {
    chain = chain.then(async () => {
        const msg = JSON.parse(text);
        if (msg.type !== 'candidate') {
            emit('signal', {type: msg.type, state: pc.signalingState, detail: sdpDetail(msg.sdp || '')});
        }
        switch (msg.type) {
        case 'offer':
            learnRemoteSDP(msg.sdp);
            if (pc.signalingState === 'have-local-offer') {
                // Polite peer, as calls-common: give up our offer.
                await pc.setLocalDescription({type: 'rollback'});
            }
            await pc.setRemoteDescription({type: 'offer', sdp: msg.sdp});
            await pc.setLocalDescription(await pc.createAnswer());
            sendSDP(pc.localDescription);
            break;
        case 'answer':
            learnRemoteSDP(msg.sdp);
            await pc.setRemoteDescription({type: 'answer', sdp: msg.sdp});
            for (const c of pendingCandidates.splice(0)) {
                await pc.addIceCandidate(c).catch((e) => emit('error', {what: 'addIceCandidate', error: String(e)}));
            }
            break;
        case 'candidate':
            if (pc.remoteDescription) {
                await pc.addIceCandidate(msg.candidate).catch((e) => emit('error', {what: 'addIceCandidate', error: String(e)}));
            } else {
                pendingCandidates.push(msg.candidate);
            }
            break;
        default:
            emit('error', {what: 'signal', error: `unknown type ${msg.type}`});
        }
    }).catch((e) => emit('error', {what: 'signal', error: String(e?.stack || e)}));
}

ws = new WebSocket(relayWS);
ws.on('error', (e) => {
    emit('error', {what: 'ws', error: e.message});
    process.exit(1);
});
ws.on('close', () => {
    emit('closed', {what: 'ws'});
    if (!closing) {
        stop('relay WS closed');
    }
});
ws.on('message', async (raw) => {
    const msg = JSON.parse(raw.toString());
    switch (msg.type) {
    case 'join': {
        emit('joined', {sessionID: msg.sessionID, callID: msg.callID});
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        sendSDP(pc.localDescription);
        break;
    }
    case 'signal':
        onSignal(msg.data);
        break;
    case 'close':
        emit('closed', {what: 'rtcd', data: msg.data});
        break;
    case 'error':
        emit('error', {what: 'relay', error: msg.error});
        break;
    default:
        break;
    }
});
ws.on('open', () => send({type: 'join', av1Support: false}));

const statsTimer = setInterval(() => {
    emit('stats', {...counts, ssrcs: [...ssrcs], tracks, conn: pc.connectionState, twccFeedback: twcc.sent, twccHighest: twcc.highest});
}, 1000);

async function stop(why) {
    if (closing) {
        return;
    }
    closing = true;
    clearInterval(statsTimer);
    emit('stopping', {why, ...counts, ssrcs: [...ssrcs]});
    send({type: 'leave'});
    await new Promise((r) => out.end(r));
    try {
        ws?.close();
        await pc.close();
    } catch {
        // already closed
    }
    emit('exit');
    setTimeout(() => process.exit(0), 100);
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
process.stdin.on('end', () => stop('stdin closed'));
process.stdin.resume();
