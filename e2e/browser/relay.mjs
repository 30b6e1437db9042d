// relay.mjs — a stand-in for the Mattermost Calls plugin, for the browser e2e test.
//
// Towards rtcd it does what the plugin does (plugin: server/rtcd.go,
// websocket.go): it registers a client id/auth key (through the admin key in
// RTCD_ADMIN_KEY, or by self-registration when that is empty), opens
// ws(s)://host/ws with Basic auth, and speaks the binary protocol: every frame
// is two concatenated msgpack values, the message type (str) and its data.
//   page "join" {av1Support?} -> rtcd join {callID,userID,sessionID,channelID,av1Support,dcSignaling}
//     (av1Support is what the page asks for, false by default, like the webapp's joinData)
//   page "sdp"   -> zlib-inflated JSON {"type","sdp"} -> rtc.Message type 2
//   page "ice"   -> JSON RTCIceCandidateInit          -> rtc.Message type 1
//   page "mute"/"unmute" -> rtc.Message type 3/4
//   page "screen_on" {data: '{"screenStreamID":…}'} / "screen_off" -> rtc.Message type 5/6
//   page "video_on" {data: '{"videoStreamID":…}'} / "video_off"    -> rtc.Message type 9/10
//     (the plugin relays the webapp's JSON string unchanged as the data bytes)
//   page WS closed -> rtcd leave {sessionID}
//   rtcd rtc (SDP/ICE) -> page "signal" {data: the JSON string}, which the page
//   hands to calls-common's RTCPeer.signal() as the webapp does.
//   rtcd close/vad     -> page "close"/"vad".
//
// Towards the pages it serves the test page and a bundle of calls-common's
// RTCPeer over HTTP, and a JSON WebSocket at /signal, on loopback only.
//
// Environment: RTCD_URL (default http://127.0.0.1:8045), RTCD_ADMIN_KEY,
// RELAY_ADDR (default 127.0.0.1:8099), RELAY_CALL_ID (default random),
// RELAY_CLIENT_ID / RELAY_AUTH_KEY (the client to register; default random:
// run.sh sets them so that a second plugin-like connection, the pion peer of
// the "mixed" scenario, can join the same group), and TURN_URL with
// TURN_SECRET: when both are set, every join ack carries
// iceServers [{urls: TURN_URL, username: "<unix expiry>:<sessionID>",
// credential: base64(HMAC-SHA1(TURN_SECRET, username))}], coturn's
// use-auth-secret (TURN REST) scheme, the one rtcd and the plugin use.
// Logs go to stdout; every line starts with the elapsed time.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import {fileURLToPath} from 'node:url';

import {encode, decodeMulti} from '@msgpack/msgpack';
import esbuild from 'esbuild';
import WebSocket, {WebSocketServer} from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(3)}] relay:`, ...a);

const rtcdURL = (process.env.RTCD_URL || 'http://127.0.0.1:8045').replace(/\/+$/, '');
const adminKey = process.env.RTCD_ADMIN_KEY || '';
const [listenHost, listenPort] = (process.env.RELAY_ADDR || '127.0.0.1:8099').split(':');

const idAlphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
const randStr = (n, alphabet) => Array.from(crypto.randomBytes(n), (b) => alphabet[b % alphabet.length]).join('');
const newID = () => randStr(26, idAlphabet);

const callID = process.env.RELAY_CALL_ID || newID();
const channelID = newID();
const turnURL = process.env.TURN_URL || '';
const turnSecret = process.env.TURN_SECRET || '';
const turnTTLSeconds = 3600;

const RTC = {ICE: 1, SDP: 2, MUTE: 3, UNMUTE: 4, SCREEN_ON: 5, SCREEN_OFF: 6, VOICE_ON: 7, VOICE_OFF: 8, VIDEO_ON: 9, VIDEO_OFF: 10};

function fatal(msg) {
    log('FATAL:', msg);
    process.exit(1);
}

// --- calls-common RTCPeer bundle for the page --------------------------------

async function bundleCallsCommon() {
    // The npm build of @mattermost/calls-common is ES modules with one bare
    // import ('events'); esbuild resolves it to the npm "events" package.
    const res = await esbuild.build({
        stdin: {
            contents: "export {RTCPeer} from '@mattermost/calls-common/lib/rtc_peer.js';\n",
            resolveDir: here,
            sourcefile: 'calls-common-entry.js',
        },
        bundle: true,
        format: 'iife',
        globalName: 'CallsCommon',
        platform: 'browser',
        target: 'chrome110',
        write: false,
        logLevel: 'silent',
    });
    await esbuild.stop?.();
    const pkg = JSON.parse(fs.readFileSync(path.join(here, 'node_modules/@mattermost/calls-common/package.json'), 'utf8'));
    return {code: res.outputFiles[0].text, version: pkg.version};
}

// --- rtcd side -----------------------------------------------------------------

async function register() {
    const clientID = process.env.RELAY_CLIENT_ID || newID();
    const authKey = process.env.RELAY_AUTH_KEY || randStr(40, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789');
    const headers = {'Content-Type': 'application/json'};
    if (adminKey) {
        headers.Authorization = 'Basic ' + Buffer.from(`admin:${adminKey}`).toString('base64');
    }
    const res = await fetch(`${rtcdURL}/register`, {
        method: 'POST',
        headers,
        body: JSON.stringify({clientID, authKey}),
        signal: AbortSignal.timeout(10000),
    });
    const body = await res.text();
    if (res.status !== 201) {
        fatal(`POST /register (${adminKey ? 'admin key' : 'self-registration'}) = ${res.status} ${body}`);
    }
    log(`registered clientID=${clientID} via ${adminKey ? 'admin key' : 'self-registration'}: ${res.status} ${body.trim()}`);
    return {clientID, authKey};
}

// TURN REST credentials for one session, as the plugin hands them to the
// webapp: username "<unix expiry>:<sessionID>", password
// base64(HMAC-SHA1(secret, username)).
function iceServersFor(sessionID) {
    if (!turnURL || !turnSecret) {
        return [];
    }
    const username = `${Math.floor(Date.now() / 1000) + turnTTLSeconds}:${sessionID}`;
    const credential = crypto.createHmac('sha1', turnSecret).update(username).digest('base64');
    return [{urls: [turnURL], username, credential}];
}

function pack(type, data) {
    const a = encode(type);
    const b = encode(data);
    const out = new Uint8Array(a.length + b.length);
    out.set(a, 0);
    out.set(b, a.length);
    return out;
}

function rtcMessage(sessionID, type, data) {
    // Same keys as rtcd's rtc.Message; the plugin fills only session_id, type, data.
    const m = {group_id: '', user_id: '', session_id: sessionID, call_id: '', type};
    if (data && data.length > 0) {
        m.data = data;
    }
    return m;
}

function sdpSummary(json) {
    try {
        const sd = JSON.parse(json);
        const mlines = (sd.sdp || '').split(/\r?\n/).filter((l) => l.startsWith('m=') || /^a=(sendrecv|sendonly|recvonly|inactive|mid:|ice-lite|simulcast:|rid:)/.test(l));
        return `${sd.type} [${mlines.join(' | ')}]`;
    } catch (e) {
        return `unparsable SDP JSON (${e.message})`;
    }
}

const sessions = new Map(); // sessionID -> {label, ws (page), userID}
let rtcdWS = null;
let hello = null;

function sendRTCD(type, data) {
    if (!rtcdWS || rtcdWS.readyState !== WebSocket.OPEN) {
        log(`cannot send ${type}: rtcd WS not open`);
        return;
    }
    rtcdWS.send(pack(type, data));
}

function toPage(sessionID, msg) {
    const s = sessions.get(sessionID);
    if (!s) {
        log(`message ${msg.type} for unknown session ${sessionID} dropped`);
        return;
    }
    if (s.ws.readyState === WebSocket.OPEN) {
        s.ws.send(JSON.stringify(msg));
    }
}

function onRTCDMessage(buf) {
    let type;
    let data;
    try {
        const it = decodeMulti(new Uint8Array(buf));
        type = it.next().value;
        data = it.next().value;
    } catch (e) {
        log(`undecodable frame from rtcd (${buf.length} bytes): ${e.message}`);
        return;
    }
    switch (type) {
    case 'hello':
        hello = data;
        log(`<- rtcd hello ${JSON.stringify(data)}`);
        break;
    case 'close':
        log(`<- rtcd close ${JSON.stringify(data)}`);
        toPage(data?.sessionID, {type: 'close', data});
        break;
    case 'vad':
        log(`<- rtcd vad session=${data?.session_id} type=${data?.type}`);
        toPage(data?.session_id, {type: 'vad', msgType: data?.type});
        break;
    case 'rtc': {
        const sid = data?.session_id;
        const label = sessions.get(sid)?.label || '?';
        const text = data?.data ? Buffer.from(data.data).toString('utf8') : '';
        if (data?.type === RTC.SDP) {
            log(`<- rtcd rtc SDP for ${label}: ${sdpSummary(text)}`);
        } else if (data?.type === RTC.ICE) {
            log(`<- rtcd rtc ICE for ${label}: ${text}`);
        } else {
            log(`<- rtcd rtc type ${data?.type} for ${label}: ${text}`);
        }
        if (data?.type === RTC.SDP || data?.type === RTC.ICE) {
            toPage(sid, {type: 'signal', data: text});
        }
        break;
    }
    default:
        log(`<- rtcd unexpected message type ${JSON.stringify(type)}: ${JSON.stringify(data)}`);
    }
}

async function connectRTCD({clientID, authKey}) {
    const wsURL = rtcdURL.replace(/^http/, 'ws') + '/ws';
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(wsURL, {
            headers: {Authorization: 'Basic ' + Buffer.from(`${clientID}:${authKey}`).toString('base64')},
            handshakeTimeout: 10000,
        });
        ws.binaryType = 'nodebuffer';
        ws.on('open', () => {
            log(`connected to ${wsURL}`);
            resolve(ws);
        });
        ws.on('message', (buf, isBinary) => {
            if (!isBinary) {
                log(`text frame from rtcd ignored: ${buf}`);
                return;
            }
            onRTCDMessage(buf);
        });
        ws.on('ping', () => log('<- rtcd ping'));
        ws.on('close', (code, reason) => {
            log(`rtcd WS closed: ${code} ${reason}`);
            for (const s of sessions.values()) {
                if (s.ws.readyState === WebSocket.OPEN) {
                    s.ws.send(JSON.stringify({type: 'error', error: `rtcd WS closed (${code})`}));
                }
            }
        });
        ws.on('error', (err) => {
            log(`rtcd WS error: ${err.message}`);
            reject(err);
        });
    });
}

// --- page side -----------------------------------------------------------------

function onPageConnection(ws, req) {
    const label = new URL(req.url, 'http://x').searchParams.get('label') || 'page';
    let sessionID = null;
    log(`page ${label} connected`);

    ws.on('message', (raw) => {
        let msg;
        try {
            msg = JSON.parse(raw.toString());
        } catch (e) {
            log(`page ${label}: bad JSON: ${e.message}`);
            return;
        }
        switch (msg.type) {
        case 'join': {
            if (sessionID) {
                log(`page ${label}: duplicate join ignored`);
                return;
            }
            sessionID = newID();
            const userID = newID();
            sessions.set(sessionID, {label, ws, userID});
            const join = {callID, userID, sessionID, channelID, av1Support: msg.av1Support === true, dcSignaling: false};
            log(`-> rtcd join for ${label}: ${JSON.stringify(join)}`);
            sendRTCD('join', join);
            const iceServers = iceServersFor(sessionID);
            if (iceServers.length > 0) {
                log(`page ${label}: ICE servers ${iceServers[0].urls.join(',')} username ${iceServers[0].username}`);
            }
            ws.send(JSON.stringify({type: 'join', sessionID, userID, callID, channelID, iceServers}));
            break;
        }
        case 'sdp': {
            if (!sessionID) {
                return;
            }
            // The webapp sends zlib-deflated JSON; the plugin inflates it before relaying.
            let json;
            try {
                json = zlib.inflateSync(Buffer.from(msg.data, 'base64'));
            } catch (e) {
                log(`page ${label}: cannot inflate sdp: ${e.message}`);
                return;
            }
            log(`-> rtcd rtc SDP from ${label}: ${sdpSummary(json.toString())}`);
            sendRTCD('rtc', rtcMessage(sessionID, RTC.SDP, new Uint8Array(json)));
            break;
        }
        case 'ice':
            if (!sessionID) {
                return;
            }
            log(`-> rtcd rtc ICE from ${label}: ${msg.data}`);
            sendRTCD('rtc', rtcMessage(sessionID, RTC.ICE, new TextEncoder().encode(msg.data)));
            break;
        case 'mute':
        case 'unmute':
            if (!sessionID) {
                return;
            }
            log(`-> rtcd rtc ${msg.type} from ${label}`);
            sendRTCD('rtc', rtcMessage(sessionID, msg.type === 'mute' ? RTC.MUTE : RTC.UNMUTE, null));
            break;
        case 'screen_on':
        case 'screen_off':
        case 'video_on':
        case 'video_off': {
            if (!sessionID) {
                return;
            }
            const type = {screen_on: RTC.SCREEN_ON, screen_off: RTC.SCREEN_OFF, video_on: RTC.VIDEO_ON, video_off: RTC.VIDEO_OFF}[msg.type];
            const data = typeof msg.data === 'string' ? new TextEncoder().encode(msg.data) : null;
            log(`-> rtcd rtc ${msg.type} (type ${type}) from ${label}${data ? ': ' + msg.data : ''}`);
            sendRTCD('rtc', rtcMessage(sessionID, type, data));
            break;
        }
        case 'leave':
            ws.close();
            break;
        default:
            log(`page ${label}: unknown message type ${msg.type}`);
        }
    });

    ws.on('close', () => {
        log(`page ${label} disconnected`);
        if (sessionID) {
            log(`-> rtcd leave for ${label} (${sessionID})`);
            sendRTCD('leave', {sessionID});
            sessions.delete(sessionID);
        }
    });
}

// --- main ----------------------------------------------------------------------

const bundle = await bundleCallsCommon();
log(`bundled @mattermost/calls-common ${bundle.version} RTCPeer (${bundle.code.length} bytes)`);

const creds = await register();
rtcdWS = await connectRTCD(creds).catch((e) => fatal(`connecting to rtcd: ${e.message}`));

const pageFile = path.join(here, 'page.html');
const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/' || url.pathname === '/page.html') {
        res.writeHead(200, {'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store'});
        res.end(fs.readFileSync(pageFile));
    } else if (url.pathname === '/calls-common.js') {
        res.writeHead(200, {'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'no-store'});
        res.end(bundle.code);
    } else if (url.pathname === '/favicon.ico') {
        res.writeHead(204);
        res.end();
    } else if (url.pathname === '/status') {
        res.writeHead(200, {'Content-Type': 'application/json'});
        res.end(JSON.stringify({
            ready: Boolean(hello) && rtcdWS?.readyState === WebSocket.OPEN,
            hello,
            callID,
            channelID,
            callsCommon: bundle.version,
            sessions: [...sessions.entries()].map(([id, s]) => ({sessionID: id, label: s.label})),
        }));
    } else {
        res.writeHead(404);
        res.end();
    }
});
const wss = new WebSocketServer({server, path: '/signal'});
wss.on('connection', onPageConnection);
server.listen(Number(listenPort), listenHost, () => log(`serving http://${listenHost}:${listenPort}/ (call ${callID})`));

const shutdown = (sig) => {
    log(`${sig}: shutting down`);
    for (const c of wss.clients) {
        c.terminate();
    }
    rtcdWS?.close();
    server.close();
    setTimeout(() => process.exit(0), 300).unref();
};
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
