// The liveness page: runs the protocol of docs/liveness-protocol.md over a WebSocket to the
// service, with the camera from getUserMedia. Every frame is scored by the wasm module
// (web/quality: blur and brightness) before it is sent; a frame too poor to judge is never sent,
// and the page says why. It reads `?ticket=…` (a session made elsewhere) or, without one, shows a
// form that creates a session with a pasted access token, through this same origin.
//
// Stable ids for tests and scripts: #status, #challenge, #quality, #results, #verdict
// (data-state: pending | passed | failed | error).

import init, { score_frame, thresholds } from './quality.js';

const WIDTH = 320;
const HEIGHT = 240;
/** Frames per second sent while an action is performed, and for how long. */
const FPS = 10;
const CAPTURE_MS = 2000;
const JPEG_QUALITY = 0.85;
const SESSIONS_PATH = '/api/v1/kyc/liveness/sessions';
const WS_PATH = '/api/v1/kyc/liveness/ws';

const PROMPTS = {
  blink: 'Blink',
  open_mouth: 'Open your mouth',
  turn_left: 'Turn your head to the left',
  turn_right: 'Turn your head to the right',
  nod: 'Nod',
};

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

function setStatus(text, state = 'info') {
  $('status').textContent = text;
  $('status').dataset.state = state;
}

function log(direction, message) {
  const line = `${new Date().toISOString().slice(11, 23)} ${direction} ${message}\n`;
  $('log').textContent += line;
}

function showVerdict(state, text) {
  $('verdict').dataset.state = state;
  $('verdict').textContent = text;
}

/** The protocol's server messages, one at a time, in order; a close is a message too. */
class Inbox {
  constructor(ws) {
    this.queue = [];
    this.waiting = [];
    ws.addEventListener('message', (event) => {
      if (typeof event.data !== 'string') return;
      log('←', event.data);
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        message = { type: 'unreadable', data: event.data };
      }
      this.push(message);
    });
    ws.addEventListener('close', (event) => {
      log('←', `close ${event.code} ${event.reason}`);
      this.push({ type: 'closed', code: event.code, reason: event.reason });
    });
  }

  push(message) {
    const resolve = this.waiting.shift();
    if (resolve) resolve(message);
    else this.queue.push(message);
  }

  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve) => this.waiting.push(resolve));
  }
}

/** Ends the run: a verdict, an error message, or a close without either. */
class Finished extends Error {
  constructor(message) {
    super(message.type);
    this.serverMessage = message;
  }
}

/** The next message, which must be of `type`; the end of the run otherwise. */
async function expect(inbox, type) {
  const message = await inbox.next();
  if (message.type === type) return message;
  throw new Finished(message);
}

function send(ws, message) {
  const text = JSON.stringify(message);
  log('→', text);
  ws.send(text);
}

async function startCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('this browser has no camera API (getUserMedia needs https or localhost)');
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: WIDTH }, height: { ideal: HEIGHT } },
    audio: false,
  });
  const video = $('camera');
  video.srcObject = stream;
  await video.play();
  while (video.readyState < HTMLMediaElement.HAVE_CURRENT_DATA) await sleep(20);
  return video;
}

function showQuality(q, counts) {
  const numbers = `brightness ${q.brightness.toFixed(0)}, sharpness ${q.blur.toFixed(0)}`;
  const tally = `${counts.sent} sent, ${counts.held} held back`;
  $('quality').dataset.ok = String(q.ok);
  $('quality').textContent = q.ok
    ? `Frame OK (${numbers}); ${tally}.`
    : `Frame not sent: ${q.reason()} (${numbers}); ${tally}.`;
}

function toJpeg(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', JPEG_QUALITY));
}

/**
 * Streams frames for one action: about CAPTURE_MS at FPS (within the server's limits), only those
 * the quality module accepts. Stops early at the action's deadline, with what it has.
 */
async function streamFrames(ws, video, limits, deadlineMs) {
  const canvas = $('frame');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const fps = Math.min(FPS, Math.max(1, limits.max_fps - 2));
  const interval = 1000 / fps;
  const wanted = Math.min(limits.max_frames, Math.round((CAPTURE_MS / 1000) * fps));
  const giveUpAt = performance.now() + Math.max(CAPTURE_MS, deadlineMs - 1500);
  const counts = { sent: 0, held: 0 };
  while (counts.sent < wanted && performance.now() < giveUpAt) {
    const tick = performance.now();
    ctx.drawImage(video, 0, 0, WIDTH, HEIGHT);
    const q = score_frame(ctx.getImageData(0, 0, WIDTH, HEIGHT).data, WIDTH, HEIGHT);
    let sent = false;
    // A slow link: skip rather than queue without bound.
    if (q.ok && ws.bufferedAmount < limits.max_frame_bytes) {
      const jpeg = await toJpeg(canvas);
      if (jpeg && jpeg.size <= limits.max_frame_bytes) {
        ws.send(jpeg);
        sent = true;
      }
    }
    if (sent) counts.sent += 1;
    else counts.held += 1;
    showQuality(q, counts);
    q.free();
    await sleep(interval - (performance.now() - tick));
  }
  log('→', `${counts.sent} frames (${counts.held} held back)`);
  return counts;
}

function showChallenge(challenge) {
  const list = $('actions');
  list.replaceChildren(
    ...challenge.actions.map((action) => {
      const item = document.createElement('li');
      item.textContent = PROMPTS[action] ?? action;
      item.dataset.action = action;
      item.dataset.state = 'waiting';
      return item;
    }),
  );
}

function markAction(action, state) {
  const item = $('actions').querySelector(`li[data-action="${action}"]`);
  if (item) item.dataset.state = state;
}

function showResult(result) {
  const item = document.createElement('li');
  const score = typeof result.score === 'number' ? ` (score ${result.score.toFixed(2)})` : '';
  item.textContent = result.success
    ? `${result.action}: passed${score}`
    : `${result.action}: failed, ${result.error?.reason ?? result.error?.code ?? 'unknown'}${score}`;
  item.dataset.success = String(result.success);
  $('results').append(item);
  markAction(result.action, result.success ? 'passed' : 'failed');
}

/** Runs one session on an open WebSocket; resolves with the final server message. */
async function runProtocol(ws, video) {
  const inbox = new Inbox(ws);
  const challenge = await expect(inbox, 'challenge');
  showChallenge(challenge);
  setStatus(`Session ${challenge.liveness_session_id}: ${challenge.actions.length} actions.`);
  for (const action of challenge.actions) {
    $('challenge').textContent = PROMPTS[action] ?? action;
    $('challenge').dataset.action = action;
    markAction(action, 'current');
    send(ws, { action });
    const started = await expect(inbox, 'action_started');
    await streamFrames(ws, video, challenge.limits, started.deadline_ms ?? challenge.action_timeout_ms);
    send(ws, { action, end: true });
    const result = await expect(inbox, 'action_result');
    showResult(result);
    if (!result.success) break;
  }
  $('challenge').textContent = 'Done.';
  $('challenge').dataset.action = '';
  return expect(inbox, 'verdict');
}

function finish(message) {
  if (message.type === 'verdict') {
    const score = typeof message.score === 'number' ? `, score ${message.score.toFixed(2)}` : '';
    if (message.passed) showVerdict('passed', `Liveness passed${score}.`);
    else showVerdict('failed', `Liveness failed${score}.`);
    setStatus(`Session ${message.liveness_session_id} finished.`);
  } else if (message.type === 'error' || message.error) {
    const e = message.error ?? {};
    showVerdict('error', `Error: ${e.code ?? 'UNKNOWN'}: ${e.message ?? ''}`);
    setStatus('The server ended the session.', 'error');
  } else if (message.type === 'closed') {
    showVerdict('error', `Error: the connection closed (${message.code}) without a verdict.`);
    setStatus('Disconnected.', 'error');
  } else {
    showVerdict('error', `Error: unexpected message ${JSON.stringify(message)}`);
    setStatus('The server sent something this page does not understand.', 'error');
  }
}

function wsUrl(pathAndQuery) {
  const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${window.location.host}${pathAndQuery}`;
}

async function connect(url) {
  const video = await startCamera();
  setStatus('Connecting…');
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  try {
    finish(await runProtocol(ws, video));
  } catch (err) {
    if (err instanceof Finished) finish(err.serverMessage);
    else throw err;
  } finally {
    if (ws.readyState === WebSocket.OPEN) ws.close(1000);
    video.srcObject?.getTracks().forEach((track) => track.stop());
  }
}

async function createSession(token) {
  const response = await fetch(SESSIONS_PATH, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: '{}',
  });
  const body = await response.json().catch(() => ({}));
  if (response.status !== 201) {
    const e = body.error ?? {};
    throw new Error(`creating the session: ${response.status} ${e.code ?? ''} ${e.message ?? ''}`);
  }
  return body;
}

function describeThresholds() {
  const t = thresholds();
  const text =
    `Frames are sent when brightness is ${t.too_dark_below}–${t.too_bright_above} ` +
    `and sharpness (variance of the Laplacian) at least ${t.too_blurry_below}.`;
  t.free();
  return text;
}

async function main() {
  await init();
  $('quality').title = describeThresholds();
  const params = new URLSearchParams(window.location.search);
  const ticket = params.get('ticket');
  if (ticket) {
    await connect(wsUrl(`${WS_PATH}?ticket=${encodeURIComponent(ticket)}`));
    return;
  }
  setStatus('Paste an access token to start.', 'idle');
  const form = $('start');
  form.hidden = false;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    form.hidden = true;
    try {
      setStatus('Creating a session…');
      const session = await createSession($('token').value.trim());
      await connect(wsUrl(session.ws_url));
    } catch (err) {
      setStatus(String(err.message ?? err), 'error');
      form.hidden = false;
    }
  });
}

main().catch((err) => {
  setStatus(`Error: ${err.message ?? err}`, 'error');
  if ($('verdict').dataset.state === 'pending') showVerdict('error', `Error: ${err.message ?? err}`);
});
