// The page: enroll, identify, the people list and live recognition, wired to the API.

import { api, apiKey, setApiKey } from "./api.js";
import { drawFaces, faceLabel, grabFrame } from "./draw.js";

const FRAME_INTERVAL_MS = 250; // at most 4 frames a second, one request in flight
const LIVE_WIDTH = 640; // frames sent for live recognition are scaled down to this width
const HEALTH_INTERVAL_MS = 5000; // the gallery may change under the page (other tabs, the CLI)

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

// A status line under a card: what happened, or the API's error with what to do about it.
function say(testid, message, kind = "info") {
  const element = $(testid);
  element.textContent = message;
  element.dataset.kind = kind;
}

function explain(error) {
  if (error.status === 401) {
    keys.asked = true;
    showKeyState();
    notice("This service needs an API key: enter it at the top of the page.");
    return `API key needed (401): ${error.message}`;
  }
  if (error.status === 403) {
    return `Not allowed with this key (403): ${error.message}`;
  }
  return error.status ? `${error.message} (${error.status})` : error.message;
}

function fail(testid, error) {
  say(testid, explain(error), "error");
}

// One request from a form: its button disabled meanwhile, the outcome said in its status line.
async function submitting(buttonId, statusId, message, work) {
  const button = $(buttonId);
  button.disabled = true;
  say(statusId, message);
  try {
    await work();
  } catch (error) {
    fail(statusId, error);
  } finally {
    button.disabled = false;
  }
}

function notice(message) {
  const element = $("notice");
  element.textContent = message;
  element.hidden = !message;
  $("api-key").classList.toggle("attention", Boolean(message));
}

// A new element with a class and, when given, its text (never HTML: names are user input).
function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const plural = (count, word, many = `${word}s`) => `${count} ${count === 1 ? word : many}`;

// --- health and API key -------------------------------------------------------------------

const known = { counts: "" };

// Also refreshes the people list when the gallery's counts changed since the last look.
async function refreshHealth() {
  const health = $("health");
  try {
    const status = await api.health();
    const counts = `${status.people}/${status.faces}`;
    if (known.counts && counts !== known.counts) refreshPeople();
    known.counts = counts;
    health.dataset.state = "ok";
    health.querySelector(".health-text").textContent =
      `${plural(status.people, "person", "people")} · ${plural(status.faces, "face")} · ${status.encoder}`;
  } catch (error) {
    health.dataset.state = "down";
    health.querySelector(".health-text").textContent = error.status ? `Unhealthy (${error.status})` : "Offline";
  }
}

// The key field appears once the server has asked for a key (401), or when one is kept.
const keys = { asked: false };

function showKeyState() {
  const stored = apiKey();
  $("api-key-form").hidden = !stored && !keys.asked;
  $("api-key").value = stored;
  $("api-key").placeholder = stored ? "" : "API key";
  $("api-key-forget").hidden = !stored;
}

// Keys are letters, digits, - and _. A header carries no other character: fetch would fail
// before sending anything (a zero-width space pasted with the key), as if the server were down.
const SENDABLE_KEY = /^[\x21-\x7e]*$/;

$("api-key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!SENDABLE_KEY.test(key)) {
    notice("That is not an API key: a key has only letters, digits, - and _. Paste it again.");
    return;
  }
  setApiKey(key);
  showKeyState();
  notice("");
  refreshPeople();
});

$("api-key-forget").addEventListener("click", () => {
  setApiKey("");
  showKeyState();
  refreshPeople();
});

// --- people -------------------------------------------------------------------------------

async function refreshPeople() {
  let people;
  try {
    people = await api.people();
  } catch (error) {
    $("people-list").replaceChildren(); // never a stale list the server no longer vouches for
    $("people-empty").hidden = true;
    fail("people-status", error);
    return;
  }
  say("people-status", "");
  const list = $("people-list");
  list.replaceChildren(...people.map(personItem));
  $("people-empty").hidden = people.length > 0;
  $("people-count").textContent = people.length ? String(people.length) : "";
  known.counts = `${people.length}/${people.reduce((sum, person) => sum + person.faces, 0)}`;
  refreshHealth();
}

function personItem(person) {
  const item = element("li", "person");
  item.dataset.name = person.name;
  const avatar = element("span", "avatar", [...person.name.trim()][0]?.toUpperCase() ?? "?");
  avatar.style.setProperty("--hue", String(hue(person.name)));
  const remove = element("button", "button ghost small danger", "Remove");
  remove.type = "button";
  remove.dataset.testid = "people-remove";
  remove.setAttribute("aria-label", `Remove ${person.name}`);
  remove.addEventListener("click", () => removePerson(person));
  item.append(
    avatar,
    element("span", "person-name", person.name),
    element("span", "person-faces", plural(person.faces, "face")),
    remove,
  );
  return item;
}

function hue(text) {
  let value = 0;
  for (const char of text) value = (value * 31 + char.codePointAt(0)) % 360;
  return value;
}

async function removePerson(person) {
  if (!confirm(`Remove ${person.name} and their ${plural(person.faces, "enrolled face")}?`)) return;
  let removed;
  try {
    ({ removed } = await api.remove(person.name));
  } catch (error) {
    fail("people-status", error);
    return;
  }
  await refreshPeople();
  say("people-status", `Removed ${person.name} (${plural(removed, "face")}).`, "ok");
}

$("people-refresh").addEventListener("click", refreshPeople);

// --- the camera, shared by live recognition and the enrolment snapshot ---------------------

const video = document.querySelector("video.camera");
const overlay = $("live-overlay");
const stage = $("live-stage");

async function openCamera() {
  if (video.srcObject) return;
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("The camera needs a secure page: open it on https:// or on localhost / 127.0.0.1.");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    const reasons = {
      NotAllowedError: "Camera access was refused: allow the camera for this page in the browser.",
      NotFoundError: "No camera was found: connect one, or enroll from an uploaded photo.",
      NotReadableError: "The camera is busy in another program: close it and try again.",
    };
    throw new Error(reasons[error.name] || `The camera cannot be opened: ${error.message}`);
  }
  video.srcObject = stream;
  await video.play();
  // A frame must have been painted before the first grab, else the snapshot is black.
  await new Promise((resolve) => video.requestVideoFrameCallback(resolve));
  overlay.width = video.videoWidth;
  overlay.height = video.videoHeight;
  stage.style.aspectRatio = `${video.videoWidth} / ${video.videoHeight}`;
  stage.classList.add("on");
}

function closeCamera() {
  for (const track of video.srcObject?.getTracks() ?? []) track.stop();
  video.srcObject = null;
  stage.classList.remove("on");
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
}

// --- live recognition ----------------------------------------------------------------------

const live = { running: false };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

$("live-start").addEventListener("click", async () => {
  if (live.running) {
    stopLive("Stopped.");
    return;
  }
  try {
    await openCamera();
  } catch (error) {
    say("live-status", error.message, "error");
    return;
  }
  live.running = true;
  $("live-start").textContent = "Stop";
  $("live-start").classList.replace("primary", "danger");
  say("live-status", "Recognising…");
  liveLoop();
});

function stopLive(message, kind = "info") {
  live.running = false;
  $("live-start").textContent = "Start camera";
  $("live-start").classList.replace("danger", "primary");
  $("live-result").replaceChildren();
  $("live-rate").textContent = "";
  closeCamera();
  say("live-status", message, kind);
}

// One frame at a time: the next is grabbed only once the previous answer has arrived.
async function liveLoop() {
  const times = [];
  while (live.running) {
    const started = performance.now();
    try {
      const { blob, scale } = await grabFrame(video, LIVE_WIDTH, 0.85);
      const { faces } = await api.identify(blob);
      if (!live.running) break;
      showLive(faces, scale);
      say("live-status", "Recognising…");
    } catch (error) {
      if (!live.running) break;
      if (error.status === 401 || error.status === 403) {
        stopLive(explain(error), "error");
        break;
      }
      fail("live-status", error);
    }
    times.push(performance.now());
    if (times.length > 8) times.shift();
    if (times.length > 1) {
      const perSecond = (1000 * (times.length - 1)) / (times.at(-1) - times[0]);
      $("live-rate").textContent = `${perSecond.toFixed(1)} frames/s · ${Math.round(performance.now() - started)} ms a frame`;
    }
    await sleep(Math.max(0, FRAME_INTERVAL_MS - (performance.now() - started)));
  }
}

function showLive(faces, scale) {
  const context = overlay.getContext("2d");
  context.clearRect(0, 0, overlay.width, overlay.height);
  drawFaces(context, faces, { scale, mirror: true });
  $("live-result").replaceChildren(...nameChips(faces, "No face in view"));
}

// One chip per person in view (strangers share one "unknown" chip), or the `empty` line.
function nameChips(faces, empty) {
  const byName = new Map(faces.map((face) => [face.name, face]));
  if (!byName.size) return [element("li", "muted", empty)];
  return [...byName.values()].map((face) =>
    element("li", face.name === null ? "chip unknown" : "chip known", faceLabel(face)),
  );
}

// --- identify a photo ----------------------------------------------------------------------

$("identify-file").addEventListener("change", async () => {
  const file = $("identify-file").files[0];
  $("identify-file-name").textContent = file ? file.name : "No photo chosen";
  $("identify-result").replaceChildren();
  say("identify-status", "");
  if (file) await showPhoto(file, []);
});

async function showPhoto(file, faces) {
  const canvas = $("identify-canvas");
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    canvas.hidden = true;
    return;
  }
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  drawFaces(context, faces);
  canvas.hidden = false;
}

$("identify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("identify-file").files[0];
  if (!file) {
    say("identify-status", "Choose a photo first.", "error");
    return;
  }
  $("identify-result").replaceChildren();
  await submitting("identify-submit", "identify-status", "Identifying…", async () => {
    const { faces } = await api.identify(file);
    await showPhoto(file, faces);
    const recognised = faces.filter((face) => face.name).length;
    if (faces.length) {
      $("identify-result").replaceChildren(...faces.map(faceItem));
      say("identify-status", `${plural(faces.length, "face")} found, ${recognised} recognised.`, "ok");
    } else {
      $("identify-result").replaceChildren(...nameChips([], "No face found in this photo."));
      say("identify-status", "");
    }
  });
});

function faceItem(face) {
  const item = element("li", face.name ? "face known" : "face unknown");
  item.append(
    element("span", "face-name", faceLabel(face)),
    element("span", "face-detail", `distance ${face.distance.toFixed(3)}`),
  );
  return item;
}

// --- enroll --------------------------------------------------------------------------------

const enrollment = { image: null };

function setEnrollImage(image, label) {
  enrollment.image = image;
  const preview = $("enroll-preview");
  const img = preview.querySelector("img");
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(image);
  preview.querySelector(".preview-label").textContent = label;
  preview.hidden = false;
}

$("enroll-file").addEventListener("change", () => {
  const file = $("enroll-file").files[0];
  if (file) setEnrollImage(file, file.name);
});

$("enroll-snapshot").addEventListener("click", async () => {
  try {
    await openCamera();
    const { blob } = await grabFrame(video);
    setEnrollImage(new File([blob], "snapshot.jpg", { type: "image/jpeg" }), "Webcam snapshot");
    say("enroll-status", "Snapshot taken: check the face is clear, then enroll.");
  } catch (error) {
    say("enroll-status", error.message, "error");
  } finally {
    if (!live.running) closeCamera();
  }
});

$("enroll-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("enroll-name").value.trim();
  if (!name) {
    say("enroll-status", "Type the person's name first.", "error");
    $("enroll-name").focus();
    return;
  }
  if (!enrollment.image) {
    say("enroll-status", "Upload a photo or take a webcam snapshot first.", "error");
    return;
  }
  await submitting("enroll-submit", "enroll-status", "Enrolling…", async () => {
    const result = await api.enroll(name, enrollment.image, $("enroll-largest").checked);
    await refreshPeople();
    say("enroll-status", `Enrolled ${result.name}.`, "ok");
  });
});

// --- start --------------------------------------------------------------------------------

showKeyState();
refreshHealth();
refreshPeople();
setInterval(() => document.hidden || refreshHealth(), HEALTH_INTERVAL_MS);
document.addEventListener("visibilitychange", () => document.hidden || refreshHealth());
