// Boxes and names drawn over a photo or a video frame, and frames grabbed as JPEG for the API.

const KNOWN = "#16a34a";
const UNKNOWN = "#f59e0b";

export const faceLabel = (face) => face.name ?? "unknown";

// faces: [{box: [left, top, right, bottom], name, distance}] in the coordinates of an image
// `scale` times smaller than the canvas; `mirror` flips x as in a selfie view, text stays readable.
export function drawFaces(context, faces, { scale = 1, mirror = false } = {}) {
  const width = context.canvas.width;
  const unit = Math.max(2, Math.round(Math.max(width, context.canvas.height) / 320));
  context.lineWidth = unit;
  context.font = `600 ${7 * unit}px system-ui, sans-serif`;
  context.textBaseline = "middle";
  for (const face of faces) {
    let [left, top, right, bottom] = face.box.map((value) => value * scale);
    if (mirror) [left, right] = [width - right, width - left];
    const colour = face.name ? KNOWN : UNKNOWN;
    context.strokeStyle = colour;
    roundedRect(context, left, top, right - left, bottom - top, 2 * unit);
    context.stroke();
    const text = face.name ? `${face.name}  ${face.distance.toFixed(2)}` : "unknown";
    const pad = 3 * unit;
    const height = 11 * unit;
    const textWidth = context.measureText(text).width + 2 * pad;
    const y = top - height - unit >= 0 ? top - height - unit : bottom + unit;
    context.fillStyle = colour;
    roundedRect(context, left - unit / 2, y, textWidth, height, 2 * unit);
    context.fill();
    context.fillStyle = "#fff";
    context.fillText(text, left - unit / 2 + pad, y + height / 2);
  }
}

function roundedRect(context, x, y, w, h, r) {
  context.beginPath();
  context.roundRect(x, y, w, h, Math.min(r, w / 2, h / 2));
}

// A JPEG of what the video shows now, at most `maxWidth` wide; resolves to {blob, scale} where
// scale turns the grabbed frame's coordinates into the video's.
export function grabFrame(video, maxWidth = Infinity, quality = 0.9) {
  const scale = Math.max(1, video.videoWidth / maxWidth);
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(video.videoWidth / scale);
  canvas.height = Math.round(video.videoHeight / scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve, reject) =>
    canvas.toBlob(
      (blob) => (blob ? resolve({ blob, scale }) : reject(new Error("the video frame could not be encoded"))),
      "image/jpeg",
      quality,
    ),
  );
}
