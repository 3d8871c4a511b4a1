// Follows TensorBoard's theme. TensorBoard does not theme plugin iframes, but the
// iframe is same-origin, so the host page's <body class="dark-mode"> can be watched.
// Opened on its own, the page follows the browser's preference instead.

function hostBody() {
  try {
    if (window.parent !== window && window.parent.document.body) return window.parent.document.body;
  } catch {
    // cross-origin host: fall back to the browser's preference
  }
  return null;
}

export function followHostTheme() {
  const body = hostBody();
  const query = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  const apply = () => {
    const dark = body ? body.classList.contains("dark-mode") : Boolean(query && query.matches);
    document.documentElement.classList.toggle("dark", dark);
    document.documentElement.style.colorScheme = dark ? "dark" : "light";
  };
  apply();
  if (body) {
    new MutationObserver(apply).observe(body, { attributes: true, attributeFilter: ["class"] });
  } else if (query) {
    query.addEventListener("change", apply);
  }
}
