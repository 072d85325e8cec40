// The tripletface REST API as the page uses it; errors arrive as ApiError with the HTTP status.

const KEY_STORAGE = "tripletface.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The key lives in sessionStorage: typed once, forgotten when the tab closes.
export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

async function request(method, path, body) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    // Relative paths, so that the page also works behind a reverse proxy's prefix.
    response = await fetch(path, { method, headers, body });
  } catch {
    throw new ApiError(0, "The service cannot be reached: is tripletface serve still running?");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data && (data.error || data.detail);
    throw new ApiError(response.status, typeof message === "string" ? message : text.trim() || response.statusText);
  }
  return data;
}

function imageForm(image, fields = {}) {
  const form = new FormData();
  form.append("image", image, image.name || "photo.jpg");
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  return form;
}

const personPath = (name) => `v1/people/${encodeURIComponent(name)}`;

export const api = {
  health: () => request("GET", "healthz"),
  people: () => request("GET", "v1/people"),
  enroll: (name, image, largest) =>
    request("POST", `${personPath(name)}/faces`, imageForm(image, largest ? { largest: "true" } : {})),
  identify: (image) => request("POST", "v1/identify", imageForm(image)),
  remove: (name) => request("DELETE", personPath(name)),
};
