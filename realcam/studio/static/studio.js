// realcam studio page: one WebSocket carries JSON control messages out and binary frames in (docs/studio.md).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const tokenQuery = token ? "token=" + encodeURIComponent(token) : "";
  const KEY_NAMES = new Set(["w", "a", "s", "d", "q", "e", "arrowleft", "arrowright", "arrowup", "arrowdown"]);
  const SCALE = 8;                                    // canvas pixels per model pixel

  // what the page saw, for people and for tests (tests/studio/test_browser.py reads it)
  const studio = window.studio = { frames: 0, times: [], log: [], hello: null, state: null, errors: [], fps: null,
                                   latencyMs: null, trail: [] };
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" +
                           (tokenQuery ? "?" + tokenQuery : ""));
  ws.binaryType = "arraybuffer";
  const send = (msg) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); };
  studio.send = send;

  function say(text, isError) {
    $("message").textContent = text;
    if (isError) studio.errors.push(text);
  }

  // ---------------------------------------------------------------- incoming
  ws.onopen = () => { $("status").textContent = "connected"; };
  ws.onclose = (e) => { $("status").textContent = "disconnected"; $("status").className = "pill";
                        if (e.reason) say(e.reason, true); };
  ws.onmessage = (e) => {
    if (typeof e.data === "string") return onText(JSON.parse(e.data));
    const view = new DataView(e.data);
    const n = view.getUint32(0);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(e.data, 4, n)));
    const payload = new Blob([new Uint8Array(e.data, 4 + n)], { type: header.mime });
    if (header.type === "export") return download(payload, header.filename);
    onFrame(header, payload);
  };

  function onText(msg) {
    if (msg.type === "hello") return onHello(msg);
    if (msg.type === "state") return onState(msg);
    if (msg.type === "error") return say(`${msg.field}: ${msg.message}`, true);
    if (msg.type === "notice") return say(msg.message, false);
    if (msg.type === "trajectory") return download(new Blob([msg.text], { type: "application/json" }), msg.filename);
  }

  function onHello(msg) {
    studio.hello = msg;
    fill($("pose-reference"), msg.pose_references, msg.trained_pose_reference);
    fill($("preset"), msg.presets, "arc:left:30");
    $("keys").innerHTML = Object.entries(msg.keys).map(([k, v]) => `<tr><td><b>${k}</b></td><td>${v}</td></tr>`).join("");
    const auto = params.get("autoplay");
    const settings = {};
    for (const key of ["steps", "max_fps"]) if (params.has(key)) settings[key] = Number(params.get(key));
    if (Object.keys(settings).length) send({ type: "settings", ...settings });
    if (auto === "synthetic") { send({ type: "source", kind: "synthetic", seed: Number(params.get("seed") || 3) });
                                send({ type: "play" }); }
  }

  function onState(msg) {
    studio.state = msg;
    $("status").textContent = msg.playing ? "live" : (msg.source ? "paused" : "choose a source");
    $("status").className = msg.playing ? "pill live" : "pill";
    $("record").classList.toggle("on", msg.recording);
    $("record").textContent = msg.recording ? "stop recording" : "record";
    $("gt-label").style.visibility = msg.source && msg.source.ground_truth && msg.ground_truth ? "visible" : "hidden";
    for (const [id, key] of [["steps", "steps"], ["max-fps", "max_fps"], ["speed", "speed"]]) {
      $(id).value = msg[key]; $(id + "-out").textContent = msg[key];
    }
    if (!msg.playing) drawCameras(msg.target_c2w);
  }

  // frames: count every one (that is the FPS), decode the newest (a decode in flight keeps at most one waiting)
  let waiting = null, decoding = false;
  function onFrame(header, blob) {
    const now = Date.now();
    studio.frames += 1;
    studio.times.push(now);
    while (studio.times.length > 1 && now - studio.times[0] > 2000) studio.times.shift();
    const span = (studio.times[studio.times.length - 1] - studio.times[0]) / 1000;
    studio.fps = span > 0 ? (studio.times.length - 1) / span : null;
    studio.latencyMs = now - header.t_push_ms;
    header.received_ms = now;
    waiting = [header, blob];
    if (!decoding) decodeNext();
  }

  async function decodeNext() {
    decoding = true;
    while (waiting) {
      const [header, blob] = waiting;
      waiting = null;
      const bitmap = await createImageBitmap(blob);
      draw(header, bitmap);
    }
    decoding = false;
  }

  const scratch = document.createElement("canvas");
  function draw(header, bitmap) {
    const canvas = $("frame");
    if (canvas.width !== bitmap.width * SCALE) {
      canvas.width = bitmap.width * SCALE; canvas.height = bitmap.height * SCALE;
    }
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    // per tile, 8x8 block means of the grey level: the page's own view of what changed
    scratch.width = bitmap.width; scratch.height = bitmap.height;
    const sctx = scratch.getContext("2d", { willReadFrequently: true });
    sctx.drawImage(bitmap, 0, 0);
    const [h, w] = header.tile_size;
    header.tile_blocks = header.tiles.map((_, i) => {
      const data = sctx.getImageData(i * (w + 2), 0, w, h).data, blocks = new Array(64).fill(0);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
        const k = 4 * (y * w + x);
        blocks[8 * Math.floor((8 * y) / h) + Math.floor((8 * x) / w)] += (data[k] + data[k + 1] + data[k + 2]) / 3;
      }
      return blocks.map((v) => v / ((h * w) / 64));
    });
    studio.log.push(header);
    if (studio.log.length > 500) studio.log.shift();
    $("fps").textContent = studio.fps ? studio.fps.toFixed(1) : "–";
    $("latency").textContent = studio.latencyMs.toFixed(0);
    $("gen-latency").textContent = header.latency_ms ? header.latency_ms.toFixed(1) : "–";
    $("index").textContent = header.index;
    $("psnr").textContent = header.psnr === null ? "–" : header.psnr.toFixed(2);
    $("dropped").textContent = header.dropped;
    drawCameras(header.target_c2w);
  }

  // ---------------------------------------------------------------- cameras, top view (x right, z forward)
  function drawCameras(c2w) {
    const canvas = $("frustum"), ctx = canvas.getContext("2d");
    const px = 40, ox = canvas.width / 2, oz = canvas.height * 0.7;
    const at = (x, z) => [ox + x * px, oz - z * px];
    const fov = (Number($("fov").value) * Math.PI) / 180;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = "#333";
    for (let g = -3; g <= 3; g++) { ctx.beginPath(); ctx.moveTo(...at(g, -2)); ctx.lineTo(...at(g, 3)); ctx.stroke(); }
    const frustum = (pos, right, fwd, colour) => {
      const len = 0.8, half = Math.tan(fov / 2) * len;
      const corner = (s) => at(pos[0] + fwd[0] * len + right[0] * s * half, pos[2] + fwd[2] * len + right[2] * s * half);
      ctx.strokeStyle = colour; ctx.lineWidth = 2; ctx.beginPath();
      ctx.moveTo(...at(pos[0], pos[2])); ctx.lineTo(...corner(-1)); ctx.lineTo(...corner(1)); ctx.closePath(); ctx.stroke();
    };
    frustum([0, 0, 0], [1, 0, 0], [0, 0, 1], "#4a90e2");
    if (!c2w) return;
    const pos = [c2w[0][3], c2w[1][3], c2w[2][3]];
    studio.trail.push(pos);
    if (studio.trail.length > 200) studio.trail.shift();
    ctx.strokeStyle = "#7a5a20"; ctx.lineWidth = 1; ctx.beginPath();
    studio.trail.forEach((p, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, ...at(p[0], p[2])));
    ctx.stroke();
    frustum(pos, [c2w[0][0], c2w[1][0], c2w[2][0]], [c2w[0][2], c2w[1][2], c2w[2][2]], "#f5a623");
  }

  // ---------------------------------------------------------------- controls
  function fill(select, values, chosen) {
    select.innerHTML = values.map((v) => `<option${v === chosen ? " selected" : ""}>${v}</option>`).join("");
  }
  function download(blob, name) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = name; a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }
  const click = (id, fn) => $(id).addEventListener("click", fn);
  click("src-synthetic", () => send({ type: "source", kind: "synthetic", seed: Number($("seed").value) }));
  click("src-webcam", startWebcam);
  click("play", () => send({ type: "play" }));
  click("pause", () => send({ type: "pause" }));
  click("step", () => send({ type: "step", frames: 1 }));
  click("restart", () => { studio.trail = []; send({ type: "restart" }); });
  click("reset-camera", () => send({ type: "reset_camera" }));
  click("apply-preset", () => send({ type: "preset", spec: $("preset").value, frames: 32 }));
  click("record", () => send({ type: "record", on: !(studio.state && studio.state.recording) }));
  click("save-trajectory", () => send({ type: "save_trajectory" }));
  click("export", () => send({ type: "export" }));
  $("pose-reference").addEventListener("change", (e) => send({ type: "settings", pose_reference: e.target.value }));
  for (const [id, key, unit] of [["fov", "fov_deg", "°"], ["speed", "speed", ""], ["steps", "steps", ""],
                                 ["max-fps", "max_fps", ""]]) {
    $(id).addEventListener("input", (e) => { $(id + "-out").textContent = e.target.value + unit; });
    $(id).addEventListener("change", (e) => send({ type: "settings", [key]: Number(e.target.value) }));
  }
  $("upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file || !studio.hello) return;
    say(`uploading ${file.name}…`, false);
    const q = "session=" + studio.hello.session + (tokenQuery ? "&" + tokenQuery : "");
    const reply = await fetch("upload?" + q, { method: "POST", body: file });
    const body = await reply.json().catch(() => ({ error: `HTTP ${reply.status}` }));
    if (!reply.ok) return say(`upload refused: ${body.error}`, true);
    say(`${file.name}: ${body.frames} frames`, false);
    send({ type: "play" });
  });
  $("replay").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (file) send({ type: "replay", trajectory: await file.text() });
  });

  // keys: the page sends the whole set held after every change; the server moves the camera once per frame
  const held = new Set();
  const typing = (e) => ["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName) && e.target.type !== "range";
  function onKey(e, down) {
    const key = e.key.toLowerCase();
    if (!KEY_NAMES.has(key) || typing(e)) return;
    e.preventDefault();
    if (down === held.has(key)) return;
    if (down) held.add(key); else held.delete(key);
    send({ type: "keys", down: [...held] });
  }
  window.addEventListener("keydown", (e) => { if (!e.repeat) onKey(e, true); });
  window.addEventListener("keyup", (e) => onKey(e, false));
  window.addEventListener("blur", () => { held.clear(); send({ type: "keys", down: [] }); });

  // drag to orbit (one message per animation frame), wheel to dolly
  const canvas = $("frame");
  let drag = null, dx = 0, dy = 0;
  canvas.addEventListener("pointerdown", (e) => { drag = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId); });
  canvas.addEventListener("pointerup", () => { drag = null; });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    dx += e.clientX - drag[0]; dy += e.clientY - drag[1]; drag = [e.clientX, e.clientY];
    requestAnimationFrame(() => { if (dx || dy) { send({ type: "orbit", dx, dy }); dx = dy = 0; } });
  });
  canvas.addEventListener("wheel", (e) => { e.preventDefault(); send({ type: "dolly", amount: e.deltaY }); },
                          { passive: false });

  // webcam: the newest frame at most ~20 times a second, skipped while the socket is backed up
  async function startWebcam() {
    if (!studio.hello) return;
    let stream;
    try { stream = await navigator.mediaDevices.getUserMedia({ video: true }); }
    catch (err) { return say(`webcam refused: ${err.message}`, true); }
    const video = $("webcam");
    video.srcObject = stream; await video.play();
    send({ type: "source", kind: "webcam" }); send({ type: "play" });
    const [H, W] = studio.hello.image_size, grab = document.createElement("canvas");
    grab.width = W * 4; grab.height = H * 4;
    setInterval(() => {
      if (ws.readyState !== WebSocket.OPEN || ws.bufferedAmount > 1 << 18 || !video.videoWidth) return;
      const s = Math.min(video.videoWidth / W, video.videoHeight / H);     // centre crop to the model's aspect
      grab.getContext("2d").drawImage(video, (video.videoWidth - W * s) / 2, (video.videoHeight - H * s) / 2,
                                      W * s, H * s, 0, 0, grab.width, grab.height);
      grab.toBlob((b) => b && b.arrayBuffer().then((buf) => ws.send(buf)), "image/jpeg", 0.85);
    }, 50);
  }
})();
