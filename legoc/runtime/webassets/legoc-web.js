// legoc web page: runs one ONNX block with onnxruntime-web (wasm, on this device, offline).
// Inputs: a file of rows (.npy / .npz / .json), a drawn or dropped picture (image blocks),
// token ids (token blocks). Every result is also left on `window.legocResult` for tests.
const $ = (id) => document.getElementById(id);
const manifest = JSON.parse($("legoc-manifest").textContent);
const base = new URL(manifest.ort_web, document.baseURI).href;
const ort = await import(`${base}ort.wasm.min.mjs`);
ort.env.wasm.wasmPaths = base;
ort.env.wasm.numThreads = 1; // a static folder is not cross-origin isolated: no threads
ort.env.wasm.proxy = false;
ort.env.logLevel = "error";

let session = null;
let loaded = null; // {name: {dtype, dims, data}} from the last file, drawing or token ids

function setStatus(state, text) {
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text;
}

// ------------------------------------------------------------------ arrays

const DTYPES = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array,
  float64: Float64Array, uint8: Uint8Array, int8: Int8Array, bool: Uint8Array };

function product(dims) { return dims.reduce((a, b) => a * b, 1); }

// numpy descr -> [typed array class, kind]
const NPY = { "<f4": [Float32Array, "f"], "<f8": [Float64Array, "f"], "<i8": [BigInt64Array, "i"],
  "<i4": [Int32Array, "i"], "<i2": [Int16Array, "i"], "|i1": [Int8Array, "i"],
  "|u1": [Uint8Array, "u"], "<u2": [Uint16Array, "u"], "<u4": [Uint32Array, "u"],
  "|b1": [Uint8Array, "b"] };

function parseNpy(buffer, label) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.slice(1, 6));
  if (bytes[0] !== 0x93 || magic !== "NUMPY") throw new Error(`${label}: not an .npy file`);
  const view = new DataView(buffer);
  const major = bytes[6];
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.slice(start, start + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeText === undefined) throw new Error(`${label}: bad .npy header`);
  if (fortran === "True") throw new Error(`${label}: Fortran-order arrays are not supported`);
  if (!(descr in NPY)) throw new Error(`${label}: dtype ${descr} is not supported`);
  const dims = shapeText.split(",").map((s) => s.trim()).filter((s) => s).map(Number);
  const [Kind, kind] = NPY[descr];
  const offset = start + headerLen;
  const count = product(dims);
  const data = new Kind(buffer.slice(offset, offset + count * Kind.BYTES_PER_ELEMENT));
  return { kind, dims, data };
}

async function inflateRaw(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// .npz: a zip of .npy members, stored (np.savez) or deflated (np.savez_compressed)
async function parseNpz(buffer, label) {
  const view = new DataView(buffer);
  let eocd = -1;
  for (let i = buffer.byteLength - 22; i >= Math.max(0, buffer.byteLength - 65600); i--) {
    if (view.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Error(`${label}: not a zip (.npz) file`);
  const entries = view.getUint16(eocd + 10, true);
  let at = view.getUint32(eocd + 16, true);
  const arrays = {};
  for (let n = 0; n < entries; n++) {
    if (view.getUint32(at, true) !== 0x02014b50) throw new Error(`${label}: bad zip directory`);
    const method = view.getUint16(at + 10, true);
    let size = view.getUint32(at + 20, true);
    const nameLen = view.getUint16(at + 28, true);
    const extraLen = view.getUint16(at + 30, true);
    const commentLen = view.getUint16(at + 32, true);
    let local = view.getUint32(at + 42, true);
    const name = new TextDecoder().decode(new Uint8Array(buffer, at + 46, nameLen));
    let e = at + 46 + nameLen;
    while (e < at + 46 + nameLen + extraLen) { // zip64 sizes, as numpy writes them
      const id = view.getUint16(e, true), len = view.getUint16(e + 2, true);
      if (id === 1) {
        let p = e + 4;
        const uncompressed = view.getUint32(at + 24, true);
        if (uncompressed === 0xffffffff) p += 8;
        if (size === 0xffffffff) { size = Number(view.getBigUint64(p, true)); p += 8; }
        if (local === 0xffffffff) local = Number(view.getBigUint64(p, true));
      }
      e += 4 + len;
    }
    at += 46 + nameLen + extraLen + commentLen;
    const dataAt = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    let member = new Uint8Array(buffer, dataAt, size);
    if (method === 8) member = await inflateRaw(member);
    else if (method !== 0) throw new Error(`${label}: zip compression ${method} not supported`);
    const copy = member.slice().buffer;
    arrays[name.replace(/\.npy$/, "")] = parseNpy(copy, `${label}:${name}`);
  }
  return arrays;
}

function fromNested(value, label) {
  const dims = [];
  let probe = value;
  while (Array.isArray(probe)) { dims.push(probe.length); probe = probe[0]; }
  const flat = dims.length ? value.flat(dims.length) : [value];
  if (flat.length !== product(dims)) throw new Error(`${label}: rows of unequal length`);
  const ints = flat.every((v) => Number.isInteger(v));
  return { kind: ints ? "i" : "f", dims, data: flat, nested: true };
}

async function readFile(file) {
  const buffer = await file.arrayBuffer();
  const stem = file.name.replace(/\.[^.]*$/, "");
  if (file.name.endsWith(".json")) {
    const body = JSON.parse(new TextDecoder().decode(buffer));
    if (Array.isArray(body)) return { [stem]: fromNested(body, file.name) };
    const out = {};
    for (const [k, v] of Object.entries(body)) out[k] = fromNested(v, `${file.name}:${k}`);
    return out;
  }
  const head = new Uint8Array(buffer, 0, 4);
  if (head[0] === 0x50 && head[1] === 0x4b) return parseNpz(buffer, file.name);
  return { [stem]: parseNpy(buffer, file.name) };
}

// The block's inputs out of named arrays: by name; a single-input block also takes `x` or the
// only non-label array (legoc's task-data convention).
function pickInputs(arrays, source) {
  const names = manifest.inputs.map((t) => t.name);
  const candidates = Object.keys(arrays).filter((k) => k !== "y" && k !== "y_alt");
  const picked = {};
  for (const info of manifest.inputs) {
    let array = arrays[info.name];
    if (!array && names.length === 1) array = arrays.x || (candidates.length === 1 && arrays[candidates[0]]);
    if (!array) throw new Error(`${source} has no array '${info.name}'; it has ${Object.keys(arrays)}`);
    picked[info.name] = conform(info, array, source);
  }
  return picked;
}

function conform(info, array, source) {
  const who = `${source}: input '${info.name}'`;
  const floatInput = info.dtype.startsWith("float");
  if (floatInput && array.kind !== "f") {
    throw new Error(`${who} is integer but the block expects ${info.dtype}; convert the data`);
  }
  if (!floatInput && array.kind === "f") {
    throw new Error(`${who} is floating point but the block expects ${info.dtype}`);
  }
  if (info.shape.length !== array.dims.length ||
      info.shape.some((d, i) => typeof d === "number" && d !== array.dims[i])) {
    throw new Error(`${who} has shape [${array.dims}] but the block expects [${info.shape}]`);
  }
  const Kind = DTYPES[info.dtype];
  let data;
  if (Kind === BigInt64Array) data = BigInt64Array.from(array.data, (v) => BigInt(v));
  else if (array.data instanceof BigInt64Array) data = Kind.from(array.data, (v) => Number(v));
  else data = Kind.from(array.data);
  return { dtype: info.dtype, dims: array.dims, data };
}

function labelsOf(arrays) {
  const y = arrays.y;
  return y && y.dims.length === 1 ? Array.from(y.data, (v) => Number(v)) : null;
}

function rowsOf(feeds) { return Object.values(feeds)[0].dims[0]; }

function sliceRows(feeds, start, end) {
  const out = {};
  for (const [name, a] of Object.entries(feeds)) {
    const per = product(a.dims.slice(1));
    out[name] = { dtype: a.dtype, dims: [end - start, ...a.dims.slice(1)],
      data: a.data.slice(start * per, end * per) };
  }
  return out;
}

function tensors(feeds) {
  const out = {};
  for (const [name, a] of Object.entries(feeds)) out[name] = new ort.Tensor(a.dtype, a.data, a.dims);
  return out;
}

// ------------------------------------------------------------------ running

async function medianMs(feeds, runs) {
  const inputs = tensors(feeds);
  for (let i = 0; i < manifest.latency.warmup; i++) await session.run(inputs);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const s = performance.now();
    await session.run(inputs);
    times.push(performance.now() - s);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

async function runAll(feeds, source, truth = null) {
  setStatus("running", `running on ${source}…`);
  const n = rowsOf(feeds);
  const batch = manifest.batch_size;
  const outputs = {};
  const t0 = performance.now();
  for (let start = 0; start < n; start += batch) {
    const part = await session.run(tensors(sliceRows(feeds, start, Math.min(n, start + batch))));
    for (const name of manifest.outputs.map((t) => t.name)) {
      const t = part[name];
      if (!outputs[name]) outputs[name] = { dims: [0, ...t.dims.slice(1)], data: [] };
      outputs[name].dims[0] += t.dims[0];
      for (const v of t.data) outputs[name].data.push(Number(v));
    }
  }
  const total = performance.now() - t0;
  const b1 = await medianMs(sliceRows(feeds, 0, 1), manifest.latency.runs);
  const rowsB = Math.min(n, batch);
  const bB = await medianMs(sliceRows(feeds, 0, rowsB), Math.max(3, manifest.latency.runs >> 2));
  window.legocResult = { source, rows: n, outputs, truth, ms_total: total, ms_batch1: b1,
    batch: rowsB, ms_batch: bB, ms_per_row: bB / rowsB };
  show(window.legocResult);
  setStatus("done", `${n} row(s) from ${source} in ${total.toFixed(1)} ms; latency (median): ` +
    `batch 1 ${b1.toFixed(3)} ms, batch ${rowsB} ${bB.toFixed(3)} ms ` +
    `(${(bB / rowsB).toFixed(4)} ms/row)`);
}

function show(result) {
  const name = manifest.outputs[0].name;
  const out = result.outputs[name];
  const per = product(out.dims.slice(1));
  const labels = manifest.labels || null;
  const table = $("outputs");
  table.replaceChildren();
  const head = table.insertRow();
  for (const h of ["row", ...(result.truth ? ["y"] : []), "argmax", name]) {
    const th = document.createElement("th"); th.textContent = h; head.appendChild(th);
  }
  const shown = Math.min(out.dims[0], 50);
  for (let r = 0; r < shown; r++) {
    const values = out.data.slice(r * per, (r + 1) * per);
    let best = 0;
    values.forEach((v, i) => { if (v > values[best]) best = i; });
    const row = table.insertRow();
    const cells = [r, ...(result.truth ? [result.truth[r]] : []),
      labels ? labels[best] : best, values.map((v) => v.toFixed(4)).join("  ")];
    for (const c of cells) row.insertCell().textContent = String(c);
  }
  $("more").textContent = out.dims[0] > shown ? `(first ${shown} of ${out.dims[0]} rows)` : "";
  const blob = new Blob([JSON.stringify(result.outputs)], { type: "application/json" });
  const link = $("download");
  link.href = URL.createObjectURL(blob);
  link.hidden = false;
}

async function guarded(what, action) {
  try { await action(); } catch (err) {
    window.legocResult = { error: String(err.message || err) };
    setStatus("error", `${what}: ${err.message || err}`);
  }
}

// ------------------------------------------------------------------ input panels

$("rows-file").addEventListener("change", (event) => guarded("rows file", async () => {
  const files = [...event.target.files];
  if (!files.length) return;
  const arrays = {};
  for (const file of files) Object.assign(arrays, await readFile(file));
  const label = files.map((f) => f.name).join(", ");
  loaded = pickInputs(arrays, label);
  await runAll(loaded, label, labelsOf(arrays));
}));

const sampleButton = $("run-samples");
if (sampleButton) {
  sampleButton.addEventListener("click", () => guarded("sample rows", async () => {
    const response = await fetch(manifest.samples);
    const arrays = await parseNpz(await response.arrayBuffer(), manifest.samples);
    loaded = pickInputs(arrays, manifest.samples);
    await runAll(loaded, `${manifest.samples} (${rowsOf(loaded)} search rows)`, labelsOf(arrays));
  }));
}

function setupImage() {
  const image = manifest.image;
  const canvas = $("draw");
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  };
  canvas.addEventListener("pointerdown", (e) => { drawing = true; ctx.beginPath(); ctx.moveTo(...at(e)); });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineTo(...at(e)); ctx.strokeStyle = "#fff"; ctx.lineWidth = canvas.width / 14;
    ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.stroke();
  });
  window.addEventListener("pointerup", () => { drawing = false; });
  $("clear").addEventListener("click", clear);
  const drawPicture = (file) => guarded("picture", async () => {
    const bitmap = await createImageBitmap(file);
    clear();
    const s = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const w = bitmap.width * s, h = bitmap.height * s;
    ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    setStatus("ready", `picture ${file.name} loaded: press "Run on the picture"`);
  });
  $("picture").addEventListener("change", (e) => e.target.files[0] && drawPicture(e.target.files[0]));
  canvas.addEventListener("dragover", (e) => e.preventDefault());
  canvas.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer.files[0]) drawPicture(e.dataTransfer.files[0]); });
  $("run-picture").addEventListener("click", () => guarded("picture", async () => {
    const small = document.createElement("canvas");
    small.width = image.width; small.height = image.height;
    const sctx = small.getContext("2d");
    sctx.imageSmoothingQuality = "high";
    sctx.drawImage(canvas, 0, 0, image.width, image.height);
    const pixels = sctx.getImageData(0, 0, image.width, image.height).data;
    const plane = image.width * image.height;
    const data = new Float32Array(image.channels * plane);
    for (let p = 0; p < plane; p++) {
      const rgb = [pixels[4 * p], pixels[4 * p + 1], pixels[4 * p + 2]];
      for (let c = 0; c < image.channels; c++) {
        const v = image.channels === 1 ? (rgb[0] + rgb[1] + rgb[2]) / 3 : rgb[c];
        data[c * plane + p] = v / 255;
      }
    }
    const name = manifest.inputs[0].name;
    loaded = { [name]: { dtype: "float32", dims: [1, image.channels, image.height, image.width], data } };
    await runAll(loaded, "the picture");
  }));
}

function setupTokens() {
  const spec = manifest.tokens;
  $("run-tokens").addEventListener("click", () => guarded("token ids", async () => {
    const lines = $("token-ids").value.split("\n").map((l) => l.trim()).filter((l) => l);
    if (!lines.length) throw new Error("type token ids, one row per line");
    const rows = lines.map((l) => l.split(/[\s,]+/).map((t) => {
      if (!/^\d+$/.test(t)) throw new Error(`'${t}' is not a token id`);
      return Number(t);
    }));
    const length = spec.length ?? Math.max(...rows.map((r) => r.length));
    const ids = new BigInt64Array(rows.length * length).fill(BigInt(spec.pad_id));
    const mask = new BigInt64Array(rows.length * length);
    rows.forEach((r, i) => r.slice(0, length).forEach((t, j) => {
      ids[i * length + j] = BigInt(t); mask[i * length + j] = 1n;
    }));
    loaded = { [spec.ids]: { dtype: "int64", dims: [rows.length, length], data: ids } };
    if (spec.mask) loaded[spec.mask] = { dtype: "int64", dims: [rows.length, length], data: mask };
    await runAll(loaded, "the token ids");
  }));
}

async function main() {
  setStatus("loading", `loading ${manifest.model} with onnxruntime-web ${manifest.ort_web_version}…`);
  const t0 = performance.now();
  session = await ort.InferenceSession.create(manifest.model, {
    executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  const ms = performance.now() - t0;
  if (manifest.image) setupImage();
  if (manifest.tokens) setupTokens();
  window.legocReady = { load_ms: ms };
  setStatus("ready", `ready: ${manifest.model} loaded in ${ms.toFixed(0)} ms; give it rows`);
}

guarded("loading the block", main);
